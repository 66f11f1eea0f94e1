package erldist_test

import (
	"context"
	"fmt"

	"github.com/macula-io/cluster/erldist"
)

// Two Go nodes on an embedded EPMD: a registered name answers gen_server:call, here made by
// hand as Erlang's gen:call does ({'$gen_call', {Pid, Ref}, Request}, reply {Ref, Reply}).
func Example() {
	epmd, err := erldist.ListenEPMD("127.0.0.1:0", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer epmd.Close()
	ctx := context.Background()
	cfg := erldist.Config{Cookie: "secret", EPMDPort: epmd.Port()}
	cfg.Name = "server@127.0.0.1"
	server, err := erldist.Start(ctx, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer server.Close()
	cfg.Name = "client@127.0.0.1"
	cfg.OnNodeUp = func(node string) { fmt.Println("nodeup", node) }
	client, err := erldist.Start(ctx, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	srv, _ := server.Register("greeter")
	go func() {
		for m := range srv.C() {
			if m.Call != nil {
				srv.Reply(ctx, m, erldist.Tuple{erldist.Atom("hello"), m.Term})
			}
		}
	}()
	box, _ := client.Register("")
	ref := client.MakeRef()
	call := erldist.Tuple{erldist.Atom("$gen_call"), erldist.Tuple{box.Pid(), ref}, []byte("world")}
	if err := box.Send(ctx, erldist.Name{Node: "server@127.0.0.1", Name: "greeter"}, call); err != nil {
		fmt.Println(err)
		return
	}
	reply := (<-box.C()).Term.(erldist.Tuple)
	fmt.Printf("%s %s\n", reply[1].(erldist.Tuple)[0], reply[1].(erldist.Tuple)[1])
	// Output:
	// nodeup server@127.0.0.1
	// hello world
}

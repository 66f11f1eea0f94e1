package erldist_test

import (
	"context"
	"fmt"

	"github.com/macula-io/cluster/erldist"
)

// Two Go nodes on an embedded EPMD: a registered name answers gen_server:call (Node.Call makes
// the same call an Erlang gen_server:call makes, so Erlang nodes can be the callee or caller).
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
	reply, err := client.Call(ctx, erldist.Name{Node: "server@127.0.0.1", Name: "greeter"}, []byte("world"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s %s\n", reply.(erldist.Tuple)[0], reply.(erldist.Tuple)[1])
	// Output:
	// nodeup server@127.0.0.1
	// hello world
}

package mesh_test

import (
	"context"
	"fmt"

	"github.com/macula-io/cluster/mesh"
)

func Example() {
	ctx := context.Background()
	up := make(chan mesh.Event, 1)
	got := make(chan string, 1)
	a, err := mesh.Start(ctx, mesh.Config{
		Name:   "a@127.0.0.1",
		Cookie: "example-cookie", // in real use: mesh.ResolveCookie(nil, "")
		Listen: "127.0.0.1:0",
		OnEvent: func(e mesh.Event) {
			if e.Kind == mesh.NodeUp {
				up <- e
			}
		},
	})
	if err != nil {
		panic(err)
	}
	defer a.Close()
	b, err := mesh.Start(ctx, mesh.Config{
		Name:      "b@127.0.0.1",
		Cookie:    "example-cookie",
		Listen:    "127.0.0.1:0",
		OnMessage: func(from string, payload []byte) { got <- from + " says " + string(payload) },
	})
	if err != nil {
		panic(err)
	}
	defer b.Close()

	a.Connect(b.Name(), b.Addr())
	e := <-up
	fmt.Println(e.Kind, e.Node)
	if err := a.Send(ctx, e.Node, []byte("hello")); err != nil {
		panic(err)
	}
	fmt.Println(<-got)
	// Output:
	// nodeup b@127.0.0.1
	// a@127.0.0.1 says hello
}

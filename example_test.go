package cluster_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"slices"
	"time"

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/gossip"
	"github.com/macula-io/cluster/mesh"
)

// Example starts a three-node cluster in one process on the loopback
// interface ("lo" on Linux; "lo0" on macOS) and prints the events node a
// sees: each peer discovered by gossip, then its link up.
func Example() {
	port := examplePort() // a free UDP port, so the example never meets a real cluster
	events := make(chan cluster.Event, 32)
	var nodes []*cluster.Cluster
	for _, name := range []string{"a@127.0.0.1", "b@127.0.0.1", "c@127.0.0.1"} {
		cfg := cluster.Config{
			Strategy: cluster.StrategyGossip,
			Gossip: gossip.Config{
				Interfaces: []string{"lo"},
				Port:       port,
				Secrets:    []string{"example-secret"},
			},
			Mesh: mesh.Config{Name: name, Cookie: "example-cookie", Listen: "127.0.0.1:0"},
		}
		if name == "a@127.0.0.1" {
			cfg.OnEvent = func(e cluster.Event) { events <- e }
		}
		c, err := cluster.Start(context.Background(), cfg)
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		nodes = append(nodes, c)
	}

	// Links may come up before the heartbeat that announces a peer (the
	// mesh is transitive), so collect until a has both kinds for both peers.
	seen := map[string][]string{}
	timeout := time.After(10 * time.Second)
	for len(seen["discovered"]) < 2 || len(seen["nodeup"]) < 2 {
		select {
		case e := <-events:
			seen[e.Kind.String()] = append(seen[e.Kind.String()], e.Node)
		case <-timeout:
			log.Fatal("no full mesh within 10s")
		}
	}
	for _, kind := range []string{"discovered", "nodeup"} {
		slices.Sort(seen[kind])
		fmt.Println(kind, seen[kind])
	}
	fmt.Println("a is connected to", len(nodes[0].Connected()), "peers")
	// Output:
	// discovered [b@127.0.0.1 c@127.0.0.1]
	// nodeup [b@127.0.0.1 c@127.0.0.1]
	// a is connected to 2 peers
}

func examplePort() int {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

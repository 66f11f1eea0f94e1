package mdns_test

import (
	"fmt"
	"net"
	"time"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/mdns"
)

// Two nodes find each other. Deployments leave Interfaces and Port zero
// (every multicast interface, port 5353); this example stays on the
// loopback interface and a private port.
func Example() {
	c, _ := net.ListenPacket("udp4", "0.0.0.0:0")
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	cfg := mdns.Config{Interfaces: []string{"lo"}, Port: port}

	a, b := mdns.NewStrategy(cfg), mdns.NewStrategy(cfg)
	selfA, _ := discovery.ParseNode("a@127.0.0.1:9101")
	selfB, _ := discovery.ParseNode("b@127.0.0.1:9102")
	found := make(chan []discovery.Peer, 16)
	if err := a.Start(selfA, func(p []discovery.Peer) { found <- p }); err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()
	if err := b.Start(selfB, nil); err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()

	select {
	case peers := <-found:
		for _, p := range peers {
			fmt.Println(p.Node, p.Addr)
		}
	case <-time.After(10 * time.Second):
		fmt.Println("timeout")
	}
	// Output: b@127.0.0.1:9102 127.0.0.1:9102
}

package mdns_test

import (
	"context"
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
	found := make(chan discovery.Peer, 16)
	if err := a.Start(context.Background(), selfA, sink{found}); err != nil {
		fmt.Println(err)
		return
	}
	defer a.Close()
	if err := b.Start(context.Background(), selfB, sink{}); err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()

	select {
	case p := <-found:
		fmt.Println("found", p.Name, "at", p.Addr)
	case <-time.After(10 * time.Second):
		fmt.Println("timeout")
	}
	// Output: found b@127.0.0.1 at 127.0.0.1:9102
}

// sink is a discovery.Sink. Found and Gone must not block: they are called
// from the strategy's own goroutine.
type sink struct{ found chan<- discovery.Peer }

func (s sink) Found(p discovery.Peer) {
	select {
	case s.found <- p: // a nil channel is never ready: dropped
	default:
	}
}

func (s sink) Gone(discovery.Peer) {}

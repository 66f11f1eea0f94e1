package mcast_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/netip"
	"time"

	"github.com/macula-io/cluster/internal/mcast"
)

// Two sockets share a port on the loopback interface: one sends to the
// group, both receive.
func ExampleListen() {
	ctx := context.Background()
	group := netip.MustParseAddr("239.255.77.9")
	a, err := mcast.Listen(ctx, mcast.Config{Group: group}) // the kernel picks the port
	if err != nil {
		log.Fatal(err)
	}
	defer a.Close()
	b, err := mcast.Listen(ctx, mcast.Config{Group: group, Port: a.Port()})
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range []*mcast.Conn{a, b} {
		if err := c.Join(lo); err != nil {
			log.Fatal(err)
		}
	}
	// Out of lo only, from 127.0.0.1.
	if err := a.WriteTo([]byte("hello"), lo.Index, netip.MustParseAddr("127.0.0.1"), a.Group()); err != nil {
		log.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	p, err := b.Read(buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%q to %v from %v, on lo: %v\n", buf[:p.N], p.Dst, p.Src.Addr(), p.IfIndex == lo.Index)
	// Output: "hello" to 239.255.77.9 from 127.0.0.1, on lo: true
}

// A loop that joins interfaces as they come and go.
func ExampleWatch() {
	done := make(chan struct{}) // closed to stop
	w := mcast.Watch(context.Background())
	defer w.Close()
	for {
		select {
		case <-done:
			return
		case <-w.C: // at once, then after each change
			use, missing, err := mcast.Interfaces(mcast.Want{IPv4: true})
			fmt.Println(len(use), missing, err) // join the new ones, leave the gone ones
		}
	}
}

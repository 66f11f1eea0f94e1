package gossip_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/gossip"
)

func ExampleAppendHeartbeat() {
	pkt := gossip.AppendHeartbeat(nil, "a@127.0.0.1", gossip.NewKeyring("s3cret"))
	fmt.Printf("%s\n", pkt)
	node, err := gossip.ParseHeartbeat(pkt, gossip.NewKeyring("s3cret"))
	fmt.Println(node, err)
	_, err = gossip.ParseHeartbeat(pkt, gossip.NewKeyring("other"))
	fmt.Println(gossip.Reason(err))
	// Output:
	// MACULA_GOSSIP:a@127.0.0.1|5E79D0AE046B12478AE741C4F4CBE5356FC53A65E7669A53CDD28C91D5C9F178
	// a@127.0.0.1 <nil>
	// bad_signature
}

// Two nodes on one host find each other over lo.
func ExampleStart() {
	// A free port; real deployments use the default 45892.
	c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	port := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()

	found := make(chan discovery.Peer, 10)
	cfg := gossip.Config{
		Port:       port,
		Interfaces: []string{"lo"}, // empty = every multicast interface
		Secrets:    []string{"my_cluster_secret"},
		Interval:   100 * time.Millisecond,
	}
	a := cfg
	a.Node = "a@127.0.0.1:9100"
	a.Sink = sink{found: found}
	ga, err := gossip.Start(context.Background(), a)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ga.Close()

	b := cfg
	b.Node = "b@127.0.0.1:9101"
	gb, err := gossip.Start(context.Background(), b)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer gb.Close()

	p := <-found
	fmt.Println("found", p.Name, p.Addr)
	// Output: found b@127.0.0.1 127.0.0.1:9101
}

// sink is a discovery.Sink; Found and Gone must not block (gossip calls
// them from its table goroutine).
type sink struct{ found chan<- discovery.Peer }

func (s sink) Found(p discovery.Peer) {
	select {
	case s.found <- p:
	default:
	}
}

func (s sink) Gone(discovery.Peer) {}

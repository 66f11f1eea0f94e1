package dnsdisc_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/dnsdisc"
)

// A headless service answers with one A record per pod; every address is a
// peer at the mesh port, reported by address only (the mesh learns each
// node's name in its handshake). Our own address is left out.
func Example() {
	// A stand-in for the cluster DNS server.
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		if req.Question[0].Qtype == dns.TypeA {
			for _, ip := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
				rr, _ := dns.NewRR("macula-headless.default.svc.cluster.local. 5 IN A " + ip)
				m.Answer = append(m.Answer, rr)
			}
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	defer srv.Shutdown()

	s := dnsdisc.NewStrategy(dnsdisc.Config{
		Name:   "macula-headless.default.svc.cluster.local",
		Server: pc.LocalAddr().String(), // "" = the system resolver
	})
	self, _ := discovery.ParseNode("macula@127.0.0.1:9100")
	found := make(chan discovery.Peer, 16)
	if err := s.Start(context.Background(), self, sink{found}); err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	for range 2 {
		select {
		case p := <-found:
			fmt.Printf("found %q at %s\n", p.Name, p.Addr)
		case <-time.After(10 * time.Second):
			fmt.Println("timeout")
			return
		}
	}
	fmt.Println(s.Peers())
	// Output:
	// found "" at 127.0.0.2:9100
	// found "" at 127.0.0.3:9100
	// [127.0.0.2:9100 127.0.0.3:9100]
}

// sink is a discovery.Sink. Found and Gone must not block: they are called
// from the strategy's own goroutine.
type sink struct{ found chan<- discovery.Peer }

func (s sink) Found(p discovery.Peer) {
	select {
	case s.found <- p:
	default:
	}
}

func (s sink) Gone(discovery.Peer) {}

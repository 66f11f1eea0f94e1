package cluster_test

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/dnsdisc"
	"github.com/macula-io/cluster/mdns"
	"github.com/macula-io/cluster/mesh"
)

// zone is a real DNS server on 127.0.0.1 answering A records for one name
// from a mutable list, and SRV records for one service name pointing at
// targets added with addSRV (each target an A record and a port).
type zone struct {
	mu      sync.Mutex
	name    string
	ips     []string
	srvName string
	targets map[string]string // SRV target name -> IP
	ports   map[string]int    // SRV target name -> port
	srv     *dns.Server
}

func startZone(t *testing.T, name string, ips ...string) *zone {
	t.Helper()
	z := &zone{name: dns.Fqdn(name), ips: ips, targets: map[string]string{}, ports: map[string]int{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	z.srv = &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			z.mu.Lock()
			for _, q := range r.Question {
				switch {
				case q.Qtype == dns.TypeA && q.Name == z.name:
					for _, ip := range z.ips {
						m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.ParseIP(ip)})
					}
				case q.Qtype == dns.TypeSRV && q.Name == z.srvName:
					for target, port := range z.ports {
						m.Answer = append(m.Answer, &dns.SRV{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeSRV,
							Class: dns.ClassINET, Ttl: 1}, Port: uint16(port), Target: target})
					}
				case q.Qtype == dns.TypeA && z.targets[q.Name] != "":
					m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA,
						Class: dns.ClassINET, Ttl: 1}, A: net.ParseIP(z.targets[q.Name])})
				}
			}
			z.mu.Unlock()
			w.WriteMsg(m)
		})}
	go z.srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { z.srv.Shutdown() })
	return z
}

func (z *zone) set(ips ...string) {
	z.mu.Lock()
	z.ips = ips
	z.mu.Unlock()
}

// addSRV makes target (at ip, port) one answer of the SRV name srvName.
func (z *zone) addSRV(srvName, target, ip string, port int) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.srvName = dns.Fqdn(srvName)
	z.targets[dns.Fqdn(target)] = ip
	z.ports[dns.Fqdn(target)] = port
}

func (z *zone) addr() string { return z.srv.PacketConn.LocalAddr().String() }

// freeTCPPortOn finds a TCP port free on every given loopback address.
func freeTCPPortOn(t *testing.T, ips ...string) int {
	t.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		ln, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		ok := true
		for _, ip := range ips {
			l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no common free port")
	return 0
}

// TestDNSFullMesh: three nodes on 127.0.0.2-4, one mesh port, found through
// the A records of a real DNS server; a node whose record disappears is
// Lost but keeps its live link; a node that dies is reported down.
func TestDNSFullMesh(t *testing.T) {
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	port := freeTCPPortOn(t, ips...)
	z := startZone(t, "macula-headless.test", ips...)
	var ns []*node
	for _, ip := range ips {
		ns = append(ns, start(t, cluster.Config{
			Strategy: cluster.StrategyDNS,
			DNS:      dnsdisc.Config{Name: "macula-headless.test", Port: port, Server: z.addr(), Interval: 100 * time.Millisecond},
			Mesh: mesh.Config{Name: "macula@" + ip, Cookie: "c", Listen: fmt.Sprintf("%s:%d", ip, port),
				LinkTimeout: time.Second, NoTransitive: true},
		}))
	}
	waitFullMesh(t, ns, wait)
	for _, n := range ns {
		checkLinkSequence(t, n.c.Self().Node, n.rec.all())
		for _, e := range n.rec.all() {
			if e.Kind == cluster.Discovered && e.Source != "dns" {
				t.Errorf("%s: source %q, want dns", e, e.Source)
			}
		}
	}
	// The record of .4 goes away: Lost everywhere, the link stays.
	z.set(ips[:2]...)
	for _, n := range ns[:2] {
		n.rec.waitFor(t, wait, "lost .4", func(evs []cluster.Event) bool { return !discovered(evs)["macula@127.0.0.4"] })
		if !up(n.rec.all())["macula@127.0.0.4"] {
			t.Fatalf("%s dropped the live link of a node that left DNS only", n.c.Self().Node)
		}
	}
	// Now it dies: NodeDown everywhere.
	ns[2].c.Close()
	for _, n := range ns[:2] {
		n.rec.waitFor(t, wait, "nodedown .4", func(evs []cluster.Event) bool { return !up(evs)["macula@127.0.0.4"] })
	}
}

func TestMDNSFullMesh(t *testing.T) {
	port := freeUDPPort(t)
	var ns []*node
	for _, name := range []string{"m1@127.0.0.1", "m2@127.0.0.1", "m3@127.0.0.1"} {
		ns = append(ns, start(t, cluster.Config{
			Strategy: cluster.StrategyMDNS,
			MDNS:     mdns.Config{Interfaces: []string{"lo"}, Port: port, TTL: 2 * time.Second, DisableIPv6: true},
			Mesh:     mesh.Config{Name: name, Cookie: "c", Listen: "127.0.0.1:0", LinkTimeout: time.Second, NoTransitive: true},
		}))
	}
	waitFullMesh(t, ns, wait)
	for _, n := range ns {
		n.rec.waitFor(t, wait, "all discovered", func(evs []cluster.Event) bool { return len(discovered(evs)) == 2 })
		checkLinkSequence(t, n.c.Self().Node, n.rec.all())
	}
	ns[2].c.Close() // goodbye (TTL 0) and mesh leave
	for _, n := range ns[:2] {
		n.rec.waitFor(t, wait, "m3 lost and down", func(evs []cluster.Event) bool {
			return !discovered(evs)["m3@127.0.0.1"] && !up(evs)["m3@127.0.0.1"]
		})
	}
}

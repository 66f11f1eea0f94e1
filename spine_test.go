package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/dnsdisc"
	"github.com/macula-io/cluster/gossip"
	"github.com/macula-io/cluster/mdns"
	"github.com/macula-io/cluster/mesh"
	"github.com/macula-io/cluster/static"
)

// TestDNSArbitraryNames: DNS gives addresses, not names. Three nodes named
// as their operator likes (not "<basename>@<IP>") form a full mesh from A
// records and from SRV records, and each is discovered under its real name.
func TestDNSArbitraryNames(t *testing.T) {
	names := []string{"n1", "web-b", "zeta3"}
	ips := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	for _, mode := range []string{"a", "srv"} {
		t.Run(mode, func(t *testing.T) {
			var ns []*node
			if mode == "a" {
				port := freeTCPPortOn(t, ips...)
				z := startZone(t, "headless.test", ips...)
				for i, ip := range ips {
					ns = append(ns, start(t, cluster.Config{
						Strategy: cluster.StrategyDNS,
						DNS:      dnsdisc.Config{Name: "headless.test", Port: port, Server: z.addr(), Interval: 100 * time.Millisecond},
						Mesh: mesh.Config{Name: names[i] + "@" + ip, Cookie: "c", Listen: fmt.Sprintf("%s:%d", ip, port),
							NoTransitive: true},
					}))
				}
			} else {
				z := startZone(t, "unused.test")
				for i, ip := range ips {
					n := start(t, cluster.Config{
						Strategy: cluster.StrategyDNS,
						DNS:      dnsdisc.Config{Name: "_macula._tcp.headless.test", Server: z.addr(), Interval: 100 * time.Millisecond},
						Mesh:     mesh.Config{Name: names[i] + "@" + ip, Cookie: "c", Listen: ip + ":0", NoTransitive: true},
					})
					_, port, _ := net.SplitHostPort(n.c.Self().Addr)
					var p int
					fmt.Sscan(port, &p)
					z.addSRV("_macula._tcp.headless.test", names[i]+".headless.test", ip, p)
					ns = append(ns, n)
				}
			}
			waitFullMesh(t, ns, wait)
			for _, n := range ns {
				n.rec.waitFor(t, wait, "all discovered by name", func(evs []cluster.Event) bool {
					return len(discovered(evs)) == len(ns)-1
				})
				evs := n.rec.all()
				checkLinkSequence(t, n.c.Self().Node, evs)
				for _, o := range ns {
					if o == n {
						continue
					}
					if got := count(evs, cluster.Discovered, o.c.Self().Node); got != 1 {
						t.Errorf("%s: %d Discovered for %s, want 1:\n%s", n.c.Self().Node, got, o.c.Self().Node, dump(evs))
					}
				}
			}
		})
	}
}

// TestErrClosedEverywhere: after Close every call that can fail returns an
// error matching cluster.ErrClosed, whichever package produced it.
func TestErrClosedEverywhere(t *testing.T) {
	for _, e := range []error{gossip.ErrClosed, mesh.ErrClosed, static.ErrClosed, dnsdisc.ErrClosed, mdns.ErrClosed} {
		if !errors.Is(e, cluster.ErrClosed) {
			t.Errorf("%v is not cluster.ErrClosed", e)
		}
	}
	n := start(t, cluster.Config{Strategy: cluster.StrategyStatic,
		Mesh: mesh.Config{Name: "closed@127.0.0.1", Cookie: "c", Listen: "127.0.0.1:0"}})
	if err := n.c.Close(); err != nil {
		t.Fatal(err)
	}
	checks := map[string]error{
		"Send":       n.c.Send(context.Background(), "x@127.0.0.1", []byte("hi")),
		"AddNode":    n.c.AddNode("x@127.0.0.1:1"),
		"RemoveNode": n.c.RemoveNode("x@127.0.0.1:1"),
		"Mesh.Send":  n.c.Mesh().Send(context.Background(), "x@127.0.0.1", nil),
		"Strategy.Start": n.c.Strategy().Start(context.Background(), discoveryPeer("closed@127.0.0.1", "127.0.0.1:1"),
			nopSink{}),
	}
	for call, err := range checks {
		if !errors.Is(err, cluster.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", call, err)
		}
	}
}

// TestOnEventPanicRecovered: a panicking OnEvent is recovered, counted and
// logged with its stack; later events still arrive, in order.
func TestOnEventPanicRecovered(t *testing.T) {
	var logs strings.Builder
	var logMu sync.Mutex
	rec := newRecorder()
	cfg := cluster.Config{Strategy: cluster.StrategyStatic,
		Mesh:   mesh.Config{Name: "p1@127.0.0.1", Cookie: "c", Listen: "127.0.0.1:0"},
		Logger: newLockedLogger(&logs, &logMu),
		OnEvent: func(e cluster.Event) {
			rec.add(e)
			if e.Kind == cluster.Discovered {
				panic("user bug in OnEvent")
			}
		}}
	c, err := cluster.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	other := start(t, cluster.Config{Strategy: cluster.StrategyStatic,
		Mesh: mesh.Config{Name: "p2@127.0.0.1", Cookie: "c", Listen: "127.0.0.1:0"}})
	if err := c.AddNode(other.c.Self().Addr); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, wait, "nodeup after a panicking discovered", func(evs []cluster.Event) bool {
		return up(evs)["p2@127.0.0.1"]
	})
	if got := c.Stats().EventPanics; got != 1 {
		t.Errorf("EventPanics = %d, want 1", got)
	}
	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	if !strings.Contains(out, "OnEvent panicked") || !strings.Contains(out, "user bug in OnEvent") || !strings.Contains(out, "goroutine") {
		t.Errorf("log lacks the panic and its stack:\n%s", out)
	}
}

// TestStatsOneShape: Stats carries the strategy's counters in one shape,
// whatever the strategy, with every rejection reason present at 0.
func TestStatsOneShape(t *testing.T) {
	g := start(t, gossipCfg("st@127.0.0.1", freeUDPPort(t), "s"))
	st := g.c.Stats()
	if st.Strategy != "gossip" {
		t.Errorf("Strategy %q", st.Strategy)
	}
	for _, r := range []string{"unsigned", "bad_signature", "table_full", "malformed"} {
		if _, ok := st.Discovery.Rejected[r]; !ok {
			t.Errorf("gossip Rejected lacks %q: %v", r, st.Discovery.Rejected)
		}
	}
	if _, ok := st.Discovery.Counters["heartbeats_sent"]; !ok {
		t.Errorf("gossip Counters lack heartbeats_sent: %v", st.Discovery.Counters)
	}
	if _, ok := st.Mesh.HandshakeFailures["bad_cookie"]; !ok {
		t.Errorf("mesh HandshakeFailures lack bad_cookie: %v", st.Mesh.HandshakeFailures)
	}
	s := start(t, cluster.Config{Nodes: []string{"x@127.0.0.1:1"},
		Mesh: mesh.Config{Name: "st2@127.0.0.1", Cookie: "c", Listen: "127.0.0.1:0"}})
	if st := s.c.Stats(); st.Strategy != "static" || st.Discovery.Counters == nil || st.Discovery.Rejected == nil {
		t.Errorf("static Stats %+v", st.Discovery)
	}
}

// TestGossipFloodLinear: 4,096 distinct unsigned heartbeats (the table
// bound) to a node with the default, unsigned config cost bounded
// goroutines (a fixed number of dials in flight, not one dialer per fake
// peer) and every fake is discovered exactly once. The CPU cost is logged;
// `go test -run GossipFloodLinear -v` without -race gives the README figure.
func TestGossipFloodLinear(t *testing.T) {
	port := freeUDPPort(t)
	cfg := cluster.Config{Strategy: cluster.StrategyGossip, EventQueue: -1,
		Gossip: gossip.Config{Interfaces: []string{"lo"}, Port: port, Interval: time.Second, Expiry: 10 * time.Minute},
		Mesh:   mesh.Config{Name: "target@127.0.0.1", Cookie: "c", Listen: "127.0.0.1:0"}}
	var mu sync.Mutex
	found := map[string]int{}
	done := make(chan struct{})
	const fakes = 4096
	cfg.OnEvent = func(e cluster.Event) {
		if e.Kind != cluster.Discovered {
			return
		}
		mu.Lock()
		found[e.Node]++
		if len(found) == fakes {
			close(done)
		}
		mu.Unlock()
	}
	c, err := cluster.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A closed port: every fake dial is refused at once, the worst case for
	// dial churn.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	deadPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	base := runtime.NumGoroutine()
	cpu0 := processCPU()
	conn, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(230, 1, 1, 251), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := pinMulticastToLoopback(conn); err != nil {
		t.Fatal(err)
	}
	peak := base
	start := time.Now()
	for i := 0; i < fakes; i++ {
		pkt := gossip.AppendHeartbeat(nil, fmt.Sprintf("fake%d@127.0.0.1:%d", i, deadPort), nil)
		if _, err := conn.Write(pkt); err != nil {
			t.Fatal(err)
		}
		if i%64 == 63 {
			// Flow control: a burst beyond the socket buffer is dropped by
			// the kernel, which is not what this test measures. Wait until
			// the node has read what was sent.
			peak = max(peak, runtime.NumGoroutine())
			for c.Stats().Discovery.Counters["heartbeats_received"] < uint64(i+1)-64 {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	deadline := time.After(60 * time.Second)
	ticker := time.NewTicker(20 * time.Millisecond)
	defer ticker.Stop()
wait:
	for {
		select {
		case <-done:
			break wait
		case <-ticker.C:
			peak = max(peak, runtime.NumGoroutine())
		case <-deadline:
			mu.Lock()
			n := len(found)
			mu.Unlock()
			t.Fatalf("only %d of %d fakes discovered in 60s (gossip stats %+v)", n, fakes, c.Stats().Discovery)
		}
	}
	elapsed := time.Since(start)
	// Let dialling run for a moment, still bounded.
	for range 10 {
		<-ticker.C
		peak = max(peak, runtime.NumGoroutine())
	}
	cpu := processCPU() - cpu0
	t.Logf("%d fakes: all discovered after %v; process CPU %v; goroutines %d before, peak %d; dials %d",
		fakes, elapsed.Round(time.Millisecond), cpu.Round(time.Millisecond), base, peak, c.Stats().Mesh.Dials)
	mu.Lock()
	for name, n := range found {
		if n != 1 {
			t.Errorf("%s discovered %d times", name, n)
		}
	}
	mu.Unlock()
	if peak-base > 200 {
		t.Errorf("goroutines grew by %d under the flood, want <= 200 (bounded dials)", peak-base)
	}
}

func discoveryPeer(name, addr string) discovery.Peer { return discovery.Peer{Name: name, Addr: addr} }

type nopSink struct{}

func (nopSink) Found(discovery.Peer) {}
func (nopSink) Gone(discovery.Peer)  {}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func newLockedLogger(w io.Writer, mu *sync.Mutex) *slog.Logger {
	return slog.New(slog.NewTextHandler(lockedWriter{mu, w}, nil))
}

// pinMulticastToLoopback makes conn send its multicast on lo only.
func pinMulticastToLoopback(conn *net.UDPConn) error {
	lo, err := loopbackInterface()
	if err != nil {
		return err
	}
	p := ipv4.NewPacketConn(conn)
	if err := p.SetMulticastInterface(lo); err != nil {
		return err
	}
	if err := p.SetMulticastTTL(0); err != nil {
		return err
	}
	return p.SetMulticastLoopback(true)
}

func loopbackInterface() (*net.Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for i := range ifs {
		if ifs[i].Flags&net.FlagLoopback != 0 {
			return &ifs[i], nil
		}
	}
	return nil, errors.New("no loopback interface")
}

// TestSameAddressNewNameAtFacade: a static entry by address; the node
// there is replaced by a node of another name on the same address (a pod
// replaced on the same IP). The facade reports the old name down and lost,
// then the new name discovered and up, each once, in that order.
func TestSameAddressNewNameAtFacade(t *testing.T) {
	a := start(t, cluster.Config{Strategy: cluster.StrategyStatic,
		Mesh: mesh.Config{Name: "obs@127.0.0.1", Cookie: "c", Listen: "127.0.0.1:0"}})
	b1, err := cluster.Start(context.Background(), cluster.Config{Strategy: cluster.StrategyStatic,
		Mesh: mesh.Config{Name: "old@127.0.0.1", Cookie: "c", Listen: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	addr := b1.Self().Addr
	if err := a.c.AddNode(addr); err != nil {
		t.Fatal(err)
	}
	a.rec.waitFor(t, wait, "old up", func(evs []cluster.Event) bool { return up(evs)["old@127.0.0.1"] })
	b1.Close()
	var b2 *cluster.Cluster
	deadline := time.Now().Add(wait)
	for b2 == nil { // the port is free once b1 has closed its listener
		b2, err = cluster.Start(context.Background(), cluster.Config{Strategy: cluster.StrategyStatic,
			Mesh: mesh.Config{Name: "new@127.0.0.1", Cookie: "c", Listen: addr}})
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	defer b2.Close()
	a.rec.waitFor(t, wait, "new up", func(evs []cluster.Event) bool { return up(evs)["new@127.0.0.1"] })
	var seq []string
	for _, e := range a.rec.all() {
		seq = append(seq, e.Kind.String()+" "+e.Node)
	}
	want := []string{"discovered old@127.0.0.1", "nodeup old@127.0.0.1", "nodedown old@127.0.0.1",
		"lost old@127.0.0.1", "discovered new@127.0.0.1", "nodeup new@127.0.0.1"}
	if strings.Join(seq, ", ") != strings.Join(want, ", ") {
		t.Fatalf("events:\n  %s\nwant\n  %s", strings.Join(seq, "\n  "), strings.Join(want, "\n  "))
	}
}

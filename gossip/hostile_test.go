package gossip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// Attacks on the discovered table, each with its pass condition (README,
// "Security model"). Everything is sent on lo only.

// TestForeignHostNotDialable: a heartbeat naming a host that is not its
// source (victim@127.0.0.77 sent from 127.0.0.1) is discovered but not
// dialable, counted and warned about; the node's own host and the explicit
// opt-out stay dialable.
func TestForeignHostNotDialable(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	a := startNode(t, port, "a", func(c *Config) { c.Expiry = time.Minute })
	b := startNode(t, port, "b", func(c *Config) { c.Expiry = time.Minute; c.AcceptForeignHosts = true })
	s := newRawSender(t, port)
	// Heartbeats repeat (a name is decided on the heartbeat after its
	// lookup, which the test resolver fails at once).
	eventually(t, "all four", func() bool {
		s.send(t, []byte("MACULA_GOSSIP:victim@127.0.0.77:9"))
		s.send(t, []byte("MACULA_GOSSIP:named@example.invalid:9"))
		s.send(t, []byte("MACULA_GOSSIP:local@127.0.0.1:9"))
		s.send(t, []byte("MACULA_GOSSIP:lh@localhost:9"))
		time.Sleep(20 * time.Millisecond)
		return a.Stats().Discovered == 5 && b.Stats().Discovered == 5 // the four and the other node
	})
	addrOf := func(n *node, node string) string {
		for _, e := range n.Peers() {
			if e.Node == node {
				return e.Addr
			}
		}
		return "missing"
	}
	for node, want := range map[string]string{"victim@127.0.0.77:9": "", "named@example.invalid:9": "",
		"local@127.0.0.1:9": "127.0.0.1:9", "lh@localhost:9": "localhost:9"} {
		if got := addrOf(a, node); got != want {
			t.Errorf("a: %s Addr %q, want %q", node, got, want)
		}
		if got := addrOf(b, node); got == "" {
			t.Errorf("b (AcceptForeignHosts): %s not dialable", node)
		}
	}
	evs, _ := a.rec.snapshot()
	for _, e := range evs {
		if e.Peer.Name == "victim@127.0.0.77" && e.Peer.Dialable() {
			t.Errorf("sink told %+v, want a name without address", e.Peer)
		}
	}
	if r := a.Stats().Rejected[ReasonUndialable]; r != 2 {
		t.Errorf("a: undialable = %d, want 2", r)
	}
	if r := b.Stats().Rejected[ReasonUndialable]; r != 0 {
		t.Errorf("b: undialable = %d, want 0", r)
	}
}

// TestSignedForeignHostDialable: a heartbeat that verifies against the
// secret is dialable whatever its source (only a member can sign an
// address; compose nodes advertise service names such as macula@node1).
func TestSignedForeignHostDialable(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	a := startNode(t, port, "a", func(c *Config) { c.Expiry = time.Minute; c.Secrets = []string{"s3cret"} })
	s := newRawSender(t, port)
	s.send(t, AppendHeartbeat(nil, "m@node1:9100", NewKeyring("s3cret")))
	a.rec.wait(t, "signed named node", func(evs []Event) bool { return has(evs, Discovered, "m@node1:9100") })
	if r := a.Stats().Rejected[ReasonUndialable]; r != 0 {
		t.Errorf("undialable = %d, want 0", r)
	}
}

// TestReplayDoesNotFlap: alternating a name's superseded port with its
// current one (a replay of an old heartbeat) causes no further Found or
// Gone once the new port has been heard.
func TestReplayDoesNotFlap(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	a := startNode(t, port, "a", func(c *Config) { c.Expiry = time.Minute })
	s := newRawSender(t, port)
	s.send(t, []byte("MACULA_GOSSIP:x@127.0.0.1:1000"))
	a.rec.wait(t, "x:1000", func(evs []Event) bool { return has(evs, Discovered, "x@127.0.0.1:1000") })
	s.send(t, []byte("MACULA_GOSSIP:x@127.0.0.1:2000"))
	a.rec.wait(t, "x:2000", func(evs []Event) bool { return has(evs, Discovered, "x@127.0.0.1:2000") })
	const rounds = 100 // 2 s at 20 ms
	for i := range rounds {
		s.send(t, []byte("MACULA_GOSSIP:x@127.0.0.1:1000"))
		s.send(t, []byte("MACULA_GOSSIP:x@127.0.0.1:2000"))
		if i%10 == 9 {
			eventually(t, "replays handled", func() bool {
				return a.Stats().Rejected[ReasonSuperseded] >= uint64(i+1)
			})
		}
		time.Sleep(20 * time.Millisecond)
	}
	evs, _ := a.rec.snapshot()
	if len(evs) != 2 {
		t.Errorf("%d events, want 2 (the first discovery and the one move): %v", len(evs), evs)
	}
	st := a.Stats()
	if st.Rejected[ReasonSuperseded] != rounds || st.Discovered != 2 || st.Lost != 1 {
		t.Errorf("stats %+v", st)
	}
	if p := peerNodes(a.Gossip); !slices.Equal(p, []string{"x@127.0.0.1:2000"}) {
		t.Errorf("peers %v", p)
	}
	t.Logf("replay: %d alternations, %d extra Found/Gone, %d superseded ignored", rounds, len(evs)-2,
		st.Rejected[ReasonSuperseded])
}

// TestFloodDoesNotLockOut: a flood of distinct names fills the table; a
// real newcomer joining during the flood is discovered within 2 intervals,
// and a verified node stays in the table throughout.
func TestFloodDoesNotLockOut(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	const interval, maxPeers = 200 * time.Millisecond, 64
	a := startNode(t, port, "a", func(c *Config) {
		c.Interval, c.Expiry, c.MaxPeers = interval, 10*time.Second, maxPeers
	})
	old := startNode(t, port, "old", func(c *Config) { c.Interval, c.Expiry = interval, 10*time.Second })
	// Verified: heard over more than an interval.
	eventually(t, "old verified", func() bool {
		for _, e := range a.Peers() {
			if e.Node == old.name && e.LastSeen.Sub(e.FirstSeen) > interval {
				return true
			}
		}
		return false
	})
	s := newRawSender(t, port)
	stop := make(chan struct{})
	flooded := make(chan int)
	go func() { // bounded: at most 20,000 packets or 5 s
		n := 0
		defer func() { flooded <- n }()
		end := time.Now().Add(5 * time.Second)
		for ; n < 20000 && time.Now().Before(end); n++ {
			select {
			case <-stop:
				return
			default:
			}
			s.send(t, fmt.Appendf(nil, "MACULA_GOSSIP:flood%d@127.0.0.1:1", n))
			if n%32 == 31 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	eventually(t, "table full", func() bool { return a.Stats().Evicted > 4*maxPeers })
	t0 := time.Now()
	nc := startNode(t, port, "newcomer", func(c *Config) { c.Interval = interval })
	a.rec.wait(t, "newcomer discovered", func(evs []Event) bool { return has(evs, Discovered, nc.name) })
	took := time.Since(t0)
	close(stop)
	n := <-flooded
	st := a.Stats()
	t.Logf("flood: %d packets, table %d/%d, evicted %d, table_full %d; newcomer discovered after %v",
		n, st.Peers, maxPeers, st.Evicted, st.Rejected[ReasonTableFull], took.Round(time.Millisecond))
	if took > 2*interval {
		t.Errorf("newcomer discovered after %v, want <= %v", took, 2*interval)
	}
	evs, _ := a.rec.snapshot()
	if has(evs, Lost, old.name) {
		t.Errorf("verified node %s evicted by the flood", old.name)
	}
}

// TestUnsignedNamesResolved: a host name in an unsigned heartbeat is
// resolved (bounded) and must lead to the packet's source; the node is
// reported once that is known, on its next heartbeat. A flood of names
// never runs more than maxLookups lookups at once.
func TestUnsignedNamesResolved(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	calls, inFlight, peak := 0, 0, 0
	lookup := func(ctx context.Context, host string) ([]netip.Addr, error) {
		mu.Lock()
		calls++
		inFlight++
		peak = max(peak, inFlight)
		mu.Unlock()
		defer func() { mu.Lock(); inFlight--; mu.Unlock() }()
		switch host {
		case "good.test":
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		case "bad.test":
			return []netip.Addr{netip.MustParseAddr("10.9.9.9")}, nil
		}
		select { // an unknown name: no answer until the timeout
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
		return nil, errors.New("no such host")
	}
	port := freePort(t)
	a := startNode(t, port, "a", func(c *Config) { c.Expiry = time.Minute; c.lookup = lookup })
	s := newRawSender(t, port)
	for _, n := range []string{"g@good.test:9", "b@bad.test:9"} {
		s.send(t, []byte("MACULA_GOSSIP:"+n))
	}
	eventually(t, "both resolved", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return calls >= 2 && inFlight == 0
	})
	time.Sleep(20 * time.Millisecond) // the answers reach the table goroutine
	for _, n := range []string{"g@good.test:9", "b@bad.test:9"} {
		s.send(t, []byte("MACULA_GOSSIP:"+n))
	}
	a.rec.wait(t, "both reported", func(evs []Event) bool {
		return has(evs, Discovered, "g@good.test:9") && has(evs, Discovered, "b@bad.test")
	})
	if r := a.Stats().Rejected[ReasonUndialable]; r != 1 {
		t.Errorf("undialable = %d, want 1 (bad.test)", r)
	}
	// A flood of 200 distinct names.
	for i := range 200 {
		s.send(t, fmt.Appendf(nil, "MACULA_GOSSIP:f%d@name%d.test:9", i, i))
		if i%50 == 49 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("name flood: %d lookups, at most %d at once", calls, peak)
	if peak > maxLookups {
		t.Errorf("%d lookups at once, want <= %d", peak, maxLookups)
	}
}

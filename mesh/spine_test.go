package mesh

import (
	"context"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// TestConnectByAddress: Connect with an address only links with whoever
// answers there; NodeUp carries the real name and the dialled address, and
// a second address-only Connect to the same peer adds no second link.
func TestConnectByAddress(t *testing.T) {
	a, ra := startNode(t, "a@127.0.0.1", nil)
	b, rb := startNode(t, "b@127.0.0.1", nil)
	a.Connect("", b.Addr())
	ra.waitEvent(t, 10*time.Second, NodeUp, b.Name(), "")
	rb.waitEvent(t, 10*time.Second, NodeUp, a.Name(), "")
	up := ra.snapshot()[0]
	if up.Node != b.Name() || up.Dialled != b.Addr() || up.Addr != b.Addr() {
		t.Fatalf("NodeUp %+v, want node %s dialled at %s", up, b.Name(), b.Addr())
	}
	if got := rb.snapshot()[0].Dialled; got != "" {
		t.Fatalf("inbound NodeUp has Dialled %q, want empty", got)
	}
	// b also learns a by address: its inbound link satisfies it.
	b.Connect("", a.Addr())
	eventually(t, 5*time.Second, "quiet", func() bool { return a.quiet() && b.quiet() })
	if len(ra.snapshot()) != 1 || len(rb.snapshot()) != 1 {
		t.Fatalf("extra events:\na %s\nb %s", fmtEvents(ra.snapshot()), fmtEvents(rb.snapshot()))
	}
	// The link drops (b disconnects on purpose: it tells a, so this is no
	// flap): a reports it closed and redials the address.
	b.Disconnect(a.Name())
	b.Forget(a.Addr())
	ra.wait(t, 10*time.Second, "relinked", func(r *recorder) bool { return len(r.events) >= 3 })
	if got := strip(ra.snapshot()); got[1].Kind != NodeDown || got[1].Reason != ReasonClosed || got[2].Kind != NodeUp || got[2].Node != b.Name() {
		t.Fatalf("a events after the drop: %s", fmtEvents(ra.snapshot()))
	}
	// Forget by address stops it.
	a.Forget(b.Addr())
	a.Disconnect(b.Name())
	eventually(t, 5*time.Second, "a has no dial target", func() bool {
		a.mu.RLock()
		defer a.mu.RUnlock()
		return len(a.peers) == 0
	})
}

// TestSameAddressNewName: a node replaced at the same address by a node of
// another name is seen as the old one down and the new one up.
func TestSameAddressNewName(t *testing.T) {
	a, ra := startNode(t, "a@127.0.0.1", nil)
	b1, _ := startNode(t, "b1@127.0.0.1", nil)
	addr := b1.ListenAddr().String()
	a.Connect("", addr)
	ra.waitEvent(t, 10*time.Second, NodeUp, b1.Name(), "")
	b1.Close()
	ra.waitEvent(t, 10*time.Second, NodeDown, b1.Name(), ReasonLeft)
	var b2 *Mesh
	eventually(t, 10*time.Second, "b2 bound to b1's port", func() bool {
		m, err := Start(context.Background(), Config{Name: "b2@127.0.0.1", Cookie: testCookie, Listen: addr})
		if err != nil {
			return false
		}
		b2 = m
		return true
	})
	defer b2.Close()
	ra.waitEvent(t, 10*time.Second, NodeUp, "b2@127.0.0.1", "")
}

// TestLeftIncarnationRefused: once a node said goodbye, a connection of the
// same incarnation that was still in flight is refused ("left"): no ghost
// NodeUp after the NodeDown left. A new incarnation links as usual.
func TestLeftIncarnationRefused(t *testing.T) {
	a, ra := startNode(t, "a@127.0.0.1", nil)
	k, rk := startNode(t, "k@127.0.0.1", nil)
	k.Connect(a.Name(), a.Addr())
	ra.waitEvent(t, 10*time.Second, NodeUp, k.Name(), "")
	rk.waitEvent(t, 10*time.Second, NodeUp, a.Name(), "") // k's side is linked too: its goodbye will be sent
	ghost := hello{Incarnation: k.Incarnation(), Start: k.start, MaxMessage: 1 << 20, Name: k.Name(), Addr: k.Addr(), Features: sealFeatures}
	k.Close()
	ra.waitEvent(t, 10*time.Second, NodeDown, k.Name(), ReasonLeft)

	// The late connection of the leaving process.
	conn, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := clientHandshake(conn, []byte(testCookie), ghost, a.Name()); reasonOf(context.Background(), err) != HSLeft {
		t.Fatalf("handshake of a left incarnation: %v, want refused %q", err, HSLeft)
	}
	eventually(t, 5*time.Second, "left counted", func() bool { return a.Stats().HandshakeFailures[string(HSLeft)] == 1 })
	if got := strip(ra.snapshot()); len(got) != 2 {
		t.Fatalf("a saw a ghost: %s", fmtEvents(ra.snapshot()))
	}

	// Transitive lists older than the goodbye do not bring the name back.
	a.learnPeers(&link{peer: hello{Name: "x@127.0.0.1"}}, []peerInfo{{Name: k.Name(), Addr: k.Addr()}})
	a.mu.RLock()
	_, dialling := a.peers[k.Name()]
	a.mu.RUnlock()
	if dialling {
		t.Fatal("a dials a node that left, from a peer list")
	}

	// The same name restarted (new incarnation) links again.
	k2, _ := startNode(t, "k@127.0.0.1", nil)
	k2.Connect(a.Name(), a.Addr())
	ra.wait(t, 10*time.Second, "k2 up", func(r *recorder) bool { return len(r.events) >= 3 })
	if got := strip(ra.snapshot()); len(got) != 3 || got[2].Inc != k2.Incarnation() {
		t.Fatalf("restart after leave: %s", fmtEvents(ra.snapshot()))
	}
}

// TestDialsBounded: thousands of dial targets cost at most MaxDials dials
// in flight, and a real peer reported after them links on its first try
// (first attempts go before retries).
func TestDialsBounded(t *testing.T) {
	// A listener that accepts and never answers: every dial to it hangs in
	// its handshake until HandshakeTimeout, the worst case for goroutines.
	tar, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tar.Close()
	held := make(chan net.Conn, 4096)
	go func() {
		for {
			c, err := tar.Accept()
			if err != nil {
				return
			}
			held <- c
		}
	}()
	defer func() {
		for {
			select {
			case c := <-held:
				c.Close()
			default:
				return
			}
		}
	}()
	_, port, _ := net.SplitHostPort(tar.Addr().String())
	a, ra := startNode(t, "a@127.0.0.1", func(c *Config) { c.MaxDials = 4; c.HandshakeTimeout = 2 * time.Second })
	base := runtime.NumGoroutine()
	const fakes = 2000
	for i := range fakes {
		a.Connect("f"+strconv.Itoa(i)+"@127.0.0.1", "127.0.0.1:"+port)
	}
	peak := runtime.NumGoroutine()
	b, _ := startNode(t, "b@127.0.0.1", nil)
	a.Connect(b.Name(), b.Addr())
	for range 50 {
		peak = max(peak, runtime.NumGoroutine())
		a.mu.RLock()
		inflight := a.dialsInFlight
		a.mu.RUnlock()
		if inflight > 4 {
			t.Fatalf("%d dials in flight, MaxDials 4", inflight)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if peak-base > 4*3+10 {
		t.Errorf("goroutines grew by %d for %d targets, want a bound set by MaxDials", peak-base, fakes)
	}
	// b was queued behind 2,000 first attempts that each hang for 2 s, 4 in
	// flight (1,000 s in arrival order): the newest-first turn dials it
	// within a few slots.
	ra.waitEvent(t, 10*time.Second, NodeUp, b.Name(), "")
	for i := range fakes {
		a.Forget("f" + strconv.Itoa(i) + "@127.0.0.1")
	}
	a.mu.RLock()
	n := len(a.peers)
	a.mu.RUnlock()
	if n > 1+4 { // b (linked, wanted) and dials still in flight
		t.Errorf("%d peer states left after Forget", n)
	}
}

// TestConnectOwnAddress: an address-only target that turns out to be this
// node (DNS lists every pod, us included) is dropped after one attempt,
// without a warning or a handshake failure.
func TestConnectOwnAddress(t *testing.T) {
	a, ra := startNode(t, "a@127.0.0.1", func(c *Config) { c.Advertise = "localhost:1" })
	a.Connect("", a.ListenAddr().String())
	eventually(t, 10*time.Second, "target dropped", func() bool {
		a.mu.RLock()
		defer a.mu.RUnlock()
		return len(a.peers) == 0
	})
	if n := nonZero(a.Stats().HandshakeFailures); len(n) != 0 {
		t.Errorf("handshake failures %v", n)
	}
	if ev := ra.snapshot(); len(ev) != 0 {
		t.Errorf("events: %s", fmtEvents(ev))
	}
}

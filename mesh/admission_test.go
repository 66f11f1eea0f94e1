package mesh

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// holdSockets keeps n idle TCP connections to addr open, spread over the
// source addresses srcs (127.0.0.0/8 on lo only), reconnecting each one the
// server closes. Bounded: it stops at stop, after 60 s, or after 100,000
// connections. It returns the number of connections made.
func holdSockets(t *testing.T, addr string, srcs []string, n int, stop <-chan struct{}) func() int64 {
	t.Helper()
	var made atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(60 * time.Second)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(srcs[i%len(srcs)])}, Timeout: time.Second}
			buf := make([]byte, 64)
			for time.Now().Before(end) && made.Load() < 100000 {
				select {
				case <-stop:
					return
				default:
				}
				c, err := d.Dial("tcp", addr)
				if err == nil {
					made.Add(1)
					go func() { <-stop; c.Close() }()
					for { // idle until the server closes it
						if _, err := c.Read(buf); err != nil {
							break
						}
					}
					c.Close()
				}
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
	}
	t.Cleanup(wg.Wait)
	return made.Load
}

// dropLink closes the TCP connection under a's link to name, as a network
// failure would.
func dropLink(m *Mesh, name string) bool {
	m.mu.RLock()
	l := m.links[name]
	m.mu.RUnlock()
	if l == nil {
		return false
	}
	l.raw.Close()
	return true
}

// TestPendingExhaustionOneSource: idle sockets that hold pending handshakes
// (about 70 per node from one source, or 80 from ten sources) do not keep a
// dropped link from coming back within its normal backoff (5 s).
func TestPendingExhaustionOneSource(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sources int
		sockets int
	}{{"one source", 1, 70}, {"ten sources", 10, 80}} {
		t.Run(tc.name, func(t *testing.T) {
			a, ra := startNode(t, "a@127.0.0.1", nil)
			b, rb := startNode(t, "b@127.0.0.1", nil)
			a.Connect(b.Name(), b.Addr())
			b.Connect(a.Name(), a.Addr())
			ra.waitEvent(t, 5*time.Second, NodeUp, b.Name(), "")
			rb.waitEvent(t, 5*time.Second, NodeUp, a.Name(), "")
			var srcs []string
			for i := range tc.sources {
				srcs = append(srcs, fmt.Sprintf("127.0.0.%d", 60+i))
			}
			stop := make(chan struct{})
			made := holdSockets(t, a.Addr(), srcs, tc.sockets, stop)
			madeB := holdSockets(t, b.Addr(), srcs, tc.sockets, stop)
			defer close(stop)
			eventually(t, 10*time.Second, "attack holds slots", func() bool {
				return a.Stats().HandshakeFailures["too_many_pending"] > 0 && b.Stats().HandshakeFailures["too_many_pending"] > 0
			})
			oldA, oldB := currentLink(a, b.Name()), currentLink(b, a.Name())
			t0 := time.Now()
			if !dropLink(a, b.Name()) {
				t.Fatal("no link to drop")
			}
			// Back: a new connection on both sides (with or without
			// NodeDown/NodeUp: a same-incarnation relink is silent).
			eventually(t, 30*time.Second, "link back", func() bool {
				la, lb := currentLink(a, b.Name()), currentLink(b, a.Name())
				return la != nil && lb != nil && la != oldA && lb != oldB
			})
			took := time.Since(t0)
			st := a.Stats()
			t.Logf("%s: %d idle sockets per node: link back after %v; a: pending %d, too_many_pending %d, connections made %d+%d",
				tc.name, tc.sockets, took.Round(time.Millisecond), st.PendingHandshakes,
				st.HandshakeFailures["too_many_pending"], made(), madeB())
			if took > 5*time.Second {
				t.Errorf("link back after %v, want <= 5s", took)
			}
		})
	}
}

// TestWrongCookieThrottled: after a few wrong-cookie handshakes a source is
// refused for a growing time, counted as "throttled" and warned about once;
// other sources are unaffected.
func TestWrongCookieThrottled(t *testing.T) {
	h := &countHandler{}
	a, ra := startNode(t, "a@127.0.0.1", func(c *Config) { c.Logger = slog.New(h) })
	// A guesser at 127.0.0.70: handshakes with a wrong cookie as fast as
	// it can for 3 s (bounded: at most 5,000 attempts).
	b, _ := startNode(t, "b@127.0.0.70", func(c *Config) { c.Cookie = "guess"; c.Listen = "127.0.0.70:0" })
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.70")}, Timeout: time.Second}
	attempts := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end) && attempts < 5000; attempts++ {
		c, err := d.Dial("tcp", a.Addr())
		if err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		self, _ := b.selfHello()
		_, _ = clientHandshake(c, []byte("guess"), self, "")
		c.Close()
	}
	eventually(t, 5*time.Second, "all counted", func() bool {
		st := a.Stats()
		return st.PendingHandshakes == 0 && st.HandshakeFailures["bad_cookie"]+st.HandshakeFailures["throttled"] > 0
	})
	st := a.Stats()
	t.Logf("wrong cookie from one source for 3 s: %d attempts, %d cookie checks, %d throttled",
		attempts, st.HandshakeFailures["bad_cookie"], st.HandshakeFailures["throttled"])
	// 3 free, then refusals of 0.2, 0.4, 0.8, 1.6 s: at most 3+4 checks.
	if n := st.HandshakeFailures["bad_cookie"]; n > 8 {
		t.Errorf("%d cookie checks in 3 s from one source, want <= 8", n)
	}
	if n := h.count("mesh: throttling a source after wrong-cookie handshakes"); n != 1 {
		t.Errorf("%d throttle warnings, want 1 per window", n)
	}
	// Another source with the right cookie links at once.
	c, _ := startNode(t, "c@127.0.0.1", nil)
	c.Connect(a.Name(), a.Addr())
	ra.waitEvent(t, 5*time.Second, NodeUp, c.Name(), "")
}

// victim is a TCP listener on lo that counts connections and holds them
// silent (the worst case for a dialler: each attempt lasts its timeout), or
// closes them at once.
func victim(t *testing.T, addr string, hold bool) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			if !hold {
				c.Close()
				continue
			}
			wg.Add(1)
			go func() { defer wg.Done(); io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return ln.Addr().String(), &n
}

// TestDialsPerAddress: 100 names announced at one address (a hostile
// gossip flood naming a victim) cost one connection per backoff step, not
// one per name.
func TestDialsPerAddress(t *testing.T) {
	for _, hold := range []bool{true, false} {
		t.Run(fmt.Sprintf("hold=%v", hold), func(t *testing.T) {
			addr, conns := victim(t, "127.0.0.77:0", hold)
			a, _ := startNode(t, "a@127.0.0.1", func(c *Config) { c.HandshakeTimeout = time.Second })
			for i := range 100 {
				a.Connect(fmt.Sprintf("victim%d@127.0.0.77", i), addr)
			}
			time.Sleep(4 * time.Second)
			n := conns.Load()
			t.Logf("100 names at one address for 4 s (victim holds=%v): %d connections, %d dials", hold, n, a.Stats().Dials)
			if n > 8 {
				t.Errorf("%d connections to one address in 4 s, want <= 8", n)
			}
		})
	}
}

// TestFoundAgainLiftsAddressBackoff: a peer whose dials failed is backing
// off at its address; reported again (heard again: a partition healed), its
// next dial does not wait out the backoff. Another name at that address
// does not lift it (many names at one address stay one dial per step).
func TestFoundAgainLiftsAddressBackoff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // refused from now on
	a, _ := startNode(t, "a@127.0.0.1", nil)
	// Backing off for long enough that no dial of x starts during the
	// checks below (the backoff doubles from 100 ms per failure).
	backingOff := func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		s := a.addrDial[addr]
		return s != nil && !s.dialing && time.Until(s.until) > 300*time.Millisecond
	}
	a.Connect("x@127.0.0.1", addr)
	eventually(t, 10*time.Second, "x's dials refused, its address backing off", backingOff)
	a.Connect("y@127.0.0.1", addr) // another name: the backoff stays
	if !backingOff() {
		t.Fatal("another name at the address lifted its backoff")
	}
	a.Connect("x@127.0.0.1", addr) // x again
	a.mu.Lock()
	s := a.addrDial[addr]
	lifted := s == nil || s.dialing || !s.until.After(time.Now())
	a.mu.Unlock()
	if !lifted {
		t.Fatal("x found again: its address still backing off")
	}
}

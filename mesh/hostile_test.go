package mesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// countHandler counts log records by message.
type countHandler struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	if h.n == nil {
		h.n = map[string]int{}
	}
	h.n[r.Message]++
	h.mu.Unlock()
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }
func (h *countHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[msg]
}

// expectClosed reads from c until the peer closes it.
func expectClosed(t *testing.T, c net.Conn, within time.Duration) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", within)
	}
	return b
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestWrongCookie(t *testing.T) {
	h := &countHandler{}
	a, ra := startNode(t, "a@127.0.0.1", func(c *Config) { c.Logger = slog.New(h) })
	b, rb := startNode(t, "b@127.0.0.1", func(c *Config) { c.Cookie = "another-cookie" })
	b.Connect(a.Name(), a.Addr())
	eventually(t, 10*time.Second, "three rejected handshakes", func() bool {
		return a.Stats().HandshakeFailures["bad_cookie"] >= 3 && b.Stats().HandshakeFailures["bad_cookie"] >= 3
	})
	b.Close()
	if n := h.count("mesh: rejected connection"); n != 1 {
		t.Errorf("%d warnings for one address within 10s, want 1", n)
	}
	if len(ra.snapshot()) != 0 || len(rb.snapshot()) != 0 || len(a.Links()) != 0 {
		t.Fatalf("events with a wrong cookie: a %s b %s", fmtEvents(ra.snapshot()), fmtEvents(rb.snapshot()))
	}
}

// handshakeStart is a valid preamble and hello from a node named n.
func handshakeStart(n string) []byte {
	h := hello{Incarnation: 1, Start: 1, MaxMessage: 1 << 20, Name: n, Addr: "127.0.0.1:1", Features: sealFeatures}
	rand.Read(h.Nonce[:])
	return appendFrame(appendPreamble(nil), frameHello, appendHello(nil, &h))
}

func TestHostileInput(t *testing.T) {
	random := make([]byte, 256)
	rand.Read(random)
	random[0] = 'X' // not the magic
	huge := binary.BigEndian.AppendUint32(appendPreamble(nil), 0xffffffff)
	for _, tc := range []struct {
		name   string
		send   []byte
		half   bool // close our write side after sending
		reason string
	}{
		{"random bytes", random, false, "bad_magic"},
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false, "bad_magic"},
		{"huge length", huge, false, "frame_too_large"},
		{"over handshake limit", binary.BigEndian.AppendUint32(appendPreamble(nil), handshakeFrameLimit+1), false, "frame_too_large"},
		{"zero length", append(appendPreamble(nil), 0, 0, 0, 0, 1), false, "malformed"},
		{"truncated frame", append(appendPreamble(nil), 0, 0, 0, 100, byte(frameHello), 1, 2, 3), true, "closed"},
		{"truncated preamble", []byte("MC"), true, "closed"},
		{"wrong first frame", appendFrame(appendPreamble(nil), frameTick, nil), false, "unexpected_frame"},
		{"garbage hello", appendFrame(appendPreamble(nil), frameHello, random[:100]), false, "malformed"},
		{"silent", nil, false, "timeout"},
		{"preamble then silent", appendPreamble(nil), false, "timeout"},
		{"hello then silent", handshakeStart("x@127.0.0.1"), false, "timeout"},
		{"bad proof", append(handshakeStart("x@127.0.0.1"), appendFrame(nil, frameProof, make([]byte, 32))...), false, "bad_cookie"},
		{"short proof", append(handshakeStart("x@127.0.0.1"), appendFrame(nil, frameProof, make([]byte, 31))...), false, "malformed"},
		{"own name", handshakeStart("a@127.0.0.1"), false, "name_conflict"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, ra := startNode(t, "a@127.0.0.1", func(c *Config) { c.HandshakeTimeout = 300 * time.Millisecond })
			c := dial(t, a.Addr())
			if len(tc.send) > 0 {
				if _, err := c.Write(tc.send); err != nil {
					t.Fatal(err)
				}
			}
			if tc.half {
				c.(*net.TCPConn).CloseWrite()
			}
			expectClosed(t, c, 5*time.Second)
			eventually(t, 5*time.Second, "failure counted", func() bool { return a.Stats().HandshakeFailures[tc.reason] == 1 })
			if st := a.Stats(); len(nonZero(st.HandshakeFailures)) != 1 || st.PendingHandshakes != 0 {
				t.Fatalf("stats %+v", st)
			}
			if len(ra.snapshot()) != 0 {
				t.Fatalf("events: %s", fmtEvents(ra.snapshot()))
			}
		})
	}
}

// A dialer of wire version 1 (before sealed links) is refused with our
// preamble (naming version 2) and refuse code 6.
func TestBadVersion(t *testing.T) {
	a, _ := startNode(t, "a@127.0.0.1", nil)
	c := dial(t, a.Addr())
	c.Write([]byte{'M', 'C', 'L', 'A', 1})
	got := expectClosed(t, c, 5*time.Second)
	want := appendFrame(appendPreamble(nil), frameRefuse, []byte{refuseBadVersion})
	if !bytes.Equal(got, want) {
		t.Fatalf("answer %x, want %x", got, want)
	}
	eventually(t, 5*time.Second, "counted", func() bool { return a.Stats().HandshakeFailures["bad_version"] == 1 })

	// As a dialer, a version-1 acceptor's answer (preamble version 1,
	// refuse 6) is a bad_version error naming both versions.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		io.ReadFull(s, make([]byte, preambleLen))
		s.Write([]byte{'M', 'C', 'L', 'A', 1, 0, 0, 0, 2, byte(frameRefuse), refuseBadVersion})
	}()
	c2 := dial(t, ln.Addr().String())
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	self := hello{Incarnation: 7, Start: 7, MaxMessage: 1 << 20, Name: "r@127.0.0.1", Addr: "127.0.0.1:1", Features: sealFeatures}
	_, err = clientHandshake(c2, []byte(testCookie), self, "")
	if reasonOf(context.Background(), err) != HSBadVersion || !strings.Contains(err.Error(), "version 1") ||
		!strings.Contains(err.Error(), "versions 2 to 2") {
		t.Fatalf("handshake with a version-1 acceptor: %v", err)
	}
}

// recordConn records what is written to it.
type recordConn struct {
	net.Conn
	w bytes.Buffer
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.w.Write(p)
	return c.Conn.Write(p)
}

func TestReplayedHandshake(t *testing.T) {
	a, ra := startNode(t, "a@127.0.0.1", nil)
	rc := &recordConn{Conn: dial(t, a.Addr())}
	rc.SetDeadline(time.Now().Add(10 * time.Second))
	self := hello{Incarnation: 7, Start: 7, MaxMessage: 1 << 20, Name: "r@127.0.0.1", Addr: "127.0.0.1:1", Features: sealFeatures}
	rand.Read(self.Nonce[:])
	if _, err := clientHandshake(rc, []byte(testCookie), self, a.Name()); err != nil {
		t.Fatalf("real handshake: %v", err)
	}
	ra.waitEvent(t, 5*time.Second, NodeUp, "r@127.0.0.1", "")
	rc.Close()
	ra.waitEvent(t, 5*time.Second, NodeDown, "r@127.0.0.1", ReasonClosed)

	// Replaying the dialer's bytes fails: a's nonce is fresh.
	c := dial(t, a.Addr())
	c.Write(rc.w.Bytes())
	expectClosed(t, c, 5*time.Second)
	eventually(t, 5*time.Second, "replay counted", func() bool { return a.Stats().HandshakeFailures["bad_cookie"] == 1 })
	if n := len(ra.snapshot()); n != 2 {
		t.Fatalf("events after replay: %s", fmtEvents(ra.snapshot()))
	}
}

func TestPendingHandshakeLimit(t *testing.T) {
	a, ra := startNode(t, "a@127.0.0.1", func(c *Config) {
		c.MaxPendingHandshakes = 2
		c.HandshakeTimeout = 5 * time.Second
	})
	s1, s2 := dial(t, a.Addr()), dial(t, a.Addr())
	eventually(t, 5*time.Second, "two pending", func() bool { return a.Stats().PendingHandshakes == 2 })
	c := dial(t, a.Addr())
	t0 := time.Now()
	expectClosed(t, c, 3*time.Second)
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("over-limit connection closed after %v", d)
	}
	eventually(t, 5*time.Second, "counted", func() bool { return a.Stats().HandshakeFailures["too_many_pending"] == 1 })
	// Once the silent clients go, real nodes get in.
	s1.Close()
	s2.Close()
	eventually(t, 5*time.Second, "none pending", func() bool { return a.Stats().PendingHandshakes == 0 })
	b, _ := startNode(t, "b@127.0.0.1", nil)
	b.Connect(a.Name(), a.Addr())
	ra.waitEvent(t, 10*time.Second, NodeUp, b.Name(), "")
}

// An authenticated peer that sends a frame over the limit is dropped.
func TestOversizedFrameAfterHandshake(t *testing.T) {
	a, ra := startNode(t, "a@127.0.0.1", func(c *Config) { c.MaxMessageSize = 1000 })
	for _, tc := range []struct {
		name   string
		frame  []byte
		reason string
	}{
		{"over limit", binary.BigEndian.AppendUint32(nil, 1002), "frame_too_large"},
		{"handshake frame", appendFrame(nil, frameHello, nil), "unexpected_frame"},
		{"bad peers", appendFrame(nil, framePeers, []byte{0, 9}), "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := a.Stats().ProtocolErrors[tc.reason]
			n := len(ra.snapshot())
			c := dial(t, a.Addr())
			c.SetDeadline(time.Now().Add(10 * time.Second))
			self := hello{Incarnation: 9, Start: 9, MaxMessage: 1 << 20, Name: "r@127.0.0.1", Addr: "127.0.0.1:1", Features: sealFeatures}
			rand.Read(self.Nonce[:])
			peer, err := clientHandshake(c, []byte(testCookie), self, a.Name())
			if err != nil {
				t.Fatal(err)
			}
			ra.wait(t, 5*time.Second, "nodeup", func(r *recorder) bool { return len(r.events) == n+1 })
			sw := newSealWriter(c, peer.sess.send)
			sw.Write(tc.frame)
			sw.Write(make([]byte, 100))
			sw.Flush()
			expectClosed(t, c, 5*time.Second)
			ra.wait(t, 5*time.Second, "nodedown", func(r *recorder) bool {
				last := r.events[len(r.events)-1]
				return last.Kind == NodeDown && last.Reason == ReasonClosed
			})
			if got := a.Stats().ProtocolErrors[tc.reason]; got != before+1 {
				t.Fatalf("ProtocolErrors %v", a.Stats().ProtocolErrors)
			}
		})
	}
}

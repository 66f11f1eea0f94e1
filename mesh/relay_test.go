package mesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// attack is what the relay does to the next record from the dialer.
type attack int

const (
	forward attack = iota
	flipBit        // flip one bit of the record (a sealed message frame)
	inject         // send a forged record of the same length before it
	replay         // forward it, then send it again
)

// mitm is an active on-path attacker between a dialer and an acceptor on
// 127.0.0.1: it relays the handshake unchanged, then parses the sealed
// records and tampers with the next one from the dialer when armed. It
// records every byte it relays, to check that no plaintext crosses it.
type mitm struct {
	ln     net.Listener
	target string
	done   chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	armed   attack
	fired   chan struct{} // closed when the armed attack was carried out
	seen    bytes.Buffer  // all relayed bytes, both directions
	conns   []net.Conn
	records int // records relayed from the dialer
	closed  bool
}

func newMITM(t *testing.T, target string) *mitm {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &mitm{ln: ln, target: target, done: make(chan struct{})}
	r.wg.Add(1)
	go r.acceptLoop()
	t.Cleanup(r.close)
	return r
}

func (r *mitm) addr() string { return r.ln.Addr().String() }

// arm makes the relay carry out a on the next record from the dialer.
func (r *mitm) arm(a attack) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.armed, r.fired = a, make(chan struct{})
	return r.fired
}

func (r *mitm) close() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	close(r.done)
	r.ln.Close()
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *mitm) acceptLoop() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		d, err := net.Dial("tcp", r.target)
		if err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			c.Close()
			d.Close()
			return
		}
		r.conns = append(r.conns, c, d)
		r.mu.Unlock()
		r.wg.Add(2)
		go r.pump(d, c, true)
		go r.pump(c, d, false)
	}
}

// pump relays src to dst: the preamble and two handshake frames as they
// are, then record by record.
func (r *mitm) pump(dst, src net.Conn, fromDialer bool) {
	defer r.wg.Done()
	defer dst.Close()
	defer src.Close()
	send := func(b []byte) bool {
		r.mu.Lock()
		r.seen.Write(b)
		r.mu.Unlock()
		_, err := dst.Write(b)
		return err == nil
	}
	pre := make([]byte, preambleLen)
	if _, err := io.ReadFull(src, pre); err != nil || !send(pre) {
		return
	}
	for range 2 { // hello+proof or challenge+welcome
		hdr := make([]byte, frameHeaderLen)
		if _, err := io.ReadFull(src, hdr); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(hdr)-1)
		if _, err := io.ReadFull(src, body); err != nil || !send(append(hdr, body...)) {
			return
		}
	}
	for {
		hdr := make([]byte, recordHeaderLen)
		if _, err := io.ReadFull(src, hdr); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(hdr)
		if n > maxRecordBody {
			return
		}
		rec := make([]byte, recordHeaderLen+n)
		copy(rec, hdr)
		if _, err := io.ReadFull(src, rec[recordHeaderLen:]); err != nil {
			return
		}
		a := forward
		var fired chan struct{}
		if fromDialer {
			r.mu.Lock()
			r.records++
			a, fired = r.armed, r.fired
			r.armed = forward
			r.mu.Unlock()
		}
		out := [][]byte{rec}
		switch a {
		case flipBit:
			bad := bytes.Clone(rec)
			bad[recordHeaderLen+2] ^= 0x04
			out = [][]byte{bad}
		case inject:
			forged := make([]byte, len(rec))
			copy(forged, hdr)
			rand.Read(forged[recordHeaderLen:])
			out = [][]byte{forged, rec}
		case replay:
			out = [][]byte{rec, rec}
		}
		if a != forward {
			// Carried out once the first record is written: the node may
			// close the connection on the forged record before the real
			// one is written, and the test must not wait forever then.
			ok := send(out[0])
			close(fired)
			out = out[1:]
			if !ok {
				return
			}
		}
		for _, b := range out {
			if !send(b) {
				return
			}
		}
	}
}

// The relay tests of issue 12: an active attacker that relays a real
// handshake between two nodes and then flips a bit of a message, injects a
// record or replays one never gets a message accepted; the receiving node
// closes the link and counts ProtocolErrors["tampered"]; no plaintext
// crosses the relay. Both record ciphers.
func TestRelayTampering(t *testing.T) {
	for _, c := range []struct {
		name string
		feat uint64
	}{{"aes", featSealAESGCM}, {"chacha", featSealChaCha}} {
		for _, tc := range []struct {
			name string
			a    attack
			want []string // messages b accepts, in order
		}{
			{"flip", flipBit, []string{"a@127.0.0.1: hello-1"}},
			{"inject", inject, []string{"a@127.0.0.1: hello-1"}},
			{"replay", replay, []string{"a@127.0.0.1: hello-1", "a@127.0.0.1: secret-2"}},
		} {
			t.Run(c.name+"/"+tc.name, func(t *testing.T) {
				if c.feat == featSealAESGCM && !hasAESHardware() {
					t.Skip("no AES hardware")
				}
				defer func(f uint64) { sealFeatures = f }(sealFeatures)
				sealFeatures = c.feat
				relayAttack(t, tc.a, tc.want)
			})
		}
	}
}

func relayAttack(t *testing.T, a attack, want []string) {
	long := func(c *Config) { c.LinkTimeout = 30 * time.Second } // no ticks during the test
	h := &countHandler{}
	b, rb := startNode(t, "b@127.0.0.1", func(c *Config) { long(c); c.Logger = slog.New(h) })
	r := newMITM(t, b.Addr())
	x, rx := startNode(t, "a@127.0.0.1", long)
	x.Connect(b.Name(), r.addr())
	rb.waitEvent(t, 10*time.Second, NodeUp, x.Name(), "")
	rx.waitEvent(t, 10*time.Second, NodeUp, b.Name(), "")
	ctx := context.Background()
	if err := x.Send(ctx, b.Name(), []byte("hello-1")); err != nil {
		t.Fatal(err)
	}
	rb.wait(t, 10*time.Second, "hello-1", func(r *recorder) bool { return len(r.msgs) == 1 })

	fired := r.arm(a)
	if err := x.Send(ctx, b.Name(), []byte("secret-2")); err != nil {
		t.Fatal(err)
	}
	<-fired
	rb.waitEvent(t, 10*time.Second, NodeDown, x.Name(), ReasonClosed)
	eventually(t, 10*time.Second, "tampering counted", func() bool { return b.Stats().ProtocolErrors["tampered"] == 1 })
	if n := h.count("mesh: protocol error, closing link"); n != 1 {
		t.Errorf("%d protocol error warnings, want 1", n)
	}
	x.Close() // no redial through the relay
	if got := rb.messages(); !slices.Equal(got, want) {
		t.Fatalf("b accepted %q, want %q", got, want)
	}
	if st := b.Stats(); len(nonZero(st.ProtocolErrors)) != 1 {
		t.Fatalf("ProtocolErrors %v", st.ProtocolErrors)
	}
	r.mu.Lock()
	seen := r.seen.Bytes()
	leak := bytes.Contains(seen, []byte("hello-1")) || bytes.Contains(seen, []byte("secret-2"))
	r.mu.Unlock()
	if leak {
		t.Fatal("a message crossed the relay in plaintext")
	}
}

// tlsRelay terminates TLS on both sides with its own certificate, as a
// relay with a TLS key of its own does, and forwards what is inside.
type tlsRelay struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	cs   []net.Conn
	done bool
}

func newTLSRelay(t *testing.T, target string, cert tls.Certificate) *tlsRelay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &tlsRelay{ln: ln}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			sc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
			cc := tls.Client(d, &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true,
				MinVersion: tls.VersionTLS13})
			r.mu.Lock()
			if r.done {
				r.mu.Unlock()
				c.Close()
				d.Close()
				return
			}
			r.cs = append(r.cs, c, d)
			r.mu.Unlock()
			r.wg.Add(2)
			go func() { defer r.wg.Done(); io.Copy(cc, sc); cc.Close() }()
			go func() { defer r.wg.Done(); io.Copy(sc, cc); sc.Close() }()
		}
	}()
	t.Cleanup(func() {
		r.mu.Lock()
		r.done = true
		ln.Close()
		for _, c := range r.cs {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// TLS without a CA (the CLI's --tls-cert/--tls-key alone): certificates are
// not verified, so a relay can terminate TLS on both sides. The cookie
// proof is bound to the TLS session (exporter), so it fails at the
// handshake; the same nodes link through a relay that only forwards bytes.
func TestRelayTLSWithoutCA(t *testing.T) {
	p := newPKI(t)
	noCA := func(n string) func(*Config) {
		return func(c *Config) {
			c.TLS = &tls.Config{Certificates: []tls.Certificate{p.leaf(t, n)}, InsecureSkipVerify: true,
				MinVersion: tls.VersionTLS13}
		}
	}
	b, rb := startNode(t, "b@127.0.0.1", noCA("b"))

	// Control: a relay that forwards bytes is invisible.
	fwd := newProxy(t, b.Addr())
	x, rx := startNode(t, "a@127.0.0.1", noCA("a"))
	x.Connect(b.Name(), fwd.Addr())
	rb.waitEvent(t, 10*time.Second, NodeUp, x.Name(), "")
	rx.waitEvent(t, 10*time.Second, NodeUp, b.Name(), "")
	x.Close()
	rb.waitEvent(t, 10*time.Second, NodeDown, x.Name(), ReasonLeft)
	if len(rx.snapshot()) != 2 {
		t.Fatalf("control: %s", fmtEvents(rx.snapshot()))
	}

	// The terminating relay: TLS completes on both sides, the cookie
	// handshake does not.
	other := newPKI(t)
	r := newTLSRelay(t, b.Addr(), other.leaf(t, "relay"))
	nb := len(rb.snapshot())
	y, ry := startNode(t, "c@127.0.0.1", noCA("c"))
	y.Connect(b.Name(), r.ln.Addr().String())
	eventually(t, 10*time.Second, "bad_cookie on both sides", func() bool {
		return b.Stats().HandshakeFailures["bad_cookie"] >= 2 && y.Stats().HandshakeFailures["bad_cookie"] >= 2
	})
	y.Close()
	if len(ry.snapshot()) != 0 || len(rb.snapshot()) != nb {
		t.Fatalf("events through a TLS-terminating relay: c %s b %s", fmtEvents(ry.snapshot()), fmtEvents(rb.snapshot()))
	}
	if n := b.Stats().HandshakeFailures["tls"]; n != 0 {
		t.Fatalf("TLS itself failed %d times: the relay should pass TLS", n)
	}
}

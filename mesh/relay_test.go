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

// relay is the one TCP relay of the mesh tests; the pausable proxy, the
// tampering MITM and the TLS-terminating relay are each one of these with a
// pump of their own. It accepts on ln, dials target for each connection,
// and runs pump in one goroutine per direction. Close stops all it
// started. It takes no testing.TB, so that the netns helper process (a
// relay in a namespace of its own, netns_helper_test.go) runs the same code.
type relay struct {
	ln     net.Listener
	target string
	// setup, when set, is called with each accepted connection and its
	// dialled counterpart, and returns what the pumps use (TLS wrappers).
	setup func(client, server net.Conn) (net.Conn, net.Conn)
	// pump copies src to dst (nil: copyPump without a gate); fromDialer
	// says which direction.
	pump func(r *relay, dst, src net.Conn, fromDialer bool)
	done chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	conns  []net.Conn // raw connections, both sides
	closed bool
}

func startRelay(ln net.Listener, target string, setup func(c, d net.Conn) (net.Conn, net.Conn),
	pump func(r *relay, dst, src net.Conn, fromDialer bool)) *relay {
	if pump == nil {
		pump = func(r *relay, dst, src net.Conn, _ bool) { copyPump(dst, src, nil, r.done) }
	}
	r := &relay{ln: ln, target: target, setup: setup, pump: pump, done: make(chan struct{})}
	r.wg.Add(1)
	go r.acceptLoop()
	return r
}

// listenLoopback is a listener on 127.0.0.1:0 for a relay.
func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func (r *relay) Addr() string { return r.ln.Addr().String() }

func (r *relay) acceptLoop() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		d, err := net.DialTimeout("tcp", r.target, 5*time.Second)
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
		if r.setup != nil {
			c, d = r.setup(c, d)
		}
		r.wg.Add(2)
		go func() { defer r.wg.Done(); r.pump(r, d, c, true) }()
		go func() { defer r.wg.Done(); r.pump(r, c, d, false) }()
	}
}

// Kill resets every relayed connection.
func (r *relay) Kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}
	r.conns = nil
}

// Close stops accepting, closes every connection and waits for the pumps.
// It is idempotent.
func (r *relay) Close() {
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

// copyPump copies src to dst while g (nil: always) is open, and passes EOF
// on as a half-close. After an error it leaves dst alone: Kill resets both
// sides itself, and a graceful close racing with it would let a redial
// overtake the reset.
func copyPump(dst, src net.Conn, g *gate, done <-chan struct{}) {
	buf := make([]byte, 16<<10)
	for {
		if !g.wait(done) {
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			if !g.wait(done) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !g.wait(done) {
				return
			}
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == io.EOF {
				cw.CloseWrite()
			}
			return
		}
	}
}

// --- the proxy: a relay whose directions can be paused or reset ---

type gate struct {
	mu   sync.Mutex
	open chan struct{} // closed while passable
}

func newGate() *gate {
	g := &gate{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *gate) pause() {
	g.mu.Lock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
	g.mu.Unlock()
}

// wait blocks while g is paused; false when done closes first. A nil gate
// is always open.
func (g *gate) wait(done <-chan struct{}) bool {
	if g == nil {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-done:
		return false
	}
}

type proxy struct {
	*relay
	up   *gate // client -> target
	down *gate // target -> client
}

// newProxy relays 127.0.0.1:0 to target until the end of the test.
func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	return newProxyOn(t, listenLoopback(t), target)
}

// newProxyOn relays ln to target until the end of the test.
func newProxyOn(t testing.TB, ln net.Listener, target string) *proxy {
	t.Helper()
	p := &proxy{up: newGate(), down: newGate()}
	p.relay = startRelay(ln, target, func(c, d net.Conn) (net.Conn, net.Conn) {
		// A small receive buffer so a paused direction backs up quickly.
		c.(*net.TCPConn).SetReadBuffer(32 << 10)
		return c, d
	}, func(r *relay, dst, src net.Conn, fromDialer bool) {
		g := p.down
		if fromDialer {
			g = p.up
		}
		copyPump(dst, src, g, r.done)
	})
	t.Cleanup(p.Close)
	return p
}

// Blackhole stops forwarding (and reading) in both directions without
// closing anything.
func (p *proxy) Blackhole() { p.up.pause(); p.down.pause() }

// --- the MITM: a relay that tampers with sealed records ---

// attack is what the MITM does to the next record from the dialer.
type attack int

const (
	forward attack = iota
	flipBit        // flip one bit of the record (a sealed message frame)
	inject         // send a forged record of the same length before it
	replay         // forward it, then send it again
)

// mitm is an active on-path attacker between a dialer and an acceptor: it
// relays the handshake unchanged, then parses the sealed records and
// tampers with the next one from the dialer when armed. It records every
// byte it relays, to check that no plaintext crosses it.
type mitm struct {
	*relay

	mu      sync.Mutex
	armed   attack
	fired   chan struct{} // closed when the armed attack was carried out
	seen    bytes.Buffer  // all relayed bytes, both directions
	records int           // records relayed from the dialer
}

func startMITM(ln net.Listener, target string) *mitm {
	r := &mitm{}
	r.relay = startRelay(ln, target, nil, r.pump)
	return r
}

// newMITM relays 127.0.0.1:0 to target until the end of the test.
func newMITM(t *testing.T, target string) *mitm {
	t.Helper()
	r := startMITM(listenLoopback(t), target)
	t.Cleanup(r.Close)
	return r
}

// arm makes the relay carry out a on the next record from the dialer.
func (r *mitm) arm(a attack) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.armed, r.fired = a, make(chan struct{})
	return r.fired
}

// leaked reports whether any of the strings crossed the relay in clear.
func (r *mitm) leaked(ss ...string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range ss {
		if bytes.Contains(r.seen.Bytes(), []byte(s)) {
			return true
		}
	}
	return false
}

// pump relays src to dst: the preamble and two handshake frames as they
// are, then record by record.
func (r *mitm) pump(_ *relay, dst, src net.Conn, fromDialer bool) {
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

// --- the TLS-terminating relay ---

// startTLSRelay terminates TLS on both sides with its own certificate, as
// a relay with a TLS key of its own does, and forwards what is inside.
func startTLSRelay(ln net.Listener, target string, cert tls.Certificate) *relay {
	return startRelay(ln, target, func(c, d net.Conn) (net.Conn, net.Conn) {
		return tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}),
			tls.Client(d, &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true,
				MinVersion: tls.VersionTLS13})
	}, nil)
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
				// Restored by a cleanup registered before the nodes'
				// cleanups, so it runs after they are closed: a handshake
				// still in flight (a redial through the relay) reads
				// sealFeatures.
				f := sealFeatures
				t.Cleanup(func() { sealFeatures = f })
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
	x.Connect(b.Name(), r.Addr())
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
	if r.leaked("hello-1", "secret-2") {
		t.Fatal("a message crossed the relay in plaintext")
	}
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
	r := startTLSRelay(listenLoopback(t), b.Addr(), other.leaf(t, "relay"))
	t.Cleanup(r.Close)
	nb := len(rb.snapshot())
	y, ry := startNode(t, "c@127.0.0.1", noCA("c"))
	y.Connect(b.Name(), r.Addr())
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

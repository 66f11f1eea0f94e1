package mesh

import (
	"context"
	"crypto/tls"
	"testing"
	"time"
)

func TestTLS(t *testing.T) {
	p := newPKI(t)
	a, ra := startNode(t, "a@127.0.0.1", func(c *Config) { c.TLS = p.mtls(p.leaf(t, "a")) })
	b, rb := startNode(t, "b@127.0.0.1", func(c *Config) { c.TLS = p.mtls(p.leaf(t, "b")) })
	a.Connect(b.Name(), b.Addr())
	ra.waitEvent(t, 10*time.Second, NodeUp, b.Name(), "")
	rb.waitEvent(t, 10*time.Second, NodeUp, a.Name(), "")
	if err := a.Send(context.Background(), b.Name(), []byte("over tls")); err != nil {
		t.Fatal(err)
	}
	rb.wait(t, 10*time.Second, "message", func(r *recorder) bool { return len(r.msgs) == 1 })
	if got := rb.messages()[0]; got != a.Name()+": over tls" {
		t.Fatalf("got %q", got)
	}
	for _, m := range []*Mesh{a, b} {
		m.mu.RLock()
		for _, l := range m.links {
			tc, ok := l.conn.(*tls.Conn)
			if !ok {
				t.Fatalf("%s: link is not TLS", m.Name())
			}
			if st := tc.ConnectionState(); !st.HandshakeComplete || len(st.PeerCertificates) == 0 {
				t.Fatalf("%s: TLS state %+v", m.Name(), st)
			}
		}
		m.mu.RUnlock()
	}

	// A silent client is bounded by the handshake deadline under TLS too.
	s, _ := startNode(t, "s@127.0.0.1", func(c *Config) {
		c.TLS = p.mtls(p.leaf(t, "s"))
		c.HandshakeTimeout = 300 * time.Millisecond
	})
	expectClosed(t, dial(t, s.Addr()), 5*time.Second)
	eventually(t, 5*time.Second, "timeout counted", func() bool { return s.Stats().HandshakeFailures["timeout"] == 1 })

	for _, tc := range []struct {
		name   string
		mod    func(*Config)
		reason string
	}{
		{"client without certificate", func(c *Config) {
			c.TLS = &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS13}
		}, "tls"},
		{"untrusted certificate", func(c *Config) {
			other := newPKI(t)
			c.TLS = other.mtls(other.leaf(t, "x"))
			c.TLS.RootCAs = p.pool // trusts a, but a does not trust it
		}, "tls"},
		{"plain TCP", nil, "tls"},
		{"valid certificate, wrong cookie", func(c *Config) {
			c.TLS = p.mtls(p.leaf(t, "x"))
			c.Cookie = "wrong"
		}, "bad_cookie"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := a.Stats().HandshakeFailures[tc.reason]
			nA := len(ra.snapshot())
			x, rx := startNode(t, "x@127.0.0.1", tc.mod)
			x.Connect(a.Name(), a.Addr())
			eventually(t, 10*time.Second, tc.reason+" counted", func() bool {
				return a.Stats().HandshakeFailures[tc.reason] > before
			})
			x.Close()
			if len(ra.snapshot()) != nA || len(rx.snapshot()) != 0 {
				t.Fatalf("events: a %s\nx %s", fmtEvents(ra.snapshot()), fmtEvents(rx.snapshot()))
			}
		})
	}
}

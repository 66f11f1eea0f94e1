package mesh

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(netnsHelperEnv) == "1" {
		// Re-executed inside a namespace by a netns test: a node or a relay.
		os.Exit(runNetnsHelper(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

const testCookie = "test-cookie"

// recorder collects events and messages and lets tests wait on them.
type recorder struct {
	mu      sync.Mutex
	events  []Event
	msgs    []string // "from: payload"
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) onEvent(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *recorder) onMessage(from string, p []byte) {
	r.mu.Lock()
	r.msgs = append(r.msgs, from+": "+string(p))
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *recorder) snapshot() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

// wait blocks until cond (called with the lock held) is true.
func (r *recorder) wait(t testing.TB, timeout time.Duration, what string, cond func(r *recorder) bool) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		r.mu.Lock()
		ok := cond(r)
		ch := r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("timed out after %v waiting for %s; events: %s", timeout, what, fmtEvents(r.snapshot()))
		}
	}
}

// has reports whether an event matching kind, node and reason was recorded.
func (r *recorder) has(kind EventKind, node string, reason Reason) bool {
	for _, e := range r.events {
		if e.Kind == kind && e.Node == node && (reason == "" || e.Reason == reason) {
			return true
		}
	}
	return false
}

func (r *recorder) waitEvent(t testing.TB, timeout time.Duration, kind EventKind, node string, reason Reason) {
	t.Helper()
	r.wait(t, timeout, fmt.Sprintf("%v %s %s", kind, node, reason), func(r *recorder) bool {
		return r.has(kind, node, reason)
	})
}

func fmtEvents(es []Event) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "\n\t%v %s inc=%x %s", e.Kind, e.Node, e.Incarnation, e.Reason)
	}
	return b.String()
}

// ev is an event without the time and address, for exact comparisons.
type ev struct {
	Kind   EventKind
	Node   string
	Inc    uint64
	Reason Reason
}

func strip(es []Event) []ev {
	out := make([]ev, len(es))
	for i, e := range es {
		out[i] = ev{e.Kind, e.Node, e.Incarnation, e.Reason}
	}
	return out
}

func testLogger() *slog.Logger {
	if os.Getenv("MESH_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startNode starts a mesh on 127.0.0.1:0 that records into a new recorder
// and is closed at the end of the test.
func startNode(t testing.TB, name string, mod func(*Config)) (*Mesh, *recorder) {
	t.Helper()
	r := newRecorder()
	cfg := Config{Name: name, Cookie: testCookie, Listen: "127.0.0.1:0",
		OnEvent: r.onEvent, OnMessage: r.onMessage, Logger: testLogger()}
	if mod != nil {
		mod(&cfg)
	}
	m, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", name, err)
	}
	t.Cleanup(func() { m.Close() })
	return m, r
}

// eventually polls cond until it is true or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// quiet reports that no dial goroutine and no inbound handshake runs.
func (m *Mesh) quiet() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, ps := range m.peers {
		if ps.dialing {
			return false
		}
	}
	return m.pending.Load() == 0
}

// currentLink is m's link to name now (nil if none).
func currentLink(m *Mesh, name string) *link {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.links[name]
}

func linkedTo(m *Mesh, names ...string) bool {
	ls := m.Links()
	if len(ls) != len(names) {
		return false
	}
	for i, l := range ls {
		if l.Node != names[i] {
			return false
		}
	}
	return true
}

// --- in-memory PKI for TLS tests ---

type pki struct {
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

// fatalTB is what the PKI helpers need of a testing.TB; the netns helper
// process (no testing.T) passes exitOnFatal.
type fatalTB interface {
	Helper()
	Fatal(args ...any)
}

func newPKI(t fatalTB) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mesh test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &pki{ca: ca, key: key, pool: pool}
}

// leaf issues a certificate for 127.0.0.1 usable as server and client.
func (p *pki) leaf(t fatalTB, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// mtls is a config that serves cert, requires and verifies client
// certificates and verifies servers against the CA.
func (p *pki) mtls(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      p.pool,
		ClientCAs:    p.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

// nonZero returns the entries of m that are not 0.
func nonZero(m map[string]uint64) map[string]uint64 {
	out := make(map[string]uint64)
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

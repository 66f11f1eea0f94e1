package dnsdisc_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/dnsdisc"
	"github.com/macula-io/cluster/internal/disctest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// zone is a mutable in-memory DNS zone served by a real miekg/dns server.
type zone struct {
	mu      sync.Mutex
	rrs     map[string][]dns.RR // lower-case FQDN -> records
	mute    bool                // true: read queries, never answer
	queries atomic.Int64
}

func (z *zone) set(t *testing.T, name string, rrs ...string) {
	t.Helper()
	var list []dns.RR
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("NewRR(%q): %v", s, err)
		}
		list = append(list, rr)
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if len(list) == 0 {
		delete(z.rrs, strings.ToLower(name))
		return
	}
	z.rrs[strings.ToLower(name)] = list
}

func (z *zone) setMute(m bool) {
	z.mu.Lock()
	z.mute = m
	z.mu.Unlock()
}

func (z *zone) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	z.queries.Add(1)
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.mute || len(req.Question) != 1 {
		return
	}
	q := req.Question[0]
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	rrs, ok := z.rrs[strings.ToLower(q.Name)]
	if !ok {
		m.Rcode = dns.RcodeNameError
	}
	for _, rr := range rrs {
		if rr.Header().Rrtype == q.Qtype {
			m.Answer = append(m.Answer, rr)
		}
	}
	_ = w.WriteMsg(m)
}

// startZone serves a zone on 127.0.0.1:0 UDP and returns it and its address.
func startZone(t *testing.T) (*zone, string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	z := &zone{rrs: make(map[string][]dns.RR)}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, Handler: z, NotifyStartedFunc: func() { close(started) }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.ActivateAndServe()
	}()
	<-started
	t.Cleanup(func() {
		_ = srv.Shutdown()
		<-done
	})
	return z, pc.LocalAddr().String()
}

// silentServer reads queries and never answers.
func silentServer(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc.LocalAddr().String()
}

// reports records what a strategy tells its sink (Found, Gone).
type reports struct {
	*disctest.Recorder
}

func newReports() *reports { return &reports{disctest.New()} }

// waitFor waits until the peers found and not gone are exactly want
// (sorted by address).
func (r *reports) waitFor(t *testing.T, want ...string) {
	t.Helper()
	r.Wait(t, 10*time.Second, fmt.Sprintf("peers %v", want), func(ps []discovery.Peer) bool {
		return strings.Join(nodes(ps), ",") == strings.Join(want, ",")
	})
}

// none fails if the sink hears anything within d.
func (r *reports) none(t *testing.T, d time.Duration) {
	t.Helper()
	n := len(r.Calls())
	time.Sleep(d)
	if calls := r.Calls(); len(calls) != n {
		t.Fatalf("unexpected sink calls %q", calls[n:])
	}
}

// nodes lists peers as Peer.String: the address, as dnsdisc reports
// addresses only.
func nodes(ps []discovery.Peer) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func start(t *testing.T, cfg dnsdisc.Config, self discovery.Peer) (*dnsdisc.Strategy, *reports) {
	t.Helper()
	s := dnsdisc.NewStrategy(cfg)
	r := newReports()
	if err := s.Start(context.Background(), self, r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, r
}

var self1 = discovery.Peer{Name: "macula@127.0.0.1", Addr: "127.0.0.1:9100"}

func TestARecordsAppearAndDisappear(t *testing.T) {
	z, addr := startZone(t)
	z.set(t, "peers.test.",
		"peers.test. 5 IN A 127.0.0.1", // self: left out
		"peers.test. 5 IN A 127.0.0.2",
		"peers.test. 5 IN A 127.0.0.3")
	s, r := start(t, dnsdisc.Config{Name: "peers.test", Server: addr, Interval: time.Hour}, self1)
	r.waitFor(t, "127.0.0.2:9100", "127.0.0.3:9100")

	got := s.Peers()
	want := discovery.Peer{Addr: "127.0.0.2:9100"} // address only: the mesh learns the name

	if len(got) != 2 || got[0] != want {
		t.Fatalf("Peers() = %+v, want first %+v", got, want)
	}

	z.set(t, "peers.test.",
		"peers.test. 5 IN A 127.0.0.2",
		"peers.test. 5 IN A 127.0.0.3",
		"peers.test. 5 IN A 127.0.0.4")
	s.Refresh()
	r.waitFor(t, "127.0.0.2:9100", "127.0.0.3:9100", "127.0.0.4:9100")

	// Same answer: no sink call.
	s.Refresh()
	r.none(t, 300*time.Millisecond)

	z.set(t, "peers.test.", "peers.test. 5 IN A 127.0.0.4")
	s.Refresh()
	r.waitFor(t, "127.0.0.4:9100")

	// NXDOMAIN is an answer: everyone is gone.
	z.set(t, "peers.test.")
	s.Refresh()
	r.waitFor(t)
	if st := s.Stats(); st.Failures != 0 || st.Peers != 0 || st.Reports != 4 {
		t.Fatalf("stats %+v", st)
	}
	// Each change once: Found when an address appears, Gone when it goes.
	calls := r.Calls()
	slices.Sort(calls)
	wantCalls := []string{"found 127.0.0.2:9100", "found 127.0.0.3:9100", "found 127.0.0.4:9100",
		"gone 127.0.0.2:9100", "gone 127.0.0.3:9100", "gone 127.0.0.4:9100"}
	if !slices.Equal(calls, wantCalls) {
		t.Fatalf("sink calls %q, want %q", calls, wantCalls)
	}
	if st := s.DiscoveryStats(); st.Peers != 0 || st.Counters["reports"] != 4 || st.Counters["lookup_failures"] != 0 ||
		st.Counters["rounds"] < 5 || st.Rejected == nil {
		t.Fatalf("DiscoveryStats %+v", st)
	}
}

func TestAAAAAndPortAndBasename(t *testing.T) {
	z, addr := startZone(t)
	z.set(t, "v6.test.",
		"v6.test. 5 IN AAAA ::1",
		"v6.test. 5 IN AAAA ::ffff:127.0.0.5", // IPv4-mapped: reported as IPv4
		"v6.test. 5 IN A 127.0.0.6")
	cfg, err := dnsdisc.ConfigFromEnv(dnsdisc.Config{Server: addr, Interval: time.Hour},
		mapEnv{"CLUSTER_DNS_NAME": "v6.test", "CLUSTER_DNS_PORT": "9300", "CLUSTER_DNS_BASENAME": "api"}.get)
	if err != nil {
		t.Fatal(err)
	}
	s, r := start(t, cfg, self1)
	// The basename is accepted and ignored: peers are addresses only.
	r.waitFor(t, "127.0.0.5:9300", "127.0.0.6:9300", "[::1]:9300")
	got := s.Peers()
	want := []discovery.Peer{{Addr: "127.0.0.5:9300"}, {Addr: "127.0.0.6:9300"}, {Addr: "[::1]:9300"}}
	if !slices.Equal(got, want) {
		t.Fatalf("Peers() = %+v, want %+v", got, want)
	}
}

func TestSRV(t *testing.T) {
	z, addr := startZone(t)
	z.set(t, "_macula._tcp.peers.test.",
		"_macula._tcp.peers.test. 5 IN SRV 0 0 9101 n1.peers.test.",
		"_macula._tcp.peers.test. 5 IN SRV 0 0 9102 n2.peers.test.",
		"_macula._tcp.peers.test. 5 IN SRV 0 0 9100 self.peers.test.")
	z.set(t, "n1.peers.test.", "n1.peers.test. 5 IN A 127.0.0.2")
	z.set(t, "n2.peers.test.", "n2.peers.test. 5 IN A 127.0.0.3", "n2.peers.test. 5 IN AAAA ::1")
	z.set(t, "self.peers.test.", "self.peers.test. 5 IN A 127.0.0.1")

	// Mode "" with a name starting with "_" is SRV.
	s, r := start(t, dnsdisc.Config{Name: "_macula._tcp.peers.test.", Server: addr, Interval: time.Hour}, self1)
	r.waitFor(t, "127.0.0.2:9101", "127.0.0.3:9102", "[::1]:9102")

	// The port of n2 changes.
	z.set(t, "_macula._tcp.peers.test.",
		"_macula._tcp.peers.test. 5 IN SRV 0 0 9101 n1.peers.test.",
		"_macula._tcp.peers.test. 5 IN SRV 0 0 9200 n2.peers.test.")
	s.Refresh()
	r.waitFor(t, "127.0.0.2:9101", "127.0.0.3:9200", "[::1]:9200")

	// A target that no longer resolves drops out; the rest stays.
	z.set(t, "n2.peers.test.")
	s.Refresh()
	r.waitFor(t, "127.0.0.2:9101")

	// The SRV name goes away.
	z.set(t, "_macula._tcp.peers.test.")
	s.Refresh()
	r.waitFor(t)
}

func TestSRVModeForced(t *testing.T) {
	z, addr := startZone(t)
	z.set(t, "svc.test.", "svc.test. 5 IN SRV 0 0 9500 n9.test.", "svc.test. 5 IN SRV 0 0 9501 .")
	z.set(t, "n9.test.", "n9.test. 5 IN A 127.0.0.9")
	_, r := start(t, dnsdisc.Config{Name: "svc.test", Mode: "srv", Server: addr, Interval: time.Hour}, self1)
	r.waitFor(t, "127.0.0.9:9500")
}

// logCount counts log records by level.
type logCount struct {
	mu     sync.Mutex
	byLvl  map[slog.Level]int
	byMsgs []string
}

func (h *logCount) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCount) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.byLvl[r.Level]++
	h.byMsgs = append(h.byMsgs, r.Level.String()+" "+r.Message)
	return nil
}
func (h *logCount) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logCount) WithGroup(string) slog.Handler      { return h }
func (h *logCount) count(l slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.byLvl[l]
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServerStopsAnswering(t *testing.T) {
	z, addr := startZone(t)
	z.set(t, "peers.test.", "peers.test. 5 IN A 127.0.0.2")
	h := &logCount{byLvl: map[slog.Level]int{}}
	s, r := start(t, dnsdisc.Config{Name: "peers.test", Server: addr, Interval: 20 * time.Millisecond,
		Timeout: 100 * time.Millisecond, Logger: slog.New(h)}, self1)
	r.waitFor(t, "127.0.0.2:9100")
	n := len(r.Calls())

	z.setMute(true)
	waitUntil(t, "3 failed lookups", func() bool { return s.Stats().Failures >= 3 })
	if n := h.count(slog.LevelWarn); n != 1 {
		t.Fatalf("%d warnings while failing, want 1: %v", n, h.byMsgs)
	}
	if got := s.Peers(); len(got) != 1 {
		t.Fatalf("last good answer not kept: %v", got)
	}
	if calls := r.Calls(); len(calls) != n {
		t.Fatalf("sink calls while failing: %q", calls[n:])
	}

	z.setMute(false)
	// Changes are logged at Debug; the recovery at Info.
	waitUntil(t, "recovery log", func() bool { return h.count(slog.LevelInfo) >= 1 })
	if n := h.count(slog.LevelWarn); n != 1 {
		t.Fatalf("%d warnings, want 1: %v", n, h.byMsgs)
	}
	// Still the same set: nothing reported.
	if n := h.count(slog.LevelInfo); n != 1 {
		t.Fatalf("%d info records, want 1 (recovered): %v", n, h.byMsgs)
	}
	r.none(t, 100*time.Millisecond)
}

func TestSilentServer(t *testing.T) {
	addr := silentServer(t)
	h := &logCount{byLvl: map[slog.Level]int{}}
	s, r := start(t, dnsdisc.Config{Name: "_macula._tcp.peers.test", Server: addr, Interval: 20 * time.Millisecond,
		Timeout: 50 * time.Millisecond, Logger: slog.New(h)}, self1)
	waitUntil(t, "3 failed lookups", func() bool { return s.Stats().Failures >= 3 })
	if n := h.count(slog.LevelWarn); n != 1 {
		t.Fatalf("%d warnings, want 1: %v", n, h.byMsgs)
	}
	r.none(t, 50*time.Millisecond)
	// Close returns promptly even with lookups in flight.
	t0 := time.Now()
	s.Close()
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
}

func TestLifecycle(t *testing.T) {
	if err := dnsdisc.NewStrategy(dnsdisc.Config{}).Start(context.Background(), self1, disctest.New()); !errors.Is(err, dnsdisc.ErrNoName) {
		t.Fatalf("no name: %v", err)
	}
	for _, cfg := range []dnsdisc.Config{
		{Name: "a.test", Mode: "mx"},
		{Name: "a.test", Port: 70000},
		{Name: "a.test", Server: "1.2.3.4:x"},
		{Name: "a.test", Basename: "a@b"},
		{Name: "a..test"},
		{Name: "a.test", Interval: -1},
	} {
		if err := dnsdisc.NewStrategy(cfg).Start(context.Background(), self1, disctest.New()); !errors.Is(err, dnsdisc.ErrInvalidConfig) {
			t.Errorf("%+v: %v, want ErrInvalidConfig", cfg, err)
		}
	}

	_, addr := startZone(t)
	s := dnsdisc.NewStrategy(dnsdisc.Config{Name: "x.test", Server: addr})
	if s.Name() != "dns" {
		t.Fatal(s.Name())
	}
	if err := s.Start(context.Background(), self1, disctest.New()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background(), self1, disctest.New()); !errors.Is(err, dnsdisc.ErrStarted) {
		t.Fatalf("second Start: %v", err)
	}
	s.Refresh()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.Refresh() // no-op after Close
	if err := s.Start(context.Background(), self1, disctest.New()); !errors.Is(err, dnsdisc.ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
	// Close before Start is fine, and Start afterwards is refused.
	s2 := dnsdisc.NewStrategy(dnsdisc.Config{Name: "x.test"})
	s2.Close()
	if err := s2.Start(context.Background(), self1, disctest.New()); !errors.Is(err, dnsdisc.ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}
}

type mapEnv map[string]string

func (m mapEnv) get(k string) string { return m[k] }

func TestConfigFromEnv(t *testing.T) {
	env := mapEnv{
		"CLUSTER_DNS_NAME":     "peers.test",
		"CLUSTER_DNS_SERVER":   "127.0.0.1",
		"CLUSTER_DNS_PORT":     "9200",
		"CLUSTER_DNS_INTERVAL": "250",
		"CLUSTER_DNS_MODE":     "SRV",
		"CLUSTER_DNS_BASENAME": "api",
	}
	got, err := dnsdisc.ConfigFromEnv(dnsdisc.Config{}, env.get)
	if err != nil {
		t.Fatal(err)
	}
	want := dnsdisc.Config{Name: "peers.test", Server: "127.0.0.1:53", Port: 9200,
		Interval: 250 * time.Millisecond, Mode: "srv", Basename: "api"}
	if got != want {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}

	// Options win over the environment.
	base := dnsdisc.Config{Name: "opt.test", Server: "[::1]:5300", Port: 1, Interval: time.Second, Mode: "a", Basename: "b"}
	got, err = dnsdisc.ConfigFromEnv(base, env.get)
	if err != nil || got != base {
		t.Fatalf("got %+v, %v; want %+v", got, err, base)
	}

	got, err = dnsdisc.ConfigFromEnv(dnsdisc.Config{}, mapEnv{"CLUSTER_DNS_INTERVAL": "2s"}.get)
	if err != nil || got.Interval != 2*time.Second {
		t.Fatalf("2s: %+v %v", got, err)
	}

	for k, v := range map[string]string{
		"CLUSTER_DNS_NAME":     "a b",
		"CLUSTER_DNS_SERVER":   "1.2.3.4:99999",
		"CLUSTER_DNS_PORT":     "0",
		"CLUSTER_DNS_INTERVAL": "-5",
		"CLUSTER_DNS_MODE":     "mx",
		"CLUSTER_DNS_BASENAME": "a@b",
	} {
		_, err := dnsdisc.ConfigFromEnv(dnsdisc.Config{}, mapEnv{k: v}.get)
		if !errors.Is(err, dnsdisc.ErrInvalidConfig) || !strings.Contains(err.Error(), k) || !strings.Contains(err.Error(), v) {
			t.Errorf("%s=%q: %v", k, v, err)
		}
	}
}

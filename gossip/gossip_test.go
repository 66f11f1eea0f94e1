package gossip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/internal/disctest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Test timing: short interval and expiry, generous deadlines.
const (
	tInterval = 50 * time.Millisecond
	tExpiry   = 400 * time.Millisecond
	deadline  = 10 * time.Second
)

// freePort picks a free UDP port: bind 127.0.0.1:0, take the port, close.
func freePort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// EventKind, Event and recorder adapt the discovery.Sink calls (Found,
// Gone) to the event shape these tests were written against.
type EventKind int

const (
	Discovered EventKind = iota + 1 // a Found call
	Lost                            // a Gone call
)

func (k EventKind) String() string {
	switch k {
	case Discovered:
		return "discovered"
	case Lost:
		return "lost"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one sink call; Node is the peer as a wire node field
// ("name@host:port", or "name@host" when it cannot be dialled).
type Event struct {
	Kind EventKind
	Peer discovery.Peer
	Node string
}

// recorder is a discovery.Sink collecting events; it wakes waiters on
// every call.
type recorder struct {
	mu      sync.Mutex
	events  []Event
	changed chan struct{}
}

var _ discovery.Sink = (*recorder)(nil)

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) Found(p discovery.Peer) { r.on(Discovered, p) }
func (r *recorder) Gone(p discovery.Peer)  { r.on(Lost, p) }

func (r *recorder) on(kind EventKind, p discovery.Peer) {
	r.mu.Lock()
	r.events = append(r.events, Event{Kind: kind, Peer: p, Node: discovery.FormatNode(p.Name, p.Addr)})
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

func (r *recorder) snapshot() ([]Event, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events), r.changed
}

// wait blocks until cond holds for the events so far, or fails the test.
func (r *recorder) wait(t testing.TB, what string, cond func([]Event) bool) {
	t.Helper()
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	for {
		evs, ch := r.snapshot()
		if cond(evs) {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("timeout waiting for %s; events: %v", what, evs)
		}
	}
}

// has reports whether evs contains kind for node.
func has(evs []Event, kind EventKind, node string) bool {
	return slices.ContainsFunc(evs, func(e Event) bool { return e.Kind == kind && e.Node == node })
}

// eventually polls cond (for counters, which have no event) until it holds
// or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timeout waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logCapture is a slog handler recording warnings.
type logCapture struct {
	mu    sync.Mutex
	warns []string
}

func (l *logCapture) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelWarn }
func (l *logCapture) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	l.mu.Lock()
	l.warns = append(l.warns, b.String())
	l.mu.Unlock()
	return nil
}
func (l *logCapture) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCapture) WithGroup(string) slog.Handler      { return l }
func (l *logCapture) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, w := range l.warns {
		if strings.Contains(w, substr) {
			n++
		}
	}
	return n
}

func testLogger() *slog.Logger {
	if os.Getenv("GOSSIP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

type node struct {
	*Gossip
	rec  *recorder
	name string
}

// startNode starts gossip pinned to lo (network safety: never anything
// else) with test timing; mod may adjust the config.
func startNode(t testing.TB, port int, name string, mod func(*Config)) *node {
	t.Helper()
	rec := newRecorder()
	cfg := Config{
		Port: port, TTL: 1, Interval: tInterval, Expiry: tExpiry,
		Node: name + "@127.0.0.1:9100", Sink: rec, Logger: testLogger(),
		lookup: noLookup, // network safety: tests never ask the real resolver
	}
	if mod != nil {
		mod(&cfg)
	}
	cfg.Interfaces = []string{"lo"}
	g, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start %s: %v", name, err)
	}
	t.Cleanup(func() { g.Close() })
	return &node{Gossip: g, rec: rec, name: cfg.Node}
}

// noLookup resolves nothing: host names in test heartbeats never reach a
// real DNS server.
func noLookup(context.Context, string) ([]netip.Addr, error) {
	return nil, errors.New("no lookups in tests")
}

// rawSender sends test datagrams to the group on lo only.
type rawSender struct {
	pc   *ipv4.PacketConn
	c    net.PacketConn
	lo   *net.Interface
	port int
}

func newRawSender(t testing.TB, port int) *rawSender {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	pc := ipv4.NewPacketConn(c)
	if err := pc.SetMulticastTTL(1); err != nil {
		t.Fatal(err)
	}
	if err := pc.SetMulticastInterface(lo); err != nil {
		t.Fatal(err)
	}
	return &rawSender{pc: pc, c: c, lo: lo, port: port}
}

func (s *rawSender) sendTo(t testing.TB, dst string, pkt []byte) {
	t.Helper()
	ua := &net.UDPAddr{IP: net.ParseIP(dst), Port: s.port}
	if _, err := s.pc.WriteTo(pkt, &ipv4.ControlMessage{IfIndex: s.lo.Index}, ua); err != nil {
		t.Fatal(err)
	}
}

func (s *rawSender) send(t testing.TB, pkt []byte) { s.sendTo(t, DefaultGroup, pkt) }

func peerNodes(g *Gossip) []string {
	var out []string
	for _, e := range g.Peers() {
		out = append(out, e.Node)
	}
	return out
}

// waitMesh waits until every node has discovered every other.
func waitMesh(t *testing.T, nodes []*node) {
	t.Helper()
	for _, n := range nodes {
		for _, o := range nodes {
			if o != n {
				n.rec.wait(t, n.name+" discovers "+o.name, func(evs []Event) bool { return has(evs, Discovered, o.name) })
			}
		}
	}
}

func TestThreeNodesShareOnePort(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	var nodes []*node
	for i := range 3 {
		nodes = append(nodes, startNode(t, port, fmt.Sprintf("n%d", i), nil))
	}
	waitMesh(t, nodes)
	for _, n := range nodes {
		if got := n.Interfaces(); !slices.Equal(got, []string{"lo"}) {
			t.Errorf("Interfaces() = %v", got)
		}
		if n.Group() != fmt.Sprintf("230.1.1.251:%d", port) {
			t.Errorf("Group() = %q", n.Group())
		}
		for _, e := range n.Peers() {
			if e.From.Addr() != netip.MustParseAddr("127.0.0.1") || e.Addr != "127.0.0.1:9100" || e.FirstSeen.After(e.LastSeen) {
				t.Errorf("%s entry %+v", n.name, e)
			}
		}
	}
	eventually(t, "own heartbeats ignored", func() bool { return nodes[0].Stats().OwnIgnored > 0 })
	if slices.Contains(peerNodes(nodes[0].Gossip), nodes[0].name) {
		t.Error("own node in table")
	}
	nodes[2].Close()
	for _, n := range nodes[:2] {
		n.rec.wait(t, n.name+" loses n2", func(evs []Event) bool { return has(evs, Lost, nodes[2].name) })
		if slices.Contains(peerNodes(n.Gossip), nodes[2].name) {
			t.Errorf("%s still lists the closed node", n.name)
		}
	}
	st := nodes[0].Stats()
	if st.HeartbeatsSent == 0 || st.HeartbeatsReceived == 0 || st.Discovered < 2 || st.Lost < 1 || st.PacketsReceived == 0 {
		t.Errorf("stats %+v", st)
	}
	for _, r := range reasons {
		if _, ok := st.Rejected[r]; !ok {
			t.Errorf("Rejected lacks %q", r)
		}
	}
	if err := nodes[2].Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestWrongSecretNeverDiscovered(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	logs := &logCapture{}
	a := startNode(t, port, "a", func(c *Config) { c.Secrets = []string{"alpha"}; c.Logger = slog.New(logs) })
	b := startNode(t, port, "b", func(c *Config) { c.Secrets = []string{"beta"} })
	c := startNode(t, port, "c", nil) // unsigned
	eventually(t, "a rejects b and c", func() bool {
		st := a.Stats()
		return st.Rejected[ReasonBadSignature] >= 3 && st.Rejected[ReasonUnsigned] >= 3
	})
	eventually(t, "b rejects a", func() bool { return b.Stats().Rejected[ReasonBadSignature] >= 3 })
	if p := peerNodes(a.Gossip); len(p) != 0 {
		t.Errorf("a discovered %v", p)
	}
	if p := peerNodes(b.Gossip); len(p) != 0 {
		t.Errorf("b discovered %v", p)
	}
	// c has no secret: it accepts both signed nodes.
	waitMesh(t, []*node{c})
	c.rec.wait(t, "c discovers a and b", func(evs []Event) bool { return has(evs, Discovered, a.name) && has(evs, Discovered, b.name) })
	// Warnings name the source and are rate-limited per source (one per 10 s).
	if n := logs.count("from=127.0.0.1"); n != 1 {
		t.Errorf("%d warnings naming 127.0.0.1, want exactly 1 (rate-limited); all: %v", n, logs.warns)
	}
}

func TestSecretRotation(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	// Mid-rotation: restarted nodes have [new, old], the rest [old, new]:
	// each verifies the other's signing key.
	a := startNode(t, port, "a", func(c *Config) { c.Secrets = []string{"new", "old"} })
	b := startNode(t, port, "b", func(c *Config) { c.Secrets = []string{"old", "new"} })
	waitMesh(t, []*node{a, b})
	// A node still on [old] is heard by [new, old] (so the mesh link can be
	// dialled from that side) but cannot verify [new, old]'s heartbeats.
	o := startNode(t, port, "o", func(c *Config) { c.Secrets = []string{"old"} })
	a.rec.wait(t, "a discovers o", func(evs []Event) bool { return has(evs, Discovered, o.name) })
	o.rec.wait(t, "o discovers b", func(evs []Event) bool { return has(evs, Discovered, b.name) })
	eventually(t, "o rejects a", func() bool { return o.Stats().Rejected[ReasonBadSignature] > 0 })
	if slices.Contains(peerNodes(o.Gossip), a.name) {
		t.Error("[old] verified a heartbeat signed with new")
	}
}

func TestUnsignedAcceptedWithoutSecret(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	a := startNode(t, port, "a", nil)
	s := newRawSender(t, port)
	// An Erlang-style node without port: discovered, not dialable.
	s.send(t, []byte("MACULA_GOSSIP:erl@127.0.0.1"))
	s.send(t, vectors[0].golden) // signed, ignored HMAC (a@127.0.0.1)
	a.rec.wait(t, "raw nodes discovered", func(evs []Event) bool {
		return has(evs, Discovered, "erl@127.0.0.1") && has(evs, Discovered, "a@127.0.0.1")
	})
	for _, e := range a.Peers() {
		if e.Node == "erl@127.0.0.1" && (e.Dialable() || e.Name != "erl@127.0.0.1") {
			t.Errorf("erl entry %+v", e)
		}
	}
}

func TestWrongDestination(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	a := startNode(t, port, "a", nil)
	s := newRawSender(t, port)
	s.sendTo(t, "127.0.0.1", []byte("MACULA_GOSSIP:uni@127.0.0.1:1")) // unicast, not the group
	eventually(t, "wrong_destination counted", func() bool { return a.Stats().Rejected[ReasonWrongDestination] > 0 })
	if slices.Contains(peerNodes(a.Gossip), "uni@127.0.0.1:1") {
		t.Error("unicast heartbeat accepted")
	}
	// Junk is counted by reason.
	s.send(t, []byte("hello"))
	s.send(t, []byte("MACULA_GOSSIP:no node"))
	s.send(t, make([]byte, 1500))
	eventually(t, "junk counted", func() bool {
		r := a.Stats().Rejected
		return r[ReasonMalformed] > 0 && r[ReasonBadNode] > 0 && r[ReasonTooLong] > 0
	})
}

func TestReplaceSameNameNewPort(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	a := startNode(t, port, "a", func(c *Config) { c.Expiry = time.Minute })
	s := newRawSender(t, port)
	s.send(t, []byte("MACULA_GOSSIP:x@127.0.0.1:1000"))
	a.rec.wait(t, "x:1000", func(evs []Event) bool { return has(evs, Discovered, "x@127.0.0.1:1000") })
	s.send(t, []byte("MACULA_GOSSIP:x@127.0.0.1:2000"))
	a.rec.wait(t, "x:2000", func(evs []Event) bool { return has(evs, Discovered, "x@127.0.0.1:2000") })
	evs, _ := a.rec.snapshot()
	var seq []string
	for _, e := range evs {
		seq = append(seq, e.Kind.String()+" "+e.Node)
	}
	// The restarted node is a Found with the same Key (name@host): the sink
	// replaces the old address; no Gone in between.
	want := []string{"discovered x@127.0.0.1:1000", "discovered x@127.0.0.1:2000"}
	if !slices.Equal(seq, want) {
		t.Errorf("events %v, want %v", seq, want)
	}
	if k0, k1 := evs[0].Peer.Key(), evs[1].Peer.Key(); k0 != "x@127.0.0.1" || k1 != k0 {
		t.Errorf("keys %q, %q; want both x@127.0.0.1", k0, k1)
	}
	if st := a.Stats(); st.Discovered != 2 || st.Lost != 1 || st.Peers != 1 {
		t.Errorf("stats after replace %+v", st)
	}
	if p := peerNodes(a.Gossip); !slices.Equal(p, []string{"x@127.0.0.1:2000"}) {
		t.Errorf("peers %v", p)
	}
}

func TestTableBounded(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	const maxPeers, total = 8, 200
	a := startNode(t, port, "a", func(c *Config) { c.MaxPeers = maxPeers; c.Expiry = time.Minute })
	s := newRawSender(t, port)
	handled := func() uint64 { st := a.Stats(); return st.HeartbeatsReceived + st.Rejected[ReasonTableFull] }
	for i := 0; i < total; i += 20 {
		for j := i; j < i+20; j++ {
			s.send(t, fmt.Appendf(nil, "MACULA_GOSSIP:flood%d@127.0.0.1:1", j))
		}
		// Pace the flood so the socket buffer never overflows.
		eventually(t, "batch handled", func() bool { return handled() >= uint64(i+20) })
	}
	// Each newcomer evicts the least recently heard unverified node: the
	// table keeps the newest, never grows, and a flood never locks out.
	st := a.Stats()
	if st.Peers != maxPeers || len(a.Peers()) != maxPeers || st.Discovered != total || st.Evicted != total-maxPeers {
		t.Errorf("table: stats %+v, %d peers", st, len(a.Peers()))
	}
	if want := fmt.Sprintf("flood%d@127.0.0.1:1", total-1); !slices.Contains(peerNodes(a.Gossip), want) {
		t.Errorf("newest %s not in table %v", want, peerNodes(a.Gossip))
	}
	// A known node is still refreshed when the table is full.
	s.send(t, fmt.Appendf(nil, "MACULA_GOSSIP:flood%d@127.0.0.1:1", total-1))
	eventually(t, "refresh handled", func() bool { return a.Stats().HeartbeatsReceived > total })
}

func TestOwnHeartbeatsIgnored(t *testing.T) {
	t.Parallel()
	a := startNode(t, freePort(t), "a", nil)
	eventually(t, "own heartbeats heard", func() bool { return a.Stats().OwnIgnored >= 3 })
	if st := a.Stats(); len(a.Peers()) != 0 || st.Discovered != 0 || st.HeartbeatsReceived != 0 {
		t.Errorf("own heartbeats reached the table: %+v", st)
	}
}

// TestErlangTwin: a node with ErlangNode sends both fields and ignores both
// of its own; a listener reports the node once, with its address, and
// counts the portless twins.
func TestErlangTwin(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	a := startNode(t, port, "a", func(c *Config) { c.ErlangNode = "a@127.0.0.1" })
	b := startNode(t, port, "b", nil)
	eventually(t, "twins ignored", func() bool { return b.Stats().TwinsIgnored >= 3 })
	evs, _ := b.rec.snapshot()
	if len(evs) != 1 || evs[0].Kind != Discovered || evs[0].Node != "a@127.0.0.1:9100" || !evs[0].Peer.Dialable() {
		t.Errorf("b's events %v, want one dialable discovery of a", evs)
	}
	if st := a.Stats(); st.HeartbeatsReceived < 1 || st.Discovered != 1 || len(a.Peers()) != 1 || st.OwnIgnored < 6 {
		t.Errorf("a: %+v, peers %v: want b only, both own fields ignored", st, peerNodes(a.Gossip))
	}
	for _, bad := range []string{"b@127.0.0.1", "a@127.0.0.2"} {
		if _, err := Start(context.Background(), Config{Node: "a@127.0.0.1:1", ErlangNode: bad}); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ErlangNode %q: %v, want ErrInvalidConfig", bad, err)
		}
	}
}

func TestBroadcastNow(t *testing.T) {
	t.Parallel()
	a := startNode(t, freePort(t), "a", func(c *Config) { c.Interval = time.Hour; c.Expiry = 2 * time.Hour })
	eventually(t, "first heartbeat at start", func() bool { return a.Stats().HeartbeatsSent == 1 })
	a.BroadcastNow()
	eventually(t, "heartbeat after BroadcastNow", func() bool { return a.Stats().HeartbeatsSent == 2 })
	// A burst is coalesced: at most one more heartbeat per 100 ms.
	for range 1000 {
		a.BroadcastNow()
	}
	eventually(t, "coalesced heartbeat", func() bool { return a.Stats().HeartbeatsSent >= 3 })
	time.Sleep(3 * extraGap)
	// 1 normally; 2 if the burst straddled the end of a 100 ms window.
	if n := a.Stats().HeartbeatsSent - 2; n > 2 {
		t.Errorf("burst of 1000 BroadcastNow sent %d heartbeats, want 1 (or 2)", n)
	}
}

func TestNewcomerLearnsUsFast(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	slow := func(c *Config) { c.Interval = time.Hour; c.Expiry = 2 * time.Hour }
	a := startNode(t, port, "a", slow)
	eventually(t, "a's start heartbeat", func() bool { return a.Stats().HeartbeatsSent == 1 })
	// b's start heartbeat makes a answer at once: b learns a without
	// waiting an interval (an hour here).
	start := time.Now()
	b := startNode(t, port, "b", slow)
	b.rec.wait(t, "b discovers a", func(evs []Event) bool { return has(evs, Discovered, a.name) })
	a.rec.wait(t, "a discovers b", func(evs []Event) bool { return has(evs, Discovered, b.name) })
	t.Logf("newcomer learned us in %v", time.Since(start))
}

// TestAnswerByName: a newcomer whose name sorts lower than ours dials us
// (the mesh's rule), so it is answered at once even with a table to
// spread answers over; one whose name sorts higher is answered only after
// answerDelay (an hour here: not within the test).
func TestAnswerByName(t *testing.T) {
	old := answerSpreadPerNode
	answerSpreadPerNode = time.Hour
	t.Cleanup(func() { answerSpreadPerNode = old })
	port := freePort(t)
	slow := func(c *Config) { c.Interval = time.Hour; c.Expiry = 2 * time.Hour }
	z := startNode(t, port, "z", slow)
	c := startNode(t, port, "c", slow)
	c.BroadcastNow() // z's table gets one entry: answers to higher names wait
	z.rec.wait(t, "z discovers c", func(evs []Event) bool { return has(evs, Discovered, c.name) })
	time.Sleep(3 * extraGap) // z's answer to c is out before b listens
	b := startNode(t, port, "b", slow)
	b.rec.wait(t, "b (lower than z) discovers z at once", func(evs []Event) bool { return has(evs, Discovered, z.name) })
	time.Sleep(3 * extraGap) // nothing else of z's is pending
	sent := z.Stats().HeartbeatsSent
	zz := startNode(t, port, "zz", slow)
	z.rec.wait(t, "z discovers zz", func(evs []Event) bool { return has(evs, Discovered, zz.name) })
	time.Sleep(3 * extraGap) // an answer at once would be out by now
	if n := z.Stats().HeartbeatsSent; n != sent {
		t.Errorf("z sent %d heartbeats after zz (higher) appeared, want 0 before answerDelay", n-sent)
	}
	if evs, _ := zz.rec.snapshot(); has(evs, Discovered, z.name) {
		t.Errorf("zz discovered z before z's delayed answer")
	}
}

// TestAnswerers: a newcomer is answered by the three nodes whose names
// follow its own, not by every node (answerPeer): with the others' tables
// full, n0 appears and n1, n2, n3 answer at once; n4 and n5 do not answer
// (NotAnswered), so n0 does not learn them before their next heartbeat
// (an hour here).
func TestAnswerers(t *testing.T) {
	port := freePort(t)
	slow := func(c *Config) { c.Interval = time.Hour; c.Expiry = 2 * time.Hour }
	var ns []*node
	for i := 1; i <= 5; i++ {
		ns = append(ns, startNode(t, port, fmt.Sprintf("n%d", i), slow))
	}
	for _, n := range ns {
		n.BroadcastNow()
	}
	for _, n := range ns {
		eventually(t, n.name+" knows the four others", func() bool { return n.Stats().Peers == 4 })
	}
	time.Sleep(3 * extraGap) // every answer of the start is out
	sent, na := make([]uint64, len(ns)), make([]uint64, len(ns))
	for i, n := range ns {
		st := n.Stats()
		sent[i], na[i] = st.HeartbeatsSent, st.NotAnswered
	}
	n0 := startNode(t, port, "n0", slow)
	for _, n := range ns[:3] {
		n0.rec.wait(t, "n0 learns "+n.name, func(evs []Event) bool { return has(evs, Discovered, n.name) })
	}
	for _, n := range ns {
		eventually(t, n.name+" hears n0", func() bool { return n.Stats().Peers == 5 })
	}
	time.Sleep(3 * extraGap) // an answer would be out by now
	for i, n := range ns {
		st := n.Stats()
		answered, notAnswered := st.HeartbeatsSent-sent[i], st.NotAnswered-na[i]
		want := [2]uint64{0, 1} // sent, not answered
		if i < 3 {
			want = [2]uint64{1, 0}
		}
		if got := [2]uint64{answered, notAnswered}; got != want {
			t.Errorf("%s after n0 appeared: sent %d heartbeats, did not answer %d; want %d, %d", n.name, got[0], got[1], want[0], want[1])
		}
	}
	if evs, _ := n0.rec.snapshot(); has(evs, Discovered, ns[3].name) || has(evs, Discovered, ns[4].name) {
		t.Errorf("n0 learnt n4 or n5: only the three nodes after it answer")
	}
}

func TestBroadcastModeLo(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	var nodes []*node
	for i := range 3 {
		nodes = append(nodes, startNode(t, port, fmt.Sprintf("b%d", i), func(c *Config) { c.Broadcast = true }))
	}
	waitMesh(t, nodes)
	if g := nodes[0].Group(); g != fmt.Sprintf("255.255.255.255:%d", port) {
		t.Errorf("Group() = %q", g)
	}
	// Unicast to the port is not a broadcast: rejected by destination.
	// (Multicast to the group never reaches these sockets: they joined no
	// group and IP_MULTICAST_ALL is off.)
	newRawSender(t, port).sendTo(t, "127.0.0.1", []byte("MACULA_GOSSIP:m@127.0.0.1:1"))
	eventually(t, "unicast packet rejected", func() bool {
		var n uint64
		for _, nd := range nodes {
			n += nd.Stats().Rejected[ReasonWrongDestination]
		}
		return n > 0
	})
}

// ipv6LoWorks probes whether IPv6 multicast can be sent on lo here.
func ipv6LoWorks(t *testing.T, port int) error {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return err
	}
	c, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		return err
	}
	defer c.Close()
	pc := ipv6.NewPacketConn(c)
	dst := &net.UDPAddr{IP: net.ParseIP("ff02::4d41:1"), Port: port, Zone: "lo"}
	_, err = pc.WriteTo([]byte("probe"), &ipv6.ControlMessage{IfIndex: lo.Index, HopLimit: 1}, dst)
	return err
}

func TestIPv6Lo(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	if err := ipv6LoWorks(t, port); err != nil {
		t.Skipf("IPv6 multicast on lo does not work on this host (lo has no MULTICAST flag and no ff00::/8 route): %v; "+
			"the IPv6 path is tested in a network namespace by TestNetns", err)
	}
	var nodes []*node
	for i := range 3 {
		nodes = append(nodes, startNode(t, port, fmt.Sprintf("v6n%d", i), func(c *Config) { c.Group = "ff02::4d41:1" }))
	}
	waitMesh(t, nodes)
	if g := nodes[0].Group(); g != fmt.Sprintf("[ff02::4d41:1]:%d", port) {
		t.Errorf("Group() = %q", g)
	}
}

func TestStartErrors(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	base := Config{Port: port, Node: "e@127.0.0.1:1", Interfaces: []string{"lo"}}

	cfg := base
	cfg.Interfaces = []string{"lo", "gossip-no-such0"}
	_, err := Start(context.Background(), cfg)
	if !errors.Is(err, ErrNoSuchInterface) || !strings.Contains(err.Error(), "gossip-no-such0") {
		t.Errorf("missing interface: %v", err)
	}

	// A socket without SO_REUSEADDR holds the port.
	hold, err := net.ListenPacket("udp4", fmt.Sprintf("0.0.0.0:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), base)
	hold.Close()
	if !errors.Is(err, ErrBind) || !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), fmt.Sprint(port)) {
		t.Errorf("busy port: %v", err)
	}

	cfg = base
	cfg.Node = ""
	if _, err := Start(context.Background(), cfg); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("no node: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Start(ctx, base); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ctx: %v", err)
	}
}

func TestStrategy(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	rec := disctest.New()
	s := NewStrategy(Config{Port: port, Interfaces: []string{"lo"}, Interval: tInterval, Expiry: tExpiry})
	if s.Name() != "gossip" || s.Gossip() != nil {
		t.Fatal("Name or Gossip before Start")
	}
	if st := s.DiscoveryStats(); st.Peers != 0 || st.Counters == nil || len(st.Rejected) != len(reasons) {
		t.Errorf("DiscoveryStats before Start %+v", st)
	}
	s.Refresh() // no-op before Start
	self := discovery.Peer{Name: "s@127.0.0.1", Addr: "127.0.0.1:7000"}
	if err := s.Start(context.Background(), self, rec); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background(), self, rec); !errors.Is(err, discovery.ErrStarted) {
		t.Errorf("second Start: %v", err)
	}
	b := startNode(t, port, "b", nil)
	c := startNode(t, port, "c", nil)
	rec.WaitKeys(t, deadline, "b@127.0.0.1 at 127.0.0.1:9100", "c@127.0.0.1 at 127.0.0.1:9100")
	for _, p := range rec.Peers() {
		if !p.Dialable() {
			t.Errorf("%v not dialable", p)
		}
	}
	b.rec.wait(t, "b discovers the strategy's node", func(evs []Event) bool { return has(evs, Discovered, "s@127.0.0.1:7000") })
	s.Refresh()
	c.Close()
	rec.WaitKeys(t, deadline, "b@127.0.0.1 at 127.0.0.1:9100")
	if calls := rec.Calls(); !slices.Contains(calls, "gone c@127.0.0.1 at 127.0.0.1:9100") {
		t.Errorf("calls %q lack the Gone of c", calls)
	}
	if st := s.Gossip().Stats(); st.Lost != 1 {
		t.Errorf("stats %+v", st)
	}
	st := s.DiscoveryStats()
	if st.Peers != 1 || st.Counters["discovered"] < 2 || st.Counters["lost"] != 1 || st.Counters["heartbeats_sent"] == 0 {
		t.Errorf("DiscoveryStats %+v", st)
	}
	for _, r := range reasons {
		if _, ok := st.Rejected[r]; !ok {
			t.Errorf("DiscoveryStats.Rejected lacks %q", r)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	n := len(rec.Calls())
	if err := s.Start(context.Background(), self, rec); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
	s.Refresh() // no-op after Close
	time.Sleep(2 * tExpiry)
	if calls := rec.Calls(); len(calls) != n {
		t.Errorf("sink called after Close: %q", calls[n:])
	}
}

func TestStrategyStartError(t *testing.T) {
	t.Parallel()
	s := NewStrategy(Config{Port: freePort(t), Interfaces: []string{"gossip-no-such0"}})
	err := s.Start(context.Background(), discovery.Peer{Name: "s@127.0.0.1", Addr: "127.0.0.1:7000"}, disctest.New())
	if !errors.Is(err, ErrNoSuchInterface) {
		t.Fatalf("Start: %v", err)
	}
	if s.Gossip() != nil {
		t.Error("Gossip set after a failed Start")
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close after failed Start: %v", err)
	}
}

func TestEventKindString(t *testing.T) {
	// The test adapter's names (the old gossip.EventKind strings).
	if Discovered.String() != "discovered" || Lost.String() != "lost" || EventKind(9).String() != "EventKind(9)" {
		t.Error("EventKind.String")
	}
}

// TestRevived: a known, unlinked peer heard again after more than two
// intervals of silence is reported Found again (the caller dials it now);
// heard on time, it is not.
func TestRevived(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	a := startNode(t, port, "a", func(c *Config) { c.Expiry = time.Minute })
	s := newRawSender(t, port)
	hb := []byte("MACULA_GOSSIP:x@127.0.0.1:1000")
	founds := func() int {
		evs, _ := a.rec.snapshot()
		n := 0
		for _, e := range evs {
			if e.Kind == Discovered && e.Node == "x@127.0.0.1:1000" {
				n++
			}
		}
		return n
	}
	s.send(t, hb)
	a.rec.wait(t, "x discovered", func(evs []Event) bool { return has(evs, Discovered, "x@127.0.0.1:1000") })
	time.Sleep((reviveGap + 1) * tInterval) // a silence: the gap itself, not a wait for an event
	s.send(t, hb)
	a.rec.wait(t, "x found again", func([]Event) bool { return founds() == 2 })
	if r := a.Stats().Revived; r != 1 {
		t.Fatalf("after a silence: %d revived, want 1", r)
	}
	h := a.Stats().HeartbeatsReceived
	s.send(t, hb) // at once: no silence
	eventually(t, "the next heartbeat is read", func() bool { return a.Stats().HeartbeatsReceived > h })
	if n, r := founds(), a.Stats().Revived; n != 2 || r != 1 {
		t.Fatalf("without a silence: %d Found, %d revived; want 2, 1", n, r)
	}
	if evs, _ := a.rec.snapshot(); has(evs, Lost, "x@127.0.0.1:1000") {
		t.Fatalf("lost: %v", evs)
	}
}

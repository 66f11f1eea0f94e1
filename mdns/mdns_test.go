package mdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/internal/disctest"
	"github.com/macula-io/cluster/internal/mcast"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// freePort returns a UDP port free on the wildcard address, so that the
// in-process nodes on "lo" share a group without touching 5353.
func freePort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// reports records what a strategy tells its sink (Found, Gone) and
// waits for the resulting peer set.
type reports struct {
	*disctest.Recorder
}

func newReports() *reports { return &reports{disctest.New()} }

// waitFor waits until the set of peers found and not gone is exactly the
// nodes want (sorted) and returns how long it took.
func (r *reports) waitFor(t testing.TB, d time.Duration, want ...string) time.Duration {
	t.Helper()
	t0 := time.Now()
	r.Wait(t, d, fmt.Sprintf("peers %v", want), func(ps []discovery.Peer) bool {
		return strings.Join(nodes(ps), ",") == strings.Join(want, ",")
	})
	return time.Since(t0)
}

// nodes gives each peer as its TXT node= value ("name@host:port", or
// "name@host" if not dialable).
func nodes(ps []discovery.Peer) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = discovery.FormatNode(p.Name, p.Addr)
	}
	return out
}

func peerOf(t testing.TB, node string) discovery.Peer {
	t.Helper()
	p, err := discovery.ParseNode(node)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func startNode(t testing.TB, cfg Config, node string) (*Strategy, *reports) {
	t.Helper()
	s := NewStrategy(cfg)
	r := newReports()
	if err := s.Start(context.Background(), peerOf(t, node), r); err != nil {
		t.Fatalf("start %s: %v", node, err)
	}
	t.Cleanup(func() { s.Close() })
	return s, r
}

func TestThreeNodesOnLoopback(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	cfg := Config{Interfaces: []string{"lo"}, Port: port}
	names := []string{"a@127.0.0.1:9101", "b@127.0.0.1:9102", "c@127.0.0.1:9103"}
	var ss []*Strategy
	var rs []*reports
	for _, n := range names {
		s, r := startNode(t, cfg, n)
		ss, rs = append(ss, s), append(rs, r)
	}
	for i := range names {
		var others []string
		for j, n := range names {
			if j != i {
				others = append(others, n)
			}
		}
		rs[i].waitFor(t, 10*time.Second, others...)
	}
	if got := ss[0].Peers(); len(got) != 2 || got[0] != peerOf(t, names[1]) {
		t.Fatalf("Peers() = %+v", got)
	}
	if got := ss[0].Interfaces(); len(got) != 1 || got[0] != "lo" {
		t.Fatalf("Interfaces() = %v", got)
	}

	// Refresh sends a query (at most one a second).
	q0 := ss[0].Stats().QueriesSent
	ss[0].Refresh()
	deadline := time.Now().Add(10 * time.Second)
	for ss[0].Stats().QueriesSent == q0 {
		if time.Now().After(deadline) {
			t.Fatal("Refresh sent no query")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// c leaves: its goodbye makes a and b drop it long before the 120 s TTL.
	ss[2].Close()
	d0 := rs[0].waitFor(t, 10*time.Second, names[1])
	rs[1].waitFor(t, 10*time.Second, names[0])
	t.Logf("goodbye seen after %v", d0)
	st := ss[0].Stats()
	if st.GoodbyesReceived == 0 || st.Expired != 0 || st.QueriesSent == 0 || st.AnswersSent == 0 ||
		st.AnswersReceived == 0 || st.Peers != 1 || st.Interfaces != 1 || st.Malformed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestShortTTLRefreshed: with a 3 s TTL, live nodes answer the refresh
// queries at 80% of the TTL and nobody is lost over several TTLs.
func TestShortTTLRefreshed(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	cfg := Config{Interfaces: []string{"lo"}, Port: port, TTL: 3 * time.Second}
	a, ra := startNode(t, cfg, "a@127.0.0.1:9101")
	_, rb := startNode(t, cfg, "b@127.0.0.1:9102")
	ra.waitFor(t, 10*time.Second, "b@127.0.0.1:9102")
	rb.waitFor(t, 10*time.Second, "a@127.0.0.1:9101")
	q0 := a.Stats().QueriesSent
	n := len(ra.Calls())
	time.Sleep(4500 * time.Millisecond)
	if calls := ra.Calls(); len(calls) != n {
		t.Fatalf("a reported %q while b lives", calls[n:])
	}
	if st := a.Stats(); st.Expired != 0 || st.QueriesSent == q0 {
		t.Fatalf("stats %+v (queries before %d)", st, q0)
	}
}

// fakeResponder multicasts hand-made responses on lo from the mDNS port.
type fakeResponder struct {
	c  *mcast.Conn
	lo *net.Interface
}

func newFakeResponder(t *testing.T, port int) *fakeResponder {
	t.Helper()
	c, err := mcast.Listen(context.Background(), mcast.Config{Group: group4, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	return &fakeResponder{c: c, lo: lo}
}

func (f *fakeResponder) send(t *testing.T, b []byte) {
	t.Helper()
	if err := f.c.WriteTo(b, f.lo.Index, netip.MustParseAddr("127.0.0.1"), f.c.Group()); err != nil {
		t.Fatal(err)
	}
}

// announcement is a response with PTR and TXT for instance, as another
// implementation would send it.
func announcement(t testing.TB, instance string, ttl uint32, txt ...string) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{Response: true, Authoritative: true})
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(b.StartAnswers())
	svc := dnsmessage.MustNewName("_macula._tcp.local.")
	inst := dnsmessage.MustNewName(instance + "._macula._tcp.local.")
	must(b.PTRResource(dnsmessage.ResourceHeader{Name: svc, Class: dnsmessage.ClassINET, TTL: ttl},
		dnsmessage.PTRResource{PTR: inst}))
	must(b.TXTResource(dnsmessage.ResourceHeader{Name: inst, Class: dnsmessage.ClassINET | flushBit, TTL: ttl},
		dnsmessage.TXTResource{TXT: txt}))
	out, err := b.Finish()
	must(err)
	return out
}

// TestExpiredRecordIsLost: an instance that stops answering is dropped
// when its TTL runs out, after the refresh queries went unanswered.
func TestExpiredRecordIsLost(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	a, ra := startNode(t, Config{Interfaces: []string{"lo"}, Port: port}, "a@127.0.0.1:9101")
	f := newFakeResponder(t, port)
	q0 := a.Stats().QueriesSent
	f.send(t, announcement(t, "ghost", 2, "node=ghost@127.0.0.9:9100", "v=1"))
	ra.waitFor(t, 10*time.Second, "ghost@127.0.0.9:9100")
	t0 := time.Now()
	ra.waitFor(t, 10*time.Second)
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("lost after %v, TTL was 2 s", d)
	}
	st := a.Stats()
	if st.Expired != 1 || st.GoodbyesReceived != 0 || st.QueriesSent < q0+2 {
		t.Fatalf("stats %+v (queries before %d)", st, q0)
	}
}

func TestForeignInstances(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	self := "a@127.0.0.1:9101"
	a, ra := startNode(t, Config{Interfaces: []string{"lo"}, Port: port}, self)
	f := newFakeResponder(t, port)
	// Ignored: no node key, bad node, other version, our own node.
	f.send(t, announcement(t, "nonode", 60, "v=1"))
	f.send(t, announcement(t, "badnode", 60, "node=no port@x", "v=1"))
	f.send(t, announcement(t, "v2", 60, "node=v2@127.0.0.7:9100", "v=2"))
	f.send(t, announcement(t, "me-too", 60, "node="+self))
	// Accepted: first "node" key wins, keys are case-insensitive, v optional.
	f.send(t, announcement(t, "good", 60, "NODE=g@127.0.0.8:9100", "node=other@127.0.0.9:1"))
	// Not dialable, still a peer.
	f.send(t, announcement(t, "erl", 60, "node=erl@127.0.0.5"))
	ra.waitFor(t, 10*time.Second, "erl@127.0.0.5", "g@127.0.0.8:9100")
	st := a.Stats()
	if st.Rejected["bad_node"] < 2 || st.Rejected["version"] < 1 {
		t.Fatalf("stats %+v", st)
	}
	// A goodbye for one of them.
	f.send(t, announcement(t, "good", 0, "node=g@127.0.0.8:9100"))
	ra.waitFor(t, 10*time.Second, "erl@127.0.0.5")
	// Garbage is counted, not fatal.
	f.send(t, []byte{0, 0, 0x84, 0, 0, 0, 0, 5})
	deadline := time.Now().Add(10 * time.Second)
	for a.Stats().Malformed == 0 {
		if time.Now().After(deadline) {
			t.Fatal("malformed packet not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTableBound(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	a, ra := startNode(t, Config{Interfaces: []string{"lo"}, Port: port, MaxPeers: 2}, "a@127.0.0.1:9101")
	f := newFakeResponder(t, port)
	// p1 and p2 announce twice, 1 s apart (RFC 6762 §8.3): verified.
	for range 2 {
		f.send(t, announcement(t, "p1", 60, "node=p1@127.0.0.1:1"))
		f.send(t, announcement(t, "p2", 60, "node=p2@127.0.0.1:2"))
		ra.waitFor(t, 10*time.Second, "p1@127.0.0.1:1", "p2@127.0.0.1:2")
		time.Sleep(verifyAfter + 100*time.Millisecond)
	}
	f.send(t, announcement(t, "p3", 60, "node=p3@127.0.0.1:3"))
	deadline := time.Now().Add(10 * time.Second)
	for a.Stats().Rejected["table_full"] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no table_full: %+v", a.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := a.Peers(); len(got) != 2 || a.Stats().Evicted != 0 {
		t.Fatalf("peers %v, stats %+v", got, a.Stats())
	}
}

// floodPacket is one response announcing n fake instances from i.
func floodPacket(t testing.TB, i, n int) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{Response: true, Authoritative: true})
	b.EnableCompression()
	if err := b.StartAnswers(); err != nil {
		t.Fatal(err)
	}
	svc := dnsmessage.MustNewName("_macula._tcp.local.")
	for j := i; j < i+n; j++ {
		inst := dnsmessage.MustNewName(fmt.Sprintf("f%d._macula._tcp.local.", j))
		if err := b.PTRResource(dnsmessage.ResourceHeader{Name: svc, Class: dnsmessage.ClassINET, TTL: 4500},
			dnsmessage.PTRResource{PTR: inst}); err != nil {
			t.Fatal(err)
		}
	}
	out, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTableFloodDoesNotLockOut: fake instances with a 4,500 s TTL fill the
// table (issue 14: 1,200 in 6 packets locked a real node out for good); a
// real newcomer announced during the flood is discovered within 2
// announcement intervals (2 s), and a verified instance is never evicted.
func TestTableFloodDoesNotLockOut(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	const maxPeers = 64
	a, ra := startNode(t, Config{Interfaces: []string{"lo"}, Port: port, MaxPeers: maxPeers}, "a@127.0.0.1:9101")
	f := newFakeResponder(t, port)
	for range 2 {
		f.send(t, announcement(t, "old", 120, "node=old@127.0.0.1:1"))
		ra.waitFor(t, 10*time.Second, "old@127.0.0.1:1")
		time.Sleep(verifyAfter + 100*time.Millisecond)
	}
	// 6 packets of 200 fakes, then more while the newcomer announces
	// (bounded: 40 packets).
	for i := range 6 {
		f.send(t, floodPacket(t, 200*i, 200))
		time.Sleep(5 * time.Millisecond)
	}
	deadline := time.Now().Add(10 * time.Second)
	for a.Stats().Evicted == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("table never full: %+v", a.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 6; i < 40; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if err := f.c.WriteTo(floodPacket(t, 200*i, 200), f.lo.Index, netip.MustParseAddr("127.0.0.1"), f.c.Group()); err != nil {
				return
			}
		}
	}()
	f.send(t, announcement(t, "real", 120, "node=real@127.0.0.1:2"))
	took := ra.waitFor(t, 10*time.Second, "old@127.0.0.1:1", "real@127.0.0.1:2")
	close(stop)
	<-done
	st := a.Stats()
	t.Logf("mDNS flood: evicted %d, table_full %d; newcomer discovered after %v",
		st.Evicted, st.Rejected["table_full"], took)
	if took > 2*time.Second {
		t.Errorf("newcomer discovered after %v, want <= 2s", took)
	}
}

// TestAnswersQueries checks the records a node gives a standard querier
// (a query for the service PTR, then SRV/TXT/A for the instance).
func TestAnswersQueries(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	f := newFakeResponder(t, port)
	if err := f.c.Join(f.lo); err != nil {
		t.Fatal(err)
	}
	recv := make(chan message, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 9000)
		for {
			p, err := f.c.Read(buf)
			if err != nil {
				return
			}
			if m, err := parseMessage(buf[:p.N]); err == nil && m.Response {
				recv <- m
			}
		}
	}()
	t.Cleanup(func() { f.c.Close(); <-done })
	startNode(t, Config{Interfaces: []string{"lo"}, Port: port, DisableIPv6: true}, "api@127.0.0.1:9100")

	query := func(name string, typ dnsmessage.Type) {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{})
		_ = b.StartQuestions()
		_ = b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET})
		out, _ := b.Finish()
		f.send(t, out)
	}
	find := func(m message, typ dnsmessage.Type, name string) *record {
		for i, r := range m.Records {
			if r.Type == typ && strings.EqualFold(r.Name, name) {
				return &m.Records[i]
			}
		}
		return nil
	}
	const inst = "api@127-0-0-1:9100._macula._tcp.local."
	const host = "api-127-0-0-1-9100.local."
	wait := func(what string, ok func(message) bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case m := <-recv:
				if ok(m) {
					return
				}
			case <-deadline:
				t.Fatalf("no response with %s", what)
			}
		}
	}
	// The start-up announcement carries everything.
	wait("announcement", func(m message) bool {
		ptr, srv, txt, a := find(m, dnsmessage.TypePTR, "_macula._tcp.local."), find(m, dnsmessage.TypeSRV, inst),
			find(m, dnsmessage.TypeTXT, inst), find(m, dnsmessage.TypeA, host)
		return ptr != nil && ptr.Target == inst && !ptr.Flush && ptr.TTL == 120 &&
			srv != nil && srv.Port == 9100 && srv.Target == host && srv.Flush &&
			txt != nil && strings.Join(txt.Text, ",") == "node=api@127.0.0.1:9100,v=1" &&
			a != nil && a.Addr.String() == "127.0.0.1"
	})
	// Each query is repeated until answered: a record announced less than
	// a second ago is not multicast again (§6).
	ask := func(name string, typ dnsmessage.Type, what string, ok func(message) bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		query(name, typ)
		for {
			select {
			case m := <-recv:
				if ok(m) {
					return
				}
			case <-tick.C:
				query(name, typ)
			case <-deadline:
				t.Fatalf("no answer with %s", what)
			}
		}
	}
	ask("_services._dns-sd._udp.local.", dnsmessage.TypePTR, "service type", func(m message) bool {
		r := find(m, dnsmessage.TypePTR, "_services._dns-sd._udp.local.")
		return r != nil && r.Target == "_macula._tcp.local."
	})
	ask(inst, dnsmessage.TypeSRV, "SRV", func(m message) bool {
		return find(m, dnsmessage.TypeSRV, inst) != nil && find(m, dnsmessage.TypePTR, "_macula._tcp.local.") == nil
	})
	ask(host, dnsmessage.TypeA, "A", func(m message) bool { return find(m, dnsmessage.TypeA, host) != nil })
	ask("_macula._tcp.local.", dnsmessage.TypePTR, "PTR with additional records", func(m message) bool {
		return find(m, dnsmessage.TypePTR, "_macula._tcp.local.") != nil && find(m, dnsmessage.TypeTXT, inst) != nil &&
			find(m, dnsmessage.TypeSRV, inst) != nil
	})
}

func TestLifecycleAndConfig(t *testing.T) {
	self := peerOf(t, "a@127.0.0.1:9101")
	for _, tc := range []struct {
		cfg  Config
		self discovery.Peer
		want error
	}{
		{Config{Interfaces: []string{"lo"}, Service: "macula"}, self, ErrInvalidConfig},
		{Config{Interfaces: []string{"lo"}, Port: -1}, self, ErrInvalidConfig},
		{Config{Interfaces: []string{"lo"}, TTL: -time.Second}, self, ErrInvalidConfig},
		{Config{Interfaces: []string{"no-such-if0"}}, self, ErrNoInterface},
		{Config{Interfaces: []string{"lo"}}, peerOf(t, "a@127.0.0.1"), ErrNotDialable},
	} {
		if err := NewStrategy(tc.cfg).Start(context.Background(), tc.self, disctest.New()); !errors.Is(err, tc.want) {
			t.Errorf("%+v %+v: %v, want %v", tc.cfg, tc.self, err, tc.want)
		}
	}
	s := NewStrategy(Config{Interfaces: []string{"lo"}, Port: freePort(t)})
	if s.Name() != "mdns" {
		t.Fatal(s.Name())
	}
	rec := disctest.New()
	if err := s.Start(context.Background(), self, rec); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background(), self, rec); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start: %v", err)
	}
	s.Refresh()
	s.Close()
	s.Close()
	s.Refresh()
	if err := s.Start(context.Background(), self, rec); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close: %v", err)
	}

	env := map[string]string{"MACULA_MDNS_IF": "eth1, lo", "MACULA_MDNS_SERVICE": "_other._udp.local."}
	cfg, err := ConfigFromEnv(Config{}, func(k string) string { return env[k] })
	if err != nil || strings.Join(cfg.Interfaces, ",") != "eth1,lo" || cfg.Service != "_other._udp" {
		t.Fatalf("%+v %v", cfg, err)
	}
	cfg, err = ConfigFromEnv(Config{Interfaces: []string{"x"}, Service: "_a._tcp"}, func(k string) string { return env[k] })
	if err != nil || strings.Join(cfg.Interfaces, ",") != "x" || cfg.Service != "_a._tcp" {
		t.Fatalf("option must win: %+v %v", cfg, err)
	}
	for k, v := range map[string]string{"MACULA_MDNS_IF": "a,,b", "MACULA_MDNS_SERVICE": "_macula._sctp"} {
		_, err := ConfigFromEnv(Config{}, func(key string) string {
			if key == k {
				return v
			}
			return ""
		})
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), k) || !strings.Contains(err.Error(), v) {
			t.Errorf("%s=%q: %v", k, v, err)
		}
	}
}

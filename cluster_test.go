package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/gossip"
	"github.com/macula-io/cluster/mesh"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 10 * time.Second

// gossipCfg is a gossip node pinned to loopback on a test's own port.
func gossipCfg(name string, port int, secret string) cluster.Config {
	return cluster.Config{
		Strategy: cluster.StrategyGossip,
		Gossip: gossip.Config{Interfaces: []string{"lo"}, Port: port, Interval: 100 * time.Millisecond,
			Expiry: time.Second, Secrets: []string{secret}},
		Mesh: mesh.Config{Name: name, Cookie: "test-cookie", Listen: "127.0.0.1:0", LinkTimeout: time.Second},
	}
}

func TestGossipFullMesh(t *testing.T) {
	port := freeUDPPort(t)
	var ns []*node
	for _, n := range []string{"a@127.0.0.1", "b@127.0.0.1", "c@127.0.0.1"} {
		ns = append(ns, start(t, gossipCfg(n, port, "s3cret")))
	}
	waitFullMesh(t, ns, wait)
	for _, n := range ns { // links may come up (transitively) before every heartbeat is heard
		n.rec.waitFor(t, wait, "all discovered", func(evs []cluster.Event) bool {
			return len(discovered(evs)) == len(ns)-1
		})
	}
	for _, n := range ns {
		evs := n.rec.all()
		checkLinkSequence(t, n.c.Self().Node, evs)
		for _, other := range names(ns) {
			if other == n.c.Self().Node {
				continue
			}
			if got := count(evs, cluster.NodeUp, other); got != 1 {
				t.Errorf("%s saw %d NodeUp for %s, want 1", n.c.Self().Node, got, other)
			}
		}
		if got := len(n.c.Discovered()); got != 2 {
			t.Errorf("%s Discovered() = %d peers, want 2", n.c.Self().Node, got)
		}
		if got := len(n.c.Connected()); got != 2 {
			t.Errorf("%s Connected() = %d peers, want 2", n.c.Self().Node, got)
		}
	}
	// Graceful leave: the others see "left".
	leaving := ns[2].c.Self().Node
	ns[2].c.Close()
	for _, n := range ns[:2] {
		n.rec.waitFor(t, wait, "nodedown left", func(evs []cluster.Event) bool {
			for _, e := range evs {
				if e.Kind == cluster.NodeDown && e.Node == leaving {
					if e.Reason != "left" {
						t.Errorf("NodeDown reason %q, want left", e.Reason)
					}
					return true
				}
			}
			return false
		})
	}
}

func TestStaticFullMeshAndRemove(t *testing.T) {
	var ns []*node
	for _, n := range []string{"s1@127.0.0.1", "s2@127.0.0.1", "s3@127.0.0.1"} {
		cfg := cluster.Config{Strategy: cluster.StrategyStatic,
			Mesh: mesh.Config{Name: n, Cookie: "c", Listen: "127.0.0.1:0", NoTransitive: true}}
		ns = append(ns, start(t, cfg))
	}
	// Everyone lists everyone by bare address (a static list known only
	// after the ports are): the names come from the handshakes.
	for _, n := range ns {
		for _, o := range ns {
			if err := n.c.AddNode(o.c.Self().Addr); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFullMesh(t, ns, wait)
	for _, n := range ns {
		n.rec.waitFor(t, wait, "all discovered by name", func(evs []cluster.Event) bool {
			return len(discovered(evs)) == len(ns)-1
		})
		checkLinkSequence(t, n.c.Self().Node, n.rec.all())
		for _, p := range n.c.Discovered() {
			if p.Node == "" || p.Source != "static" {
				t.Errorf("%s: Discovered() has %+v, want a named static peer", n.c.Self().Node, p)
			}
		}
	}
	// Removing s3 from s1's and s1 from s3's lists disconnects them.
	s3 := ns[2].c.Self().Node
	if err := ns[0].c.RemoveNode(ns[2].c.Self().Addr); err != nil {
		t.Fatal(err)
	}
	if err := ns[2].c.RemoveNode(ns[0].c.Self().Addr); err != nil {
		t.Fatal(err)
	}
	ns[0].rec.waitFor(t, wait, "s3 lost and down", func(evs []cluster.Event) bool {
		return !up(evs)[s3] && count(evs, cluster.Lost, s3) == 1
	})
	if err := ns[0].c.RemoveNode("nobody@127.0.0.1"); err == nil {
		t.Error("RemoveNode of an unlisted node succeeded")
	}
}

func TestAutoPicksStaticWithNodes(t *testing.T) {
	n := start(t, cluster.Config{Nodes: []string{"x@127.0.0.1:1"},
		Mesh: mesh.Config{Name: "auto@127.0.0.1", Cookie: "c", Listen: "127.0.0.1:0"}})
	if got := n.c.Strategy().Name(); got != "static" {
		t.Fatalf("auto with nodes chose %q, want static", got)
	}
	n.rec.waitFor(t, wait, "x discovered", func(evs []cluster.Event) bool { return count(evs, cluster.Discovered, "x@127.0.0.1") == 1 })
	g := start(t, gossipCfg("autog@127.0.0.1", freeUDPPort(t), "s"))
	if err := g.c.AddNode("y@127.0.0.1:1"); !errors.Is(err, cluster.ErrNotStatic) {
		t.Fatalf("AddNode on gossip = %v, want ErrNotStatic", err)
	}
}

// TestChurnExactlyOnce restarts one node again and again; every observer
// must see exactly one NodeDown and one NodeUp per restart, in order.
func TestChurnExactlyOnce(t *testing.T) {
	port := freeUDPPort(t)
	stable := []*node{start(t, gossipCfg("k1@127.0.0.1", port, "s")), start(t, gossipCfg("k2@127.0.0.1", port, "s"))}
	const churned = "k3@127.0.0.1"
	const restarts = 5
	for i := 0; i <= restarts; i++ {
		n := start(t, gossipCfg(churned, port, "s"))
		waitFullMesh(t, append([]*node{n}, stable...), wait)
		for _, s := range stable {
			ups := i + 1
			s.rec.waitFor(t, wait, fmt.Sprintf("%d nodeups of %s", ups, churned), func(evs []cluster.Event) bool {
				return count(evs, cluster.NodeUp, churned) == ups && up(evs)[churned]
			})
		}
		if i%2 == 0 {
			n.c.Close() // graceful: peers see "left"
		} else {
			// Abrupt: the node's new incarnation may arrive before or after the
			// old link's NodeDown; either way exactly one each.
			n.c.Close()
		}
		for _, s := range stable {
			downs := i + 1
			s.rec.waitFor(t, wait, fmt.Sprintf("%d nodedowns of %s", downs, churned), func(evs []cluster.Event) bool {
				return count(evs, cluster.NodeDown, churned) == downs
			})
		}
	}
	for _, s := range stable {
		evs := s.rec.all()
		checkLinkSequence(t, s.c.Self().Node, evs)
		if got := count(evs, cluster.NodeUp, churned); got != restarts+1 {
			t.Errorf("%s: %d NodeUp for %s, want %d", s.c.Self().Node, got, churned, restarts+1)
		}
		other := stable[0].c.Self().Node
		if s == stable[0] {
			other = stable[1].c.Self().Node
		}
		if got := count(evs, cluster.NodeDown, other); got != 0 {
			t.Errorf("%s: collateral NodeDown of %s during churn:\n%s", s.c.Self().Node, other, dump(evs))
		}
	}
}

// TestIsolation: clusters that differ in port, group or secret never see
// each other, though they run in one process on one interface.
func TestIsolation(t *testing.T) {
	portA, portB := freeUDPPort(t), freeUDPPort(t)
	a1 := start(t, gossipCfg("a1@127.0.0.1", portA, "s"))
	a2 := start(t, gossipCfg("a2@127.0.0.1", portA, "s"))
	wrongSecret := start(t, gossipCfg("ws@127.0.0.1", portA, "other"))
	otherPort := start(t, gossipCfg("op@127.0.0.1", portB, "s"))
	grp := gossipCfg("og@127.0.0.1", portA, "s")
	grp.Gossip.Group = "230.1.1.252"
	otherGroup := start(t, grp)
	waitFullMesh(t, []*node{a1, a2}, wait)

	// Let the outsiders heartbeat for a while: wait until a1 has rejected
	// several of the wrong secret's heartbeats (proof they reached it).
	gs := a1.c.Strategy().(*gossip.Strategy).Gossip()
	deadline := time.Now().Add(wait)
	for gs.Stats().Rejected["bad_signature"] < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("a1 never rejected the wrong-secret heartbeats: %+v", gs.Stats())
		}
		time.Sleep(20 * time.Millisecond) // polling a counter: no event to wait on
	}
	for _, n := range []*node{a1, a2} {
		for _, p := range n.c.Discovered() {
			if p.Node != "a1@127.0.0.1" && p.Node != "a2@127.0.0.1" {
				t.Errorf("%s discovered outsider %s", n.c.Self().Node, p.Node)
			}
		}
	}
	for _, n := range []*node{wrongSecret, otherPort, otherGroup} {
		if d := n.c.Discovered(); len(d) != 0 {
			t.Errorf("%s discovered %v", n.c.Self().Node, d)
		}
	}
}

// TestCloseDuringDial closes a cluster while its mesh is stuck dialling a
// peer that accepts TCP and never speaks.
func TestCloseDuringDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	silent := "mute@127.0.0.1:" + strings.Split(ln.Addr().String(), ":")[1]
	n := start(t, cluster.Config{Nodes: []string{silent},
		Mesh: mesh.Config{Name: "dialer@127.0.0.1", Cookie: "c", Listen: "127.0.0.1:0"}})
	var conn net.Conn
	select {
	case conn = <-accepted:
		defer conn.Close()
	case <-time.After(wait):
		t.Fatal("the mesh never dialled the static node")
	}
	done := make(chan error, 1)
	go func() { done <- n.c.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Close blocked on a handshake in progress")
	}
	if err := n.c.AddNode("z@127.0.0.1:1"); !errors.Is(err, cluster.ErrClosed) {
		t.Fatalf("AddNode after Close = %v, want ErrClosed", err)
	}
}

func TestEventsChannel(t *testing.T) {
	port := freeUDPPort(t)
	ctx := context.Background()
	cfg := gossipCfg("ev1@127.0.0.1", port, "s")
	c1, err := cluster.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	n2 := start(t, gossipCfg("ev2@127.0.0.1", port, "s"))
	// Discovered (ev1 hears ev2) and NodeUp (a link, maybe dialled by ev2
	// first) come in either order; both come.
	var got []cluster.Event
	for e := range c1.Events() {
		got = append(got, e)
		if count(got, cluster.Discovered, "ev2@127.0.0.1") == 1 && count(got, cluster.NodeUp, "ev2@127.0.0.1") == 1 {
			break
		}
	}
	for _, e := range got {
		if e.Kind == cluster.Discovered && e.Source != "gossip" {
			t.Fatalf("%+v: want source gossip", e)
		}
	}
	_ = n2
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	var rest []cluster.Event
	for e := range c1.Events() { // closed after Close, after the shutdown NodeDown
		rest = append(rest, e)
	}
	if len(rest) == 0 || rest[len(rest)-1].Kind != cluster.NodeDown || rest[len(rest)-1].Reason != "shutdown" {
		t.Fatalf("events after Close = %v, want a final NodeDown(shutdown)", rest)
	}
	if err := c1.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

func TestEventsChannelSlowReaderCounted(t *testing.T) {
	port := freeUDPPort(t)
	cfg := gossipCfg("slow@127.0.0.1", port, "s")
	cfg.EventQueue = 1
	rec := newRecorder()
	cfg.OnEvent = rec.add
	c, err := cluster.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start(t, gossipCfg("fast@127.0.0.1", port, "s"))
	// Nobody reads c.Events(): OnEvent still sees everything, the channel
	// buffers one event and counts the ones it had to drop.
	rec.waitFor(t, wait, "nodeup", func(evs []cluster.Event) bool { return up(evs)["fast@127.0.0.1"] })
	deadline := time.Now().Add(wait)
	for c.Stats().EventsDropped == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no drop counted: %+v", c.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStartErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  cluster.Config
		want string
	}{
		{"strategy", cluster.Config{Strategy: "carrier-pigeon"}, "carrier-pigeon"},
		{"node name with port", cluster.Config{Mesh: mesh.Config{Name: "a@127.0.0.1:9", Cookie: "c"}}, "without a port"},
		{"static node", cluster.Config{Nodes: []string{"nohost"}, Mesh: mesh.Config{Cookie: "c"}}, "nohost"},
		{"interface", cluster.Config{Strategy: "gossip", Gossip: gossip.Config{Interfaces: []string{"nosuch0"}},
			Mesh: mesh.Config{Name: "e@127.0.0.1", Cookie: "c", Listen: "127.0.0.1:0"}}, "nosuch0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := cluster.Start(context.Background(), tc.cfg)
			if err == nil {
				c.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %q", err, tc.want)
			}
		})
	}
}

// fixedStrategy is a user-written strategy: the facade must accept it.
type fixedStrategy struct {
	peers   []discovery.Peer
	refresh chan struct{}
}

func (f *fixedStrategy) Name() string { return "fixed" }
func (f *fixedStrategy) Start(_ context.Context, self discovery.Peer, sink discovery.Sink) error {
	for _, p := range f.peers {
		sink.Found(p)
	}
	return nil
}
func (f *fixedStrategy) Refresh()     { f.refresh <- struct{}{} }
func (f *fixedStrategy) Close() error { return nil }

func TestCustomStrategy(t *testing.T) {
	a := start(t, cluster.Config{Strategy: "static", Mesh: mesh.Config{Name: "ca@127.0.0.1", Cookie: "c", Listen: "127.0.0.1:0"}})
	p := discovery.Peer{Name: a.c.Self().Node, Addr: a.c.Self().Addr}
	fs := &fixedStrategy{peers: []discovery.Peer{p}, refresh: make(chan struct{}, 1)}
	b := start(t, cluster.Config{Discovery: fs, Mesh: mesh.Config{Name: "cb@127.0.0.1", Cookie: "c", Listen: "127.0.0.1:0"}})
	b.rec.waitFor(t, wait, "ca up via custom strategy", func(evs []cluster.Event) bool {
		return up(evs)["ca@127.0.0.1"] && count(evs, cluster.Discovered, "ca@127.0.0.1") == 1
	})
	for _, e := range b.rec.all() {
		if e.Kind == cluster.Discovered && e.Source != "fixed" {
			t.Fatalf("%s: source %q, want fixed", e, e.Source)
		}
	}
	b.c.BroadcastNow()
	select {
	case <-fs.refresh:
	case <-time.After(wait):
		t.Fatal("BroadcastNow did not reach the strategy")
	}
}

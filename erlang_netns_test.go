//go:build linux

package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/erldist"
	"github.com/macula-io/cluster/gossip"
	"github.com/macula-io/cluster/internal/erltest"
	"github.com/macula-io/cluster/internal/netlab"
)

// The Go and Erlang nodes of TestErlangNetns, each in a network namespace of its own on the
// lab's switch (198.18.0.0/16), with the defaults a real deployment has inside them: gossip on
// 45892 of eth0, epmd on 4369.
const (
	netnsCookie   = "cluster-erlang-netns-cookie"
	netnsGoName   = "go@198.18.0.10"
	netnsErlName  = "erl1@198.18.0.11"
	netnsGossip   = 45892
	netnsInterval = 100 * time.Millisecond
	helperEnv     = "CLUSTER_ERLANG_HELPER"
)

// TestErlangNetns: a Go cluster node with Config.Erlang (this test binary, re-executed as
// TestErlangNetnsHelper) in one namespace and an Erlang node running Macula's gossip in another
// discover each other by multicast on the lab's switch, report nodeup both ways, exchange
// messages and a gen_server:call both ways, see the link down by tick timeout when the cable
// is cut and up when it is back, report nodedown when the other is killed, and nodeup again
// when it restarts (a new creation).
func TestErlangNetns(t *testing.T) {
	erltest.NeedErlang(t)
	lab := netlab.New(t, netlab.Options{Hosts: 2}) // skips without root, fails under CI=true
	hGo, hErl := lab.Hosts[0], lab.Hosts[1]
	if hGo.IP.String() != strings.TrimPrefix(netnsGoName, "go@") || hErl.IP.String() != strings.TrimPrefix(netnsErlName, "erl1@") {
		t.Fatalf("lab addresses %s %s changed", hGo.IP, hErl.IP)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A real epmd in each namespace: Erlang looks the Go node up at 198.18.0.10:4369 (the
	// embedded one answers on loopback only).
	for _, h := range []*netlab.Host{hGo, hErl} {
		startNetnsEPMD(t, ctx, h)
	}
	startErl := func() *erltest.Node {
		return erltest.Start(t, erltest.Options{Name: netnsErlName, Cookie: netnsCookie, Netns: hErl.NS,
			Addr: hErl.IP.String(), GossipPort: netnsGossip, GossipInterval: netnsInterval})
	}
	startGo := func() *netlab.Proc {
		p, err := hGo.Start(ctx, []string{helperEnv + "=1", "GORACE=atexit_sleep_ms=0"},
			os.Args[0], "-test.run=^TestErlangNetnsHelper$", "-test.count=1")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// wait waits for a line of the Go node, after since.
	wait := func(p *netlab.Proc, what string, since time.Time, match func(netlab.Line) bool) netlab.Line {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
		defer wcancel()
		l, err := p.WaitFor(wctx, func(l netlab.Line) bool { return !l.At.Before(since) && match(l) })
		if err != nil {
			t.Fatalf("Go node: no %s: %v\nstderr:\n%s", what, err, p.Stderr())
		}
		return l
	}
	is := func(event, node string) func(netlab.Line) bool {
		return func(l netlab.Line) bool { return l.Event() == event && l.Node() == node }
	}
	at := func(l netlab.Line) time.Time {
		us, err := strconv.ParseInt(l.Str("t"), 10, 64)
		if err != nil {
			t.Fatalf("no time in %s", l)
		}
		return time.UnixMicro(us)
	}

	e := startErl()
	began := time.Now()
	g := startGo()
	// Both see each other: the Erlang node connects on the Go node's Erlang-form heartbeat, the
	// Go node on the Erlang node's.
	heard := erltest.Stamp(t, e.WaitLine("heard "+netnsGoName+" ", 10*time.Second))
	erlUp := erltest.Stamp(t, e.WaitLine("nodeup "+netnsGoName+" ", 10*time.Second))
	disc := wait(g, "discovered "+netnsErlName, began, is("discovered", netnsErlName))
	up := wait(g, "nodeup "+netnsErlName, began, is("nodeup", netnsErlName))
	if up.Str("protocol") != cluster.ProtocolErlang || disc.Str("addr") != "" {
		t.Fatalf("Go node: %s, %s: want an Erlang peer without address", disc, up)
	}
	// Whichever side hears the other first connects; the other side's NodeUp comes with it.
	t.Logf("Erlang nodeup %v after the Go node's first Erlang-form heartbeat reached it; Go NodeUp %v after the Go process started (discovered %v after)",
		erlUp.Sub(heard), at(up).Sub(began), at(disc).Sub(began))

	// Messages both ways: the Go node sends {echo, Pid, N} to macula_gossip on SIGUSR1 and
	// reports the answer; Erlang sends {hello, node()} to gobox and calls it.
	echoed := time.Now()
	if err := g.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	echo := wait(g, "echo from "+netnsErlName, echoed, is("echo", netnsErlName))
	t.Logf("round trip Go -> Erlang -> Go across the namespaces: %s us", echo.Str("rtt_us"))
	sent := time.Now()
	e.Command("send " + netnsGoName)
	wait(g, "hello from "+netnsErlName, sent, is("hello", netnsErlName))
	e.Command("call " + netnsGoName)
	if l := e.WaitLine("call ", 10*time.Second); l != "call {ok,ping}" {
		t.Fatalf("gen_server:call from Erlang to the Go node's gobox: %s", l)
	}

	// The Erlang host's cable is cut: no FIN, no RST, silence. Both sides see the link down by
	// net_tick timeout (4 s, checked every second), and up again once the cable is back.
	cut := time.Now()
	if err := hErl.Cut(); err != nil {
		t.Fatal(err)
	}
	tdown := wait(g, "nodedown after the cut", cut, is("nodedown", netnsErlName))
	erlTDown := waitStamped(t, e, "nodedown "+netnsGoName+" ", cut)
	// Erlang's rule gives 4-5 s; a loaded machine (two CPU hogs, other suites) was seen
	// at 7.3 s on the Erlang side.
	const tick = 4 * time.Second
	if took := at(tdown).Sub(cut); tdown.Str("reason") != "timeout" || took < tick/2 || took > 3*tick {
		t.Errorf("Go node: %s %v after the cut: want reason timeout within [%v, %v]", tdown, took, tick/2, 3*tick)
	}
	if took := erlTDown.Sub(cut); took < tick/2 || took > 3*tick {
		t.Errorf("Erlang nodedown %v after the cut: want within [%v, %v]", took, tick/2, 3*tick)
	}
	restored := time.Now()
	if err := hErl.Restore(); err != nil {
		t.Fatal(err)
	}
	tup := wait(g, "nodeup after the cable is back", restored, is("nodeup", netnsErlName))
	erlTUp := waitStamped(t, e, "nodeup "+netnsGoName+" ", restored)
	t.Logf("cable cut: Go NodeDown (timeout) %v and Erlang nodedown %v after the cut; nodeup %v (Go) and %v (Erlang) after it was restored",
		at(tdown).Sub(cut), erlTDown.Sub(cut), at(tup).Sub(restored), erlTUp.Sub(restored))

	// The Erlang node dies: nodedown on the Go side at once (the TCP link closes).
	killed := time.Now()
	e.Kill()
	down := wait(g, "nodedown "+netnsErlName, killed, is("nodedown", netnsErlName))
	if down.Str("reason") != "closed" || down.Str("protocol") != cluster.ProtocolErlang {
		t.Errorf("nodedown %s: want reason closed, protocol erlang", down)
	}
	t.Logf("Go NodeDown %v after SIGKILL of the Erlang node", at(down).Sub(killed))

	// It restarts under its name: a new creation, nodeup again on both sides, and messages.
	restarted := time.Now()
	e = startErl()
	up2 := wait(g, "second nodeup "+netnsErlName, restarted, is("nodeup", netnsErlName))
	// (The Go node may have dialled the new VM before its script registered macula_gossip;
	// Start returned after it did.)
	echoed = time.Now()
	if err := g.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	wait(g, "echo from the restarted "+netnsErlName, echoed, is("echo", netnsErlName))
	t.Logf("Go NodeUp %v after the Erlang node was restarted (its VM boot included)", at(up2).Sub(restarted))
	ensureNodes(t, e, netnsGoName)

	// The Go node dies: nodedown on the Erlang side at once; restarted, nodeup again.
	killed = time.Now()
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	erlDown := waitStamped(t, e, "nodedown "+netnsGoName+" ", killed)
	t.Logf("Erlang nodedown %v after SIGKILL of the Go node", erlDown.Sub(killed))
	restarted = time.Now()
	g = startGo()
	erlUp = waitStamped(t, e, "nodeup "+netnsGoName+" ", restarted)
	wait(g, "nodeup after the Go node's restart", restarted, is("nodeup", netnsErlName))
	t.Logf("Erlang nodeup %v after the Go node was restarted", erlUp.Sub(restarted))

	// A graceful leave: Erlang sees nodedown, the Go node exits cleanly.
	if err := g.Stop(); err != nil {
		t.Errorf("Go node: %v\nstderr:\n%s", err, g.Stderr())
	}
	waitStamped(t, e, "nodedown "+netnsGoName+" ", erlUp)
	for _, l := range e.Pending() {
		if strings.HasPrefix(l, "unexpected") {
			t.Errorf("Erlang node: %s", l)
		}
	}
}

// waitStamped waits for a line of e that starts with prefix and is stamped after since;
// older ones (a nodeup of an earlier link) are skipped.
func waitStamped(t *testing.T, e *erltest.Node, prefix string, since time.Time) time.Time {
	t.Helper()
	for {
		if at := erltest.Stamp(t, e.WaitLine(prefix, 10*time.Second)); at.After(since) {
			return at
		}
	}
}

// ensureNodes waits until the Erlang node lists node in nodes() (the Go node may dial a
// restarted VM before its script monitors nodes, so there is no nodeup line then).
func ensureNodes(t *testing.T, e *erltest.Node, node string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		e.Command("nodes")
		if l := e.WaitLine("nodes ", 10*time.Second); strings.Contains(l, "'"+node+"'") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not list %s in nodes()", e.Name(), node)
		}
	}
}

// startNetnsEPMD runs epmd on port 4369 inside h (all of the namespace's addresses) until the
// lab closes, and waits until it answers there.
func startNetnsEPMD(t *testing.T, ctx context.Context, h *netlab.Host) {
	t.Helper()
	epmd, err := exec.LookPath("epmd")
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Start(ctx, nil, epmd, "-port", "4369")
	if err != nil {
		t.Fatal(err)
	}
	for {
		err := netlab.InNetns(h.NS, func() error {
			c, err := net.DialTimeout("tcp", "127.0.0.1:4369", time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return
		}
		select {
		case <-p.Done():
			t.Fatalf("epmd in %s exited: %s", h.NS, p.Stderr())
		case <-ctx.Done():
			t.Fatalf("epmd in %s: %v", h.NS, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestErlangNetnsHelper is the Go node of TestErlangNetns, run inside the lab's namespace 0:
// a cluster with Config.Erlang gossiping on eth0. It prints one JSON object per line: ready;
// discovered, lost, nodeup and nodedown (t: the event's time in unix microseconds); echo (the
// answer of an Erlang peer's macula_gossip to the {echo, Pid, N} sent to every Erlang peer on
// SIGUSR1, with the round trip); hello (a message {hello, Node} to gobox); call (a gen_server:call to gobox,
// answered {ok, Request}). It leaves on SIGTERM.
func TestErlangNetnsHelper(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		t.Skip("helper process of TestErlangNetns")
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	emit := func(kv ...any) {
		m := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		b, _ := json.Marshal(m)
		fmt.Println(string(b))
	}
	var cfg cluster.Config
	cfg.Strategy = cluster.StrategyGossip
	cfg.Gossip = gossip.Config{Port: netnsGossip, Interfaces: []string{"eth0"}, Interval: netnsInterval}
	cfg.Mesh.Name, cfg.Mesh.Listen, cfg.Mesh.Cookie = netnsGoName, strings.TrimPrefix(netnsGoName, "go@")+":0", netnsCookie
	cfg.Erlang = cluster.ErlangConfig{Enable: true, TickTime: 4 * time.Second, RetryInterval: 200 * time.Millisecond}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.EventQueue = -1
	cfg.OnEvent = func(e cluster.Event) {
		emit("event", strings.ToLower(e.Kind.String()), "node", e.Node, "addr", e.Addr, "protocol", e.Protocol,
			"reason", e.Reason, "t", strconv.FormatInt(e.Time.UnixMicro(), 10))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := cluster.Start(ctx, cfg)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	box, err := c.Erlang().Register("gobox")
	if err != nil {
		t.Fatal(err)
	}
	emit("event", "ready", "node", c.Self().Node)
	sentAt := map[int64]time.Time{}
	var seq int64
	for done := false; !done; {
		select {
		case <-sig:
			done = true
		case <-time.After(50 * time.Second): // bounded, whatever the test does
			done = true
		case <-usr1:
			for _, node := range c.Erlang().Nodes() {
				seq++
				sentAt[seq] = time.Now()
				sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := box.Send(sctx, erldist.Name{Node: node, Name: "macula_gossip"}, erldist.Tuple{erldist.Atom("echo"), box.Pid(), seq})
				scancel()
				if err != nil {
					emit("event", "error", "err", err.Error())
				}
			}
		case m := <-box.C():
			tu, _ := m.Term.(erldist.Tuple)
			switch {
			case m.Call != nil:
				rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
				box.Reply(rctx, m, erldist.Tuple{erldist.Atom("ok"), m.Term})
				rcancel()
				emit("event", "call", "node", m.Node)
			case len(tu) == 3 && tu[0] == erldist.Atom("echo"):
				n, _ := tu[2].(int64)
				emit("event", "echo", "node", m.Node, "rtt_us", time.Since(sentAt[n]).Microseconds())
			case len(tu) == 2 && tu[0] == erldist.Atom("hello"):
				emit("event", "hello", "node", m.Node)
			default:
				emit("event", "unexpected", "node", m.Node, "term", fmt.Sprintf("%#v", m.Term))
			}
		}
	}
	c.Close()
	emit("event", "closed")
}

package erldist

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/macula-io/cluster/internal/erltest"
)

func TestErlangConnectsToGo(t *testing.T) {
	needErlang(t)
	port := startEPMD(t)
	ev := newEvents()
	g := startGo(t, "go@127.0.0.1", port, ev.config)
	e := startErl(t, "erl1@127.0.0.1", port, erlOpts{connect: "go@127.0.0.1"})
	if l := e.WaitLine("ping ", 10*time.Second); l != "ping pong" {
		t.Fatalf("net_adm:ping from Erlang: %s", l)
	}
	e.WaitLine("nodeup go@127.0.0.1", 5*time.Second)
	if got := ev.wait(t, 1, 5*time.Second); got[0] != "up erl1@127.0.0.1" {
		t.Fatalf("events %q", got)
	}
	// A second ping on the same link, and nodes() lists the Go node (visible).
	e.Command("ping go@127.0.0.1")
	if l := e.WaitLine("ping ", 5*time.Second); l != "ping pong" {
		t.Fatal(l)
	}
	e.Command("nodes")
	if l := e.WaitLine("nodes ", 5*time.Second); !strings.Contains(l, "'go@127.0.0.1'") {
		t.Fatalf("Go node not in nodes(): %s", l)
	}
	if ns := g.Nodes(); len(ns) != 1 || ns[0] != "erl1@127.0.0.1" {
		t.Fatalf("Nodes() = %q", ns)
	}
	// Closing the Go node: Erlang sees nodedown at once, Go reports the link down once.
	closed := time.Now()
	g.Close()
	e.WaitLine("nodedown go@127.0.0.1", 5*time.Second)
	t.Logf("Erlang nodedown %v after Close", time.Since(closed))
	if got := ev.snapshot(); len(got) != 2 || got[1] != "down erl1@127.0.0.1 closed" {
		t.Fatalf("events %q", got)
	}
}

func TestGoConnectsToErlang(t *testing.T) {
	needErlang(t)
	port := startEPMD(t)
	ev := newEvents()
	g := startGo(t, "go@127.0.0.1", port, ev.config)
	e := startErl(t, "erl2@127.0.0.1", port, erlOpts{})
	start := time.Now()
	if err := g.Connect(context.Background(), "erl2@127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	t.Logf("connect (epmd lookup + TCP + handshake) took %v", time.Since(start))
	e.WaitLine("nodeup go@127.0.0.1", 5*time.Second)
	ev.wait(t, 1, 5*time.Second)
	if err := g.Connect(context.Background(), "erl2@127.0.0.1"); err != nil {
		t.Fatalf("second Connect: %v", err)
	}
	e.Command("ping go@127.0.0.1")
	if l := e.WaitLine("ping ", 5*time.Second); l != "ping pong" {
		t.Fatal(l)
	}
}

func TestMessagesAndCalls(t *testing.T) {
	needErlang(t)
	port := startEPMD(t)
	g := startGo(t, "go@127.0.0.1", port, nil)
	startErl(t, "erl3@127.0.0.1", port, erlOpts{})
	ctx := context.Background()
	box, err := g.Register("gobox")
	if err != nil {
		t.Fatal(err)
	}
	agent := Name{Node: "erl3@127.0.0.1", Name: "agent"}

	// Go -> Erlang registered name, Erlang -> Go pid (SEND_SENDER).
	payload := Tuple{Atom("hello"), []byte("bin"), int64(-5), 2.5, List{int64(1), Atom("a")},
		Map{{Key: Atom("k"), Value: int64(1)}}}
	if err := box.Send(ctx, agent, Tuple{Atom("echo"), box.Pid(), payload}); err != nil {
		t.Fatal(err)
	}
	msg := recv(t, box, 5*time.Second)
	if !Equal(msg.Term, payload) {
		t.Fatalf("echo: got %#v", msg.Term)
	}
	if msg.From.Node != "erl3@127.0.0.1" || msg.Node != "erl3@127.0.0.1" {
		t.Fatalf("echo sender %v node %s", msg.From, msg.Node)
	}

	// Erlang -> Go registered name (REG_SEND).
	if err := box.Send(ctx, agent, Tuple{Atom("send_to"), Tuple{Atom("gobox"), Atom("go@127.0.0.1")}, Atom("by_name")}); err != nil {
		t.Fatal(err)
	}
	if msg := recv(t, box, 5*time.Second); msg.Term != Atom("by_name") {
		t.Fatalf("by name: got %#v", msg.Term)
	}

	// gen_server:call from Erlang to a Go name.
	srv, err := g.Register("gosrv")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for m := range srv.C() {
			if m.Call != nil {
				srv.Reply(ctx, m, Tuple{Atom("ok"), m.Term})
			}
		}
	}()
	if err := box.Send(ctx, agent, Tuple{Atom("call"), Tuple{Atom("gosrv"), Atom("go@127.0.0.1")}, Atom("req"), box.Pid()}); err != nil {
		t.Fatal(err)
	}
	msg = recv(t, box, 5*time.Second)
	if want := (Tuple{Atom("call_result"), Tuple{Atom("ok"), Atom("req")}}); !Equal(msg.Term, want) {
		t.Fatalf("call: got %#v", msg.Term)
	}

	// A call to a name the Go node does not have: the monitor answers noproc at once.
	box.Send(ctx, agent, Tuple{Atom("call"), Tuple{Atom("nobody"), Atom("go@127.0.0.1")}, Atom("req"), box.Pid()})
	msg = recv(t, box, 5*time.Second)
	if s := (func() string { b, _ := Encode(msg.Term); return string(b) })(); !strings.Contains(s, "noproc") {
		t.Fatalf("call to unknown name: %#v", msg.Term)
	}

	// net_adm:ping of the Go node from Erlang, over the existing link.
	box.Send(ctx, agent, Tuple{Atom("ping"), Atom("go@127.0.0.1"), box.Pid()})
	if msg := recv(t, box, 5*time.Second); !Equal(msg.Term, Tuple{Atom("pong"), Atom("pong")}) {
		t.Fatalf("ping: %#v", msg.Term)
	}

	// An Erlang monitor on a Go name sees it go away when the mailbox closes.
	box.Send(ctx, agent, Tuple{Atom("monitor"), Tuple{Atom("gosrv"), Atom("go@127.0.0.1")}, box.Pid()})
	if msg := recv(t, box, 5*time.Second); !isTag(msg.Term, "monitoring") {
		t.Fatalf("monitor: %#v", msg.Term)
	}
	srv.Close()
	if msg := recv(t, box, 5*time.Second); !Equal(msg.Term, Tuple{Atom("down"), Atom("normal")}) {
		t.Fatalf("monitor down: %#v", msg.Term)
	}

	// Link from Erlang, then exit: the agent stays up (the exit reason normal is ignored).
	other, _ := g.Register("")
	box.Send(ctx, agent, Tuple{Atom("link_to"), other.Pid(), box.Pid()})
	if msg := recv(t, box, 5*time.Second); msg.Term != Atom("linked") {
		t.Fatalf("link: %#v", msg.Term)
	}
	other.Close()
	box.Send(ctx, agent, Tuple{Atom("echo"), box.Pid(), Atom("still_there")})
	if msg := recv(t, box, 5*time.Second); msg.Term != Atom("still_there") {
		t.Fatalf("after unlink: %#v", msg.Term)
	}
	if d := g.Dropped(); d != 1 { // the call to `nobody`, as Erlang drops it too
		t.Fatalf("%d messages dropped, want 1", d)
	}
}

func isTag(t Term, tag string) bool {
	tu, ok := t.(Tuple)
	return ok && len(tu) > 0 && tu[0] == Atom(tag)
}

func TestTicksKeepIdleLinkAndTimeoutDetectsStoppedNode(t *testing.T) {
	needErlang(t)
	if testing.Short() {
		t.Skip("takes ~20 s")
	}
	port := startEPMD(t)
	ev := newEvents()
	g := startGo(t, "go@127.0.0.1", port, ev.config) // TickTime 4 s, like the Erlang node
	e := startErl(t, "erl4@127.0.0.1", port, erlOpts{ticktime: 4})
	if err := g.Connect(context.Background(), "erl4@127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	e.WaitLine("nodeup go@127.0.0.1", 5*time.Second)
	// A second Go node with Erlang's default 60 s: it ticks only every 15 s on its own, so the
	// Erlang node (4 s) keeps the link only because its ticks are answered.
	ev2 := newEvents()
	g2 := startGo(t, "go2@127.0.0.1", port, func(c *Config) { ev2.config(c); c.TickTime = time.Minute })
	if err := g2.Connect(context.Background(), "erl4@127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	e.WaitLine("nodeup go2@127.0.0.1", 5*time.Second)
	// Idle for three tick times: neither side may drop the link.
	time.Sleep(12 * time.Second)
	if got := ev.snapshot(); len(got) != 1 {
		t.Fatalf("idle link dropped: %q", got)
	}
	if got := ev2.snapshot(); len(got) != 1 {
		t.Fatalf("idle link of the 60 s node dropped: %q", got)
	}
	if l := e.Pending(); len(l) != 0 {
		t.Fatalf("Erlang said %q while idle", l)
	}
	// Freeze the Erlang node: the Go side must see net_tick_timeout within ~TickTime.
	e.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	got := ev.wait(t, 2, 10*time.Second)
	t.Logf("nodedown %v after SIGSTOP", time.Since(stopped))
	if got[1] != "down erl4@127.0.0.1 tick" {
		t.Fatalf("events %q", got)
	}
	e.Signal(syscall.SIGCONT)
}

func TestKillAndRestartErlang(t *testing.T) {
	needErlang(t)
	port := startEPMD(t)
	ev := newEvents()
	g := startGo(t, "go@127.0.0.1", port, ev.config)
	e := startErl(t, "erl5@127.0.0.1", port, erlOpts{connect: "go@127.0.0.1"})
	e.WaitLine("ping pong", 10*time.Second)
	ev.wait(t, 1, 5*time.Second)
	box, _ := g.Register("box")
	ctx := context.Background()
	agent := Name{Node: "erl5@127.0.0.1", Name: "agent"}
	box.Send(ctx, agent, Tuple{Atom("echo"), box.Pid(), box.Pid()}) // any term carrying the peer's pid
	box.Send(ctx, agent, Tuple{Atom("nodes"), box.Pid()})
	recv(t, box, 5*time.Second)
	first := recv(t, box, 5*time.Second).From

	killed := time.Now()
	e.Kill()
	got := ev.wait(t, 2, 5*time.Second)
	t.Logf("nodedown %v after SIGKILL", time.Since(killed))
	if got[1] != "down erl5@127.0.0.1 closed" {
		t.Fatalf("events %q", got)
	}
	e2 := startErl(t, "erl5@127.0.0.1", port, erlOpts{connect: "go@127.0.0.1"})
	e2.WaitLine("ping pong", 10*time.Second)
	got = ev.wait(t, 3, 5*time.Second)
	if got[2] != "up erl5@127.0.0.1" {
		t.Fatalf("events %q", got)
	}
	box.Send(ctx, agent, Tuple{Atom("nodes"), box.Pid()})
	second := recv(t, box, 5*time.Second).From
	if first.Creation == second.Creation {
		t.Fatalf("restarted node kept creation %d", first.Creation)
	}
	if len(ev.snapshot()) != 3 {
		t.Fatalf("events %q", ev.snapshot())
	}
}

// Both sides connect at the same moment, many times, with the Go name ordered both before and
// after the Erlang name: exactly one link, one nodeup per round on each side.
func TestSimultaneousConnect(t *testing.T) {
	needErlang(t)
	port := startEPMD(t)
	for _, names := range [][2]string{{"go@127.0.0.1", "aaa@127.0.0.1"}, {"go@127.0.0.1", "zzz@127.0.0.1"}} {
		t.Run(names[1], func(t *testing.T) {
			ev := newEvents()
			g := startGo(t, names[0], port, ev.config)
			e := startErl(t, names[1], port, erlOpts{})
			const rounds = 10
			for i := range rounds {
				e.Command("connect " + names[0])
				if err := g.Connect(context.Background(), names[1]); err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
				if l := e.WaitLine("connect ", 10*time.Second); l != "connect true" {
					t.Fatalf("round %d: Erlang %s", i, l)
				}
				e.WaitLine("nodeup "+names[0], 5*time.Second)
				ev.wait(t, 2*i+1, 5*time.Second)
				g.dropConn(Atom(names[1]), ErrConnClosed)
				e.WaitLine("nodedown "+names[0], 5*time.Second)
				ev.wait(t, 2*i+2, 5*time.Second)
			}
			got := ev.snapshot()
			for i, s := range got {
				want := "up " + names[1]
				if i%2 == 1 {
					want = "down " + names[1] + " closed"
				}
				if s != want {
					t.Fatalf("event %d = %q, want %q (all: %q)", i, s, want, got)
				}
			}
		})
	}
}

// The embedded EPMD serves an Erlang node when no epmd runs.
func TestEmbeddedEPMDWithErlang(t *testing.T) {
	needErlang(t)
	port := freePort(t)
	ev := newEvents()
	g := startGo(t, "go@127.0.0.1", port, func(c *Config) { ev.config(c); c.EmbeddedEPMD = true })
	if g.epmd == nil {
		t.Fatal("no embedded epmd started")
	}
	e := startErl(t, "erl6@127.0.0.1", port, erlOpts{connect: "go@127.0.0.1"})
	e.WaitLine("ping pong", 10*time.Second)
	ev.wait(t, 1, 5*time.Second)
	info, err := LookupPort(context.Background(), "127.0.0.1", port, "erl6")
	if err != nil || info.Port == 0 || info.HighVersion != 6 {
		t.Fatalf("lookup of the Erlang node in the embedded epmd: %+v %v", info, err)
	}
}

func TestWrongCookieRejected(t *testing.T) {
	needErlang(t)
	port := startEPMD(t)
	ev := newEvents()
	g := startGo(t, "go@127.0.0.1", port, func(c *Config) { ev.config(c); c.Cookie = "wrong" })
	startErl(t, "erl7@127.0.0.1", port, erlOpts{})
	err := g.Connect(context.Background(), "erl7@127.0.0.1")
	if err == nil {
		t.Fatal("connected with a wrong cookie")
	}
	t.Logf("wrong cookie: %v", err)
	if got := ev.snapshot(); len(got) != 0 {
		t.Fatalf("events %q", got)
	}
}

// global:sync() on the Erlang side completes with the Go node connected, both when the Erlang
// node connected first and when the Go node did, and with two Erlang nodes in the cluster.
func TestGlobalSync(t *testing.T) {
	needErlang(t)
	port := startEPMD(t)
	g := startGo(t, "go@127.0.0.1", port, nil)
	e1 := startErl(t, "gl1@127.0.0.1", port, erlOpts{connect: "go@127.0.0.1"})
	e1.WaitLine("ping pong", 10*time.Second)
	start := time.Now()
	e1.Command("global_sync")
	if l := e1.WaitLine("global_sync ", 10*time.Second); l != "global_sync ok" {
		t.Fatal(l)
	}
	t.Logf("global:sync() with the Go node: %v", time.Since(start))
	e2 := startErl(t, "gl2@127.0.0.1", port, erlOpts{})
	if err := g.Connect(context.Background(), "gl2@127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	e2.Command("global_sync")
	if l := e2.WaitLine("global_sync ", 10*time.Second); l != "global_sync ok" {
		t.Fatalf("%s: %s", e2.Name(), l)
	}
	e2.Command("connect gl1@127.0.0.1")
	e2.WaitLine("connect true", 5*time.Second)
	for _, e := range []*erltest.Node{e1, e2} {
		e.Command("global_sync")
		if l := e.WaitLine("global_sync ", 10*time.Second); l != "global_sync ok" {
			t.Fatalf("%s: %s", e.Name(), l)
		}
		e.Command("nodes")
		if l := e.WaitLine("nodes ", 5*time.Second); !strings.Contains(l, "'go@127.0.0.1'") {
			t.Fatalf("%s lost the Go node: %s", e.Name(), l)
		}
	}
	// A third node that the Go node connects and that joins the others before any sync.
	e3 := startErl(t, "gl3@127.0.0.1", port, erlOpts{})
	if err := g.Connect(context.Background(), "gl3@127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	e3.Command("connect gl1@127.0.0.1")
	e3.WaitLine("connect true", 5*time.Second)
	for _, e := range []*erltest.Node{e3, e1, e2} {
		e.Command("global_sync")
		if l := e.WaitLine("global_sync ", 10*time.Second); l != "global_sync ok" {
			t.Fatalf("%s: %s", e.Name(), l)
		}
		var l string
		for range 50 {
			e.Command("nodes")
			if l = e.WaitLine("nodes ", 5*time.Second); strings.Count(l, "@") == 3 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if strings.Count(l, "@") != 3 {
			t.Fatalf("%s: %s", e.Name(), l)
		}
	}
}

// Go calls Erlang gen_servers: net_kernel's is_auth (what net_adm:ping does), and a name that
// does not exist fails at once with noproc through the monitor.
func TestCallErlang(t *testing.T) {
	needErlang(t)
	port := startEPMD(t)
	g := startGo(t, "go@127.0.0.1", port, nil)
	startErl(t, "callee@127.0.0.1", port, erlOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := g.Call(ctx, Name{Node: "callee@127.0.0.1", Name: "net_kernel"}, Tuple{Atom("is_auth"), Atom("go@127.0.0.1")})
	if err != nil || got != Atom("yes") {
		t.Fatalf("is_auth: %#v, %v", got, err)
	}
	start := time.Now()
	_, err = g.Call(ctx, Name{Node: "callee@127.0.0.1", Name: "nobody"}, Atom("x"))
	if !errors.Is(err, ErrCallFailed) || !strings.Contains(err.Error(), "noproc") {
		t.Fatalf("call to a missing name: %v", err)
	}
	t.Logf("noproc after %v", time.Since(start))
	if g.Dropped() != 0 {
		t.Fatalf("%d dropped", g.Dropped())
	}
}

// A hidden Go node is in the Erlang node's nodes(hidden), not in nodes(), and still talks.
func TestHiddenNode(t *testing.T) {
	needErlang(t)
	port := startEPMD(t)
	g := startGo(t, "go@127.0.0.1", port, func(c *Config) { c.Hidden = true })
	e := startErl(t, "seer@127.0.0.1", port, erlOpts{})
	if err := g.Connect(context.Background(), "seer@127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	// The Erlang side finishes its half of the setup just after Go's Connect returns.
	var l string
	for range 50 {
		e.Command("hidden")
		if l = e.WaitLine("hidden ", 5*time.Second); strings.Contains(l, "'go@127.0.0.1'") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(l, "'go@127.0.0.1'") {
		t.Fatal(l)
	}
	e.Command("nodes")
	if l := e.WaitLine("nodes ", 5*time.Second); l != "nodes []" {
		t.Fatal(l)
	}
	if r, err := g.Call(context.Background(), Name{Node: "seer@127.0.0.1", Name: "net_kernel"}, Tuple{Atom("is_auth"), Atom("go@127.0.0.1")}); err != nil || r != Atom("yes") {
		t.Fatalf("%#v %v", r, err)
	}
}

package erldist

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Two Go nodes on an embedded EPMD: a handshake in both roles without Erlang installed.
func goPair(t *testing.T) (*Node, *Node, *events, *events) {
	t.Helper()
	port := freePort(t)
	eva, evb := newEvents(), newEvents()
	a := startGo(t, "a@127.0.0.1", port, func(c *Config) { eva.config(c); c.EmbeddedEPMD = true })
	b := startGo(t, "b@127.0.0.1", port, evb.config)
	return a, b, eva, evb
}

func TestGoToGo(t *testing.T) {
	a, b, eva, evb := goPair(t)
	ctx := context.Background()
	if err := a.Connect(ctx, "b@127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	eva.wait(t, 1, 5*time.Second)
	evb.wait(t, 1, 5*time.Second)
	box, _ := b.Register("box")
	if err := a.Send(ctx, Name{Node: "b@127.0.0.1", Name: "box"}, Tuple{Atom("hi"), int64(1)}); err != nil {
		t.Fatal(err)
	}
	m := recv(t, box, 5*time.Second)
	if !Equal(m.Term, Tuple{Atom("hi"), int64(1)}) || m.From != a.Self() {
		t.Fatalf("%+v", m)
	}
	// A call from b to a's mailbox and the reply to b's mailbox pid.
	srv, _ := a.Register("srv")
	ref := b.MakeRef()
	box.Send(ctx, Name{Node: "a@127.0.0.1", Name: "srv"}, Tuple{Atom("$gen_call"), Tuple{box.Pid(), ref}, Atom("q")})
	call := recv(t, srv, 5*time.Second)
	if call.Call == nil || call.Term != Atom("q") {
		t.Fatalf("%+v", call)
	}
	srv.Reply(ctx, call, Atom("r"))
	if m := recv(t, box, 5*time.Second); !Equal(m.Term, Tuple{ref, Atom("r")}) {
		t.Fatalf("reply %#v", m.Term)
	}
	// A pid of an earlier incarnation of b (another creation) reaches no mailbox.
	stale := box.Pid()
	stale.Creation++
	before := b.Dropped()
	a.Send(ctx, stale, Atom("old"))
	a.Send(ctx, box.Pid(), Atom("new"))
	if m := recv(t, box, 5*time.Second); m.Term != Atom("new") || b.Dropped() != before+1 {
		t.Fatalf("got %#v, dropped %d -> %d", m.Term, before, b.Dropped())
	}
	// Node.Call, to a Go mailbox and to the built-in net_kernel; a missing name fails at once.
	if r, err := b.Call(ctx, Name{Node: "a@127.0.0.1", Name: "net_kernel"}, Tuple{Atom("is_auth"), Atom("b@127.0.0.1")}); err != nil || r != Atom("yes") {
		t.Fatalf("Call net_kernel: %#v %v", r, err)
	}
	go func() {
		if m, ok := <-srv.C(); ok {
			srv.Reply(ctx, m, Tuple{Atom("echo"), m.Term})
		}
	}()
	if r, err := b.Call(ctx, Name{Node: "a@127.0.0.1", Name: "srv"}, int64(7)); err != nil || !Equal(r, Tuple{Atom("echo"), int64(7)}) {
		t.Fatalf("Call srv: %#v %v", r, err)
	}
	if _, err := b.Call(ctx, Name{Node: "a@127.0.0.1", Name: "nobody"}, int64(7)); !errors.Is(err, ErrCallFailed) {
		t.Fatalf("Call nobody: %v", err)
	}
	b.Close()
	got := eva.wait(t, 2, 5*time.Second)
	if got[1] != "down b@127.0.0.1 closed" {
		t.Fatalf("%q", got)
	}
	if err := b.Connect(ctx, "a@127.0.0.1"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Connect after Close: %v", err)
	}
	if _, err := b.Register("x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Register after Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got := evb.snapshot(); len(got) != 2 || got[1] != "down a@127.0.0.1 closed" {
		t.Fatalf("b's events %q", got)
	}
}

// Both Go nodes dial each other at once, many times: one link, one up per round per side.
func TestGoSimultaneous(t *testing.T) {
	a, b, eva, evb := goPair(t)
	ctx := context.Background()
	for i := range 20 {
		var wg sync.WaitGroup
		var ea, eb error
		wg.Add(2)
		go func() { defer wg.Done(); ea = a.Connect(ctx, "b@127.0.0.1") }()
		go func() { defer wg.Done(); eb = b.Connect(ctx, "a@127.0.0.1") }()
		wg.Wait()
		if ea != nil || eb != nil {
			t.Fatalf("round %d: %v / %v", i, ea, eb)
		}
		eva.wait(t, 2*i+1, 5*time.Second)
		evb.wait(t, 2*i+1, 5*time.Second)
		a.dropConn("b@127.0.0.1", ErrConnClosed)
		eva.wait(t, 2*i+2, 5*time.Second)
		evb.wait(t, 2*i+2, 5*time.Second)
	}
	for _, ev := range []*events{eva, evb} {
		got := ev.snapshot()
		for i, s := range got {
			if (i%2 == 0) != (s[:2] == "up") {
				t.Fatalf("events out of order: %q", got)
			}
		}
	}
}

// Two idle Go nodes keep their link with ticks, and the tick answer does not ping-pong.
func TestGoTicks(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 2 s")
	}
	port := freePort(t)
	eva, evb := newEvents(), newEvents()
	tick := 400 * time.Millisecond
	a := startGo(t, "a@127.0.0.1", port, func(c *Config) { eva.config(c); c.EmbeddedEPMD = true; c.TickTime = tick })
	startGo(t, "b@127.0.0.1", port, func(c *Config) { evb.config(c); c.TickTime = tick })
	if err := a.Connect(context.Background(), "b@127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * tick)
	if got := eva.snapshot(); len(got) != 1 {
		t.Fatalf("idle link dropped: %q", got)
	}
	if got := evb.snapshot(); len(got) != 1 {
		t.Fatalf("idle link dropped: %q", got)
	}
}

func TestWrongCookieGo(t *testing.T) {
	port := freePort(t)
	a := startGo(t, "a@127.0.0.1", port, func(c *Config) { c.EmbeddedEPMD = true })
	startGo(t, "b@127.0.0.1", port, func(c *Config) { c.Cookie = "other" })
	if err := a.Connect(context.Background(), "b@127.0.0.1"); !errors.Is(err, ErrAuth) {
		t.Fatalf("Connect with a wrong cookie: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{{Cookie: "c"}, {Name: "nohost", Cookie: "c"}, {Name: "a@127.0.0.1"}} {
		if n, err := Start(context.Background(), c); err == nil {
			n.Close()
			t.Errorf("Start(%+v) succeeded", c)
		}
	}
}

// A node that comes back under the same name while its old link still looks alive (a crash the
// TCP connection has not shown yet) gets status alive, answers true, and replaces the old link:
// NodeDown (restarted) then NodeUp, in order.
func TestRestartWhileOldLinkAlive(t *testing.T) {
	a, _, eva, _ := goPair(t)
	ctx := context.Background()
	if err := a.Connect(ctx, "b@127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	eva.wait(t, 1, 5*time.Second)
	epmdPort := a.epmd.Port()
	b2 := startGo(t, "b@127.0.0.1", epmdPort, func(c *Config) { c.NoEPMD = true })
	if err := b2.Connect(ctx, "a@127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	got := eva.wait(t, 3, 5*time.Second)
	want := []string{"up b@127.0.0.1", "down b@127.0.0.1 restarted", "up b@127.0.0.1"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %q, want %q", got, want)
		}
	}
}

// The same instance of a node dials a peer it already has a link to (its attempt lost a race
// with the peer's, which is up): the peer answers alive, this node answers false, and the good
// link stays. Answering true, as for a new instance, made the peer drop it (a spurious
// NodeDown/NodeUp on both sides).
func TestAliveAnsweredFalseForOwnLink(t *testing.T) {
	a, b, eva, evb := goPair(t)
	ctx := context.Background()
	if err := a.Connect(ctx, "b@127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	eva.wait(t, 1, 5*time.Second)
	evb.wait(t, 1, 5*time.Second)
	// What a crossing attempt does after the link came up: dial past Connect's check.
	err := b.dial(ctx, "a@127.0.0.1", "a", "127.0.0.1")
	if !errors.Is(err, errSimultaneous) {
		t.Fatalf("second dial: %v, want errSimultaneous", err)
	}
	if got := eva.snapshot(); len(got) != 1 {
		t.Fatalf("a's events %q: the link was replaced", got)
	}
	if got := evb.snapshot(); len(got) != 1 {
		t.Fatalf("b's events %q: the link was replaced", got)
	}
	if r, err := b.Call(ctx, Name{Node: "a@127.0.0.1", Name: "net_kernel"}, Tuple{Atom("is_auth"), Atom("b@127.0.0.1")}); err != nil || r != Atom("yes") {
		t.Fatalf("the link after: %#v %v", r, err)
	}
}

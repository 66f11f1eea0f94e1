package erldist

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestLongIdle is the long mode of issue 15: a Go node and two Erlang nodes with global running
// stay connected for ERLDIST_IDLE (a Go duration, e.g. 10m) with default tick times. Skipped
// unless ERLDIST_IDLE is set (not in every CI run).
func TestLongIdle(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("ERLDIST_IDLE"))
	if err != nil {
		t.Skip("set ERLDIST_IDLE=10m to run the long idle test")
	}
	needErlang(t)
	port := startEPMD(t)
	ev := newEvents()
	g := startGo(t, "go@127.0.0.1", port, func(c *Config) { ev.config(c); c.TickTime = 0; c.Logger = nil })
	e1 := startErl(t, "idle1@127.0.0.1", port, erlOpts{ticktime: 60, connect: "go@127.0.0.1"})
	e1.waitLine("ping pong", 10*time.Second)
	e2 := startErl(t, "idle2@127.0.0.1", port, erlOpts{ticktime: 60})
	if err := g.Connect(context.Background(), "idle2@127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	e2.command("connect idle1@127.0.0.1")
	e2.waitLine("connect true", 5*time.Second)
	for _, e := range []*erlNode{e1, e2} {
		e.command("global_sync")
		if l := e.waitLine("global_sync ", 20*time.Second); l != "global_sync ok" {
			t.Fatalf("%s: %s", e.name, l)
		}
	}
	start := time.Now()
	time.Sleep(d)
	if got := ev.snapshot(); len(got) != 2 {
		t.Fatalf("after %v idle: events %q", time.Since(start), got)
	}
	for _, e := range []*erlNode{e1, e2} {
		for drained := false; !drained; {
			select {
			case l := <-e.lines:
				e.backlog = append(e.backlog, l)
			default:
				drained = true
			}
		}
		for _, l := range e.backlog {
			if strings.HasPrefix(l, "nodedown") {
				t.Fatalf("%s: %s", e.name, l)
			}
		}
		e.command("nodes")
		if l := e.waitLine("nodes ", 5*time.Second); !strings.Contains(l, "'go@127.0.0.1'") {
			t.Fatalf("%s: %s", e.name, l)
		}
	}
	t.Logf("idle %v with global: no disconnect", time.Since(start))
}

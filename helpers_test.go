package cluster_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cluster "github.com/macula-io/cluster"
)

// recorder keeps every event of one node and wakes waiters on each one.
type recorder struct {
	mu     sync.Mutex
	events []cluster.Event
	signal chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1)} }

func (r *recorder) add(e cluster.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []cluster.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// waitFor blocks until cond holds for the recorded events, or fails the test.
func (r *recorder) waitFor(t *testing.T, d time.Duration, what string, cond func([]cluster.Event) bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		if cond(r.all()) {
			return
		}
		select {
		case <-r.signal:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s; events:\n%s", d, what, dump(r.all()))
		}
	}
}

func dump(evs []cluster.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "  %s %s\n", e.Time.Format("15:04:05.000"), e)
	}
	return b.String()
}

// up returns the set of nodes whose link is currently up according to evs.
func up(evs []cluster.Event) map[string]bool {
	m := map[string]bool{}
	for _, e := range evs {
		switch e.Kind {
		case cluster.NodeUp:
			m[e.Node] = true
		case cluster.NodeDown:
			delete(m, e.Node)
		}
	}
	return m
}

// discovered returns the set of nodes currently discovered according to evs.
func discovered(evs []cluster.Event) map[string]bool {
	m := map[string]bool{}
	for _, e := range evs {
		switch e.Kind {
		case cluster.Discovered:
			m[e.Node] = true
		case cluster.Lost:
			delete(m, e.Node)
		}
	}
	return m
}

func hasAll(set map[string]bool, nodes ...string) bool {
	for _, n := range nodes {
		if !set[n] {
			return false
		}
	}
	return true
}

// checkLinkSequence asserts, per peer, that NodeUp and NodeDown alternate
// starting with NodeUp, and Discovered and Lost alternate starting with
// Discovered: every event exactly once, in order.
func checkLinkSequence(t *testing.T, who string, evs []cluster.Event) {
	t.Helper()
	link := map[string]cluster.EventKind{}
	disc := map[string]cluster.EventKind{}
	for _, e := range evs {
		switch e.Kind {
		case cluster.NodeUp, cluster.NodeDown:
			prev := link[e.Node]
			if (e.Kind == cluster.NodeUp && prev == cluster.NodeUp) || (e.Kind == cluster.NodeDown && prev != cluster.NodeUp) {
				t.Errorf("%s: %s after %v for %s; events:\n%s", who, e.Kind, prev, e.Node, dump(evs))
				return
			}
			link[e.Node] = e.Kind
		case cluster.Discovered, cluster.Lost:
			prev := disc[e.Node]
			if (e.Kind == cluster.Discovered && prev == cluster.Discovered) || (e.Kind == cluster.Lost && prev != cluster.Discovered) {
				t.Errorf("%s: %s after %v for %s; events:\n%s", who, e.Kind, prev, e.Node, dump(evs))
				return
			}
			disc[e.Node] = e.Kind
		}
	}
}

func count(evs []cluster.Event, kind cluster.EventKind, node string) int {
	n := 0
	for _, e := range evs {
		if e.Kind == kind && e.Node == node {
			n++
		}
	}
	return n
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

type node struct {
	c   *cluster.Cluster
	rec *recorder
}

func start(t *testing.T, cfg cluster.Config) *node {
	t.Helper()
	rec := newRecorder()
	cfg.OnEvent = rec.add
	if cfg.EventQueue == 0 {
		cfg.EventQueue = -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := cluster.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &node{c: c, rec: rec}
}

func names(ns []*node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.c.Self().Node)
	}
	return out
}

// waitFullMesh waits until every node has a live link to every other.
func waitFullMesh(t *testing.T, ns []*node, d time.Duration) {
	t.Helper()
	all := names(ns)
	for i, n := range ns {
		others := slices.Delete(slices.Clone(all), i, i+1)
		n.rec.waitFor(t, d, n.c.Self().Node+" linked to all", func(evs []cluster.Event) bool {
			return hasAll(up(evs), others...)
		})
	}
}

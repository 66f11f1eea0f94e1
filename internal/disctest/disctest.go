// Package disctest is a recording discovery.Sink for the strategies' tests.
package disctest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/macula-io/cluster/discovery"
)

// Recorder is a discovery.Sink that keeps the current view and a log of
// calls, and wakes waiters on every call.
type Recorder struct {
	mu    sync.Mutex
	view  map[string]discovery.Peer
	calls []string
	wake  chan struct{}
}

var _ discovery.Sink = (*Recorder)(nil)

// New returns an empty Recorder.
func New() *Recorder {
	return &Recorder{view: make(map[string]discovery.Peer), wake: make(chan struct{}, 1)}
}

// Found implements discovery.Sink.
func (r *Recorder) Found(p discovery.Peer) {
	r.mu.Lock()
	r.view[p.Key()] = p
	r.calls = append(r.calls, "found "+p.String())
	r.mu.Unlock()
	r.signal()
}

// Gone implements discovery.Sink.
func (r *Recorder) Gone(p discovery.Peer) {
	r.mu.Lock()
	delete(r.view, p.Key())
	r.calls = append(r.calls, "gone "+p.String())
	r.mu.Unlock()
	r.signal()
}

func (r *Recorder) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Peers returns the current view sorted by key.
func (r *Recorder) Peers() []discovery.Peer {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]discovery.Peer, 0, len(r.view))
	for _, p := range r.view {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b discovery.Peer) int {
		if a.Key() < b.Key() {
			return -1
		}
		if a.Key() > b.Key() {
			return 1
		}
		return 0
	})
	return out
}

// Keys returns the current view as Peer.String() values ("name at addr",
// "addr" or "name"), sorted by key.
func (r *Recorder) Keys() []string {
	var out []string
	for _, p := range r.Peers() {
		out = append(out, p.String())
	}
	return out
}

// Calls returns the log of calls ("found X", "gone X") so far.
func (r *Recorder) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// Wait waits until cond holds for the current view, failing t after
// timeout.
func (r *Recorder) Wait(t testing.TB, timeout time.Duration, what string, cond func([]discovery.Peer) bool) []discovery.Peer {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ps := r.Peers()
		if cond(ps) {
			return ps
		}
		select {
		case <-r.wake:
		case <-deadline.C:
			t.Fatalf("%s: not within %v; view %v", what, timeout, r.Keys())
			return nil
		}
	}
}

// WaitKeys waits until the view, as Peer.String() values, equals want.
func (r *Recorder) WaitKeys(t testing.TB, timeout time.Duration, want ...string) {
	t.Helper()
	slices.Sort(want)
	r.Wait(t, timeout, "view", func(ps []discovery.Peer) bool {
		got := make([]string, 0, len(ps))
		for _, p := range ps {
			got = append(got, p.String())
		}
		slices.Sort(got)
		return slices.Equal(got, want)
	})
}

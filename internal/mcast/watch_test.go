package mcast

import (
	"context"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// waitSignal waits up to d for a value on w.C.
func waitSignal(t testing.TB, w *Watcher, d time.Duration, what string) {
	t.Helper()
	select {
	case <-w.C:
	case <-time.After(d):
		t.Fatalf("watcher: no signal within %v after %s", d, what)
	}
}

// noSignal drains w.C and fails if a value is waiting.
func noSignal(t testing.TB, w *Watcher, what string) {
	t.Helper()
	select {
	case <-w.C:
		t.Fatalf("watcher: signal after %s, which changed nothing", what)
	default:
	}
}

// TestWatchStops: the first signal comes at once, and cancelling the
// context stops every goroutine of the watcher without Close.
func TestWatchStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	w := Watch(ctx)
	waitSignal(t, w, time.Second, "Watch")
	if runtime.GOOS == "linux" && !w.events {
		t.Error("not subscribed to rtnetlink events")
	}
	cancel()
	goleak.VerifyNone(t)
	w.Close()
	w.Close()
}

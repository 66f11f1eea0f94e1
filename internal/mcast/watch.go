package mcast

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

const (
	// pollInterval is how often a Watcher compares the interfaces where it
	// gets no change events: on every OS but Linux, and on Linux when the
	// rtnetlink subscription fails.
	pollInterval = 3 * time.Second
	// safetyInterval is how often a Watcher that gets events compares the
	// interfaces anyway, in case the kernel dropped events.
	safetyInterval = 30 * time.Second
	// settleDelay is how long a Watcher waits after an event before it
	// compares: one change ("ip link add", an address, up) is several
	// events, and it bounds the comparisons to 10 a second in a storm.
	settleDelay = 100 * time.Millisecond
)

// Watcher reports changes of the interfaces: one appearing or vanishing,
// a change of flags (up, running, ...) or of addresses. Create it with
// Watch.
type Watcher struct {
	// C receives a value soon after Watch returns (so that a caller that
	// scanned the interfaces before calling Watch scans again and misses
	// nothing) and after each change. Changes that come while a value is
	// waiting in C are merged into it. C is never closed.
	C <-chan struct{}

	c      chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	events bool   // subscribed to the OS's change events
	last   string // fingerprint of the interfaces at the last comparison (loop goroutine)
}

// Watch starts watching the interfaces of the calling thread's network
// namespace (the process's, unless the caller moved the thread). It stops
// when ctx is done or Close is called; Close waits for it.
func Watch(ctx context.Context) *Watcher {
	return watch(ctx, watchOptions{})
}

type watchOptions struct {
	poll     time.Duration // 0: pollInterval, or safetyInterval with events
	noEvents bool          // poll only, also where events exist (tests)
}

func watch(ctx context.Context, o watchOptions) *Watcher {
	ctx, cancel := context.WithCancel(ctx)
	c := make(chan struct{}, 1)
	c <- struct{}{}
	w := &Watcher{C: c, c: c, cancel: cancel}
	var events *os.File
	if !o.noEvents {
		events, _ = subscribe() // nil: poll
	}
	// The first fingerprint after subscribing: a change after it is either
	// an event or a difference.
	w.last, _ = fingerprint()
	poll := o.poll
	if poll == 0 {
		poll = pollInterval
		if events != nil {
			poll = safetyInterval
		}
	}
	kick := make(chan struct{}, 1)
	if events != nil {
		w.events = true
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			readEvents(events, kick)
		}()
	}
	w.wg.Add(1)
	go w.loop(ctx, events, kick, poll)
	return w
}

// Close stops the watcher and waits for its goroutines. It is idempotent.
func (w *Watcher) Close() error {
	w.cancel()
	w.wg.Wait()
	return nil
}

// loop compares the interfaces every poll, and settleDelay after an event.
// On return it closes events, which ends readEvents.
func (w *Watcher) loop(ctx context.Context, events *os.File, kick <-chan struct{}, poll time.Duration) {
	defer w.wg.Done()
	if events != nil {
		defer events.Close()
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	pending := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			w.compare()
		case <-kick:
			if !pending {
				pending = true
				settle.Reset(settleDelay)
			}
		case <-settle.C:
			pending = false
			w.compare()
		}
	}
}

// compare signals C when the interfaces differ from the last comparison.
// A failure to list them is not a change.
func (w *Watcher) compare() {
	fp, ok := fingerprint()
	if !ok || fp == w.last {
		return
	}
	w.last = fp
	select {
	case w.c <- struct{}{}:
	default: // a signal is already waiting
	}
}

// fingerprint describes every interface, its flags and its addresses.
func fingerprint() (string, bool) {
	all, err := List()
	if err != nil {
		return "", false
	}
	var b strings.Builder
	for _, ifi := range all {
		fmt.Fprintf(&b, "%d %s %v %v\n", ifi.Index, ifi.Name, ifi.Flags, ifi.Addrs)
	}
	return b.String(), true
}

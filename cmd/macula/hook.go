package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"hash/fnv"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	cluster "github.com/macula-io/cluster"
)

// The event hook (`macula run --on-event CMD`), as serf's -event-handler:
// CMD runs once per membership event through the shell (/bin/sh -c on
// Unix, cmd /C on Windows) with the event in its environment and as one
// JSON line (what --json prints) on its standard input.
//
// At most hookWorkers commands run at a time. The events of one node go
// to the same worker, so a node's handlers run one after another, in
// order; each worker queues at most hookQueue events, and an event that
// finds its queue full is dropped, counted and logged. A command that
// runs longer than --on-event-timeout is killed (its process group on
// Unix). Failures are logged with the exit status and the command's
// output (at most hookOutput bytes of it).
const (
	hookWorkers        = 4
	hookQueue          = 64
	hookOutput         = 4 << 10
	defaultHookTimeout = 10 * time.Second
)

type eventHook struct {
	cmd     string
	timeout time.Duration
	self    cluster.Member // set by start, before any command runs
	started chan struct{}
	log     *slog.Logger
	queues  [hookWorkers]chan cluster.Event
	closing atomic.Bool
	wg      sync.WaitGroup

	ok, failed, timedOut, dropped atomic.Uint64
	lastDropLog                   atomic.Int64
}

// newEventHook queues events from now on; they run once start is called.
func newEventHook(cmd string, timeout time.Duration, log *slog.Logger) *eventHook {
	h := &eventHook{cmd: cmd, timeout: timeout, log: log, started: make(chan struct{})}
	for i := range h.queues {
		h.queues[i] = make(chan cluster.Event, hookQueue)
		h.wg.Add(1)
		go h.worker(h.queues[i])
	}
	return h
}

// start runs the queued and future events' commands; self is this node.
func (h *eventHook) start(self cluster.Member) {
	h.self = self
	close(h.started)
}

// push hands e to its node's worker; it never blocks.
func (h *eventHook) push(e cluster.Event) {
	if h.closing.Load() {
		return
	}
	f := fnv.New32a()
	f.Write([]byte(e.Node))
	select {
	case h.queues[f.Sum32()%hookWorkers] <- e:
	default:
		n := h.dropped.Add(1)
		now := time.Now().UnixNano()
		if last := h.lastDropLog.Load(); now-last > int64(10*time.Second) && h.lastDropLog.CompareAndSwap(last, now) {
			h.log.Warn("--on-event: queue full, event dropped (the command is slower than the events)", "event", e.Kind.String(), "node", e.Node, "dropped_total", n)
		}
	}
}

// Close stops the hook: running commands finish (within the timeout),
// queued events are dropped and counted. Only the goroutine that pushes
// may call it, after its last push.
func (h *eventHook) Close() {
	h.closing.Store(true)
	select {
	case <-h.started:
	default:
		close(h.started)
	}
	for _, q := range h.queues {
		close(q)
	}
	h.wg.Wait()
}

func (h *eventHook) worker(q chan cluster.Event) {
	defer h.wg.Done()
	<-h.started
	for e := range q {
		if h.closing.Load() {
			h.dropped.Add(1)
			continue
		}
		h.run(e)
	}
}

// hookEnv is the environment a command gets for e, beside the node's own.
func hookEnv(e cluster.Event, self cluster.Member) []string {
	return []string{
		"MACULA_EVENT=" + e.Kind.String(),
		"MACULA_NODE=" + e.Node,
		"MACULA_ADDR=" + e.Addr,
		"MACULA_SOURCE=" + e.Source,
		"MACULA_REASON=" + e.Reason,
		"MACULA_INCARNATION=" + incarnationString(e),
		"MACULA_TAGS=" + formatTags(e.Tags),
		"MACULA_TIME=" + e.Time.UTC().Format(time.RFC3339Nano),
		"MACULA_SELF=" + self.Node,
		"MACULA_SELF_ADDR=" + self.Addr,
	}
}

func incarnationString(e cluster.Event) string {
	if e.Kind != cluster.NodeUp {
		return ""
	}
	return strconv.FormatUint(e.Incarnation, 10)
}

func (h *eventHook) run(e cluster.Event) {
	ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
	defer cancel()
	cmd := shellCommand(ctx, h.cmd)
	cmd.Env = append(os.Environ(), hookEnv(e, h.self)...)
	line, _ := json.Marshal(eventJSON(e))
	cmd.Stdin = bytes.NewReader(append(line, '\n'))
	out := &capped{max: hookOutput}
	cmd.Stdout, cmd.Stderr = out, out
	// Pipes a killed command's children still hold are closed after this.
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	attrs := []any{"event", e.Kind.String(), "node", e.Node, "took", time.Since(start).Round(time.Millisecond)}
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		h.timedOut.Add(1)
		h.log.Warn("--on-event: command killed after --on-event-timeout", append(attrs, "timeout", h.timeout, "output", out.String())...)
	case err != nil:
		h.failed.Add(1)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			attrs = append(attrs, "exit", ee.ExitCode())
		} else {
			attrs = append(attrs, "err", err)
		}
		h.log.Warn("--on-event: command failed", append(attrs, "output", out.String())...)
	default:
		h.ok.Add(1)
		h.log.Debug("--on-event: command ran", append(attrs, "output", out.String())...)
	}
}

// capped keeps the first max bytes written to it and counts the rest.
type capped struct {
	mu   sync.Mutex
	b    []byte
	max  int
	more int
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := min(len(p), c.max-len(c.b))
	c.b = append(c.b, p[:n]...)
	c.more += len(p) - n
	return len(p), nil
}

func (c *capped) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := string(bytes.TrimRight(c.b, "\n"))
	if c.more > 0 {
		s += "... (" + strconv.Itoa(c.more) + " more bytes)"
	}
	return s
}

//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cluster "github.com/macula-io/cluster"
)

// hookScript writes a handler that appends its environment and stdin to
// a file per event, like the README's example.
func hookScript(t *testing.T, body string) (cmd, dir string) {
	dir = t.TempDir()
	script := filepath.Join(dir, "handler.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, dir
}

func waitCount(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitFile(t *testing.T, path string, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if ok(string(b)) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; it holds %q", path, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEventHookEnvAndStdin: the command gets the event in its environment
// and as the JSON line on stdin, in order for one node.
func TestEventHookEnvAndStdin(t *testing.T) {
	cmd, dir := hookScript(t, `out="$(dirname "$0")/$MACULA_NODE.log"
printf '%s %s %s %s %s %s\n' "$MACULA_EVENT" "$MACULA_NODE" "$MACULA_ADDR" "$MACULA_REASON" "$MACULA_INCARNATION" "$MACULA_SELF" >> "$out"
cat >> "$out"
`)
	var logs syncBuffer
	h := newEventHook(cmd, 5*time.Second, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	now := time.Now()
	h.push(cluster.Event{Kind: cluster.NodeUp, Node: "b@h", Addr: "127.0.0.1:9101", Incarnation: 42, Time: now})
	h.push(cluster.Event{Kind: cluster.NodeDown, Node: "b@h", Reason: "timeout", Time: now})
	h.start(cluster.Member{Node: "a@h", Addr: "127.0.0.1:9100"})
	got := waitFile(t, filepath.Join(dir, "b@h.log"), func(s string) bool { return strings.Count(s, "\n") >= 4 })
	h.Close()
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if lines[0] != "nodeup b@h 127.0.0.1:9101  42 a@h" || lines[2] != "nodedown b@h  timeout  a@h" {
		t.Errorf("environment lines %q", lines)
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &ev); err != nil || ev["event"] != "nodeup" || ev["incarnation"] != "42" || ev["node"] != "b@h" {
		t.Errorf("stdin %q: %v %v", lines[1], ev, err)
	}
	if h.ok.Load() != 2 || h.failed.Load() != 0 {
		t.Errorf("ok %d failed %d; log %s", h.ok.Load(), h.failed.Load(), logs.String())
	}
}

// TestEventHookFailureAndTimeout: a failing command is logged with its
// exit status and output; a slow one, and what it started, is killed at
// the timeout.
func TestEventHookFailureAndTimeout(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	h := newEventHook(`echo "no such thing: $MACULA_NODE" >&2; exit 3`, 5*time.Second, log)
	h.start(cluster.Member{Node: "a@h"})
	h.push(cluster.Event{Kind: cluster.NodeUp, Node: "b@h"})
	waitCount(t, "a failure", func() bool { return h.failed.Load() == 1 })
	h.Close()
	if h.failed.Load() != 1 || !strings.Contains(logs.String(), "exit=3") || !strings.Contains(logs.String(), "no such thing: b@h") {
		t.Errorf("failed %d; log %s", h.failed.Load(), logs.String())
	}

	dir := t.TempDir()
	h = newEventHook("sleep 30 & echo $! > "+filepath.Join(dir, "child")+"; wait", 300*time.Millisecond, log)
	h.start(cluster.Member{Node: "a@h"})
	start := time.Now()
	h.push(cluster.Event{Kind: cluster.NodeUp, Node: "b@h"})
	waitCount(t, "the timeout", func() bool { return h.timedOut.Load() == 1 })
	h.Close()
	if took := time.Since(start); took > 5*time.Second || h.timedOut.Load() != 1 {
		t.Fatalf("timed out %d, took %v; log %s", h.timedOut.Load(), took, logs.String())
	}
	if !strings.Contains(logs.String(), "killed after --on-event-timeout") {
		t.Errorf("log %s", logs.String())
	}
	pid, _ := os.ReadFile(filepath.Join(dir, "child"))
	if p := strings.TrimSpace(string(pid)); p != "" {
		waitFile(t, "/proc/"+p+"/stat", func(s string) bool { return s == "" || strings.Contains(s, ") Z ") })
	}
}

// TestEventHookQueueBound: when the commands are slower than the events,
// at most hookQueue wait per worker; the rest are dropped, counted and
// logged, and push never blocks.
func TestEventHookQueueBound(t *testing.T) {
	var logs syncBuffer
	dir := t.TempDir()
	gate := filepath.Join(dir, "gate")
	h := newEventHook("while [ ! -e "+gate+" ]; do sleep 0.05; done", 30*time.Second, slog.New(slog.NewTextHandler(&logs, nil)))
	h.start(cluster.Member{Node: "a@h"})
	start := time.Now()
	const n = hookQueue + 50
	for range n { // one node: one worker
		h.push(cluster.Event{Kind: cluster.NodeUp, Node: "b@h"})
	}
	if time.Since(start) > time.Second {
		t.Error("push blocked")
	}
	// One runs, hookQueue wait (the first may not have left the queue yet).
	if d := h.dropped.Load(); d < n-hookQueue-1 || d > n-hookQueue {
		t.Errorf("dropped %d of %d, want %d", d, n, n-hookQueue-1)
	}
	if c := strings.Count(logs.String(), "queue full"); c != 1 {
		t.Errorf("%d queue-full warnings, want 1 (rate-limited): %s", c, logs.String())
	}
	os.WriteFile(gate, nil, 0o644)
	waitCount(t, "a command to finish", func() bool { return h.ok.Load() >= 1 })
	h.Close() // the queued ones are dropped
	if h.ok.Load()+h.dropped.Load() != n {
		t.Errorf("ok %d + dropped %d != %d", h.ok.Load(), h.dropped.Load(), n)
	}
}

// TestRunOnEvent: `macula run --on-event` runs the handler for a peer's
// nodeup, with the event on stdin.
func TestRunOnEvent(t *testing.T) {
	cmd, dir := hookScript(t, `cat >> "$(dirname "$0")/events.jsonl"`+"\n")
	common := []string{"--strategy", "static", "--listen", "127.0.0.1:0", "--interface", "lo"}
	a := startRun(t, append(common, "--name", "a@127.0.0.1", "--on-event", cmd, "--on-event-timeout", "5s")...)
	ra := a.waitFor(t, "a ready", is("ready", ""))
	b := startRun(t, append(common, "--name", "b@127.0.0.1", "--nodes", ra["addr"].(string))...)
	b.waitFor(t, "b up", is("nodeup", "a@127.0.0.1"))
	got := waitFile(t, filepath.Join(dir, "events.jsonl"), func(s string) bool { return strings.Contains(s, `"event":"nodeup"`) })
	for _, l := range bytes.Split([]byte(strings.TrimSpace(got)), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil || m["node"] != "b@127.0.0.1" {
			t.Errorf("line %q: %v", l, err)
		}
	}
}

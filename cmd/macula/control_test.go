package main

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestControlCandidates(t *testing.T) {
	got := controlCandidates(defaultControl, false)
	if len(got) != 1+controlFallbacks || got[0] != "127.0.0.1:9180" || got[len(got)-1] != "127.0.0.1:9189" {
		t.Errorf("default candidates %v", got)
	}
	if got := controlCandidates("127.0.0.1:7000", true); len(got) != 1 {
		t.Errorf("explicit address falls back: %v", got)
	}
	if got := controlCandidates("off", false); got != nil {
		t.Errorf("off: %v", got)
	}
}

func TestListenFirstFallsBack(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	ln, err := listenFirst([]string{taken.Addr().String(), "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.Addr().String() == taken.Addr().String() {
		t.Fatal("bound the taken address")
	}
	if _, err := listenFirst([]string{taken.Addr().String()}); err == nil || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Fatalf("all taken: err %v, want one naming %s", err, taken.Addr())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestNodesControlWatchStatus: "macula nodes" reads a node through its
// control endpoint, --watch prints each membership change (a node coming
// up, then leaving), and --status filters by state.
func TestNodesControlWatchStatus(t *testing.T) {
	port := testUDPPort(t)
	common := []string{"--interface", "lo", "--port", itoa(port), "--interval", "100", "--listen", "127.0.0.1:0", "--link-timeout", "1s"}
	a := startRun(t, append(common, "--name", "a@127.0.0.1")...)
	ready := a.waitFor(t, "ready", is("ready", ""))
	ctl, _ := ready["control"].(string)
	if ctl == "" {
		t.Fatalf("ready line without control: %v", ready)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out syncBuffer
	var errb bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- cmdNodes(ctx, []string{"--http", ctl, "--watch", "--interval", "100ms"}, &out, &errb) }()
	waitOut := func(what string, pred func(string) bool) {
		t.Helper()
		for !pred(out.String()) {
			select {
			case <-ctx.Done():
				t.Fatalf("watch output never showed %s:\n%s", what, out.String())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	waitOut("a view", func(s string) bool { return strings.Contains(s, "self: a@127.0.0.1") })

	b := startRun(t, append(common, "--name", "b@127.0.0.1")...)
	a.waitFor(t, "nodeup b", is("nodeup", "b@127.0.0.1"))
	waitOut("b up", func(s string) bool { return strings.Contains(s, "1 discovered, 1 connected") })
	b.cmd.Process.Signal(syscall.SIGTERM)
	a.waitFor(t, "nodedown b", is("nodedown", "b@127.0.0.1"))
	waitOut("b left", func(s string) bool { return strings.Contains(s, "down (left)") })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("watch: %v", err)
	}
	if n := strings.Count(out.String(), "--- "); n < 3 {
		t.Errorf("watch printed %d views, want at least 3 (alone, b up, b left):\n%s", n, out.String())
	}

	for _, tc := range []struct {
		status string
		has    bool
	}{{"left", true}, {"down", false}, {"up", false}} {
		var o, e bytes.Buffer
		if err := cmdNodes(context.Background(), []string{"--http", ctl, "--status", tc.status}, &o, &e); err != nil {
			t.Fatalf("--status %s: %v", tc.status, err)
		}
		if strings.Contains(o.String(), "b@127.0.0.1") != tc.has {
			t.Errorf("--status %s: b listed %v, want %v:\n%s", tc.status, !tc.has, tc.has, o.String())
		}
	}
	var o, e bytes.Buffer
	if code := realMain([]string{"nodes", "--status", "gone"}, &o, &e); code != 2 || !strings.Contains(e.String(), `--status "gone"`) {
		t.Errorf("--status gone: exit %d %q", code, e.String())
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"testing"
	"time"
)

func fdCount(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestHTTPIdleConnectionFlood: 2,000 idle connections to --http (on
// 127.0.0.1) neither stop /healthz from answering nor make the node hold
// more than --http-max-conns HTTP descriptors.
func TestHTTPIdleConnectionFlood(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("counts descriptors in /proc")
	}
	const maxConns, flood = 64, 2000
	p := startRun(t, "--interface", "lo", "--port", fmt.Sprint(testUDPPort(t)), "--listen", "127.0.0.1:0",
		"--name", "held@127.0.0.1", "--http", "127.0.0.1:0", "--http-max-conns", fmt.Sprint(maxConns))
	ready := p.waitFor(t, "ready", is("ready", ""))
	addr := ready["http"].(string)
	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	healthz := func(when string) {
		t.Helper()
		start := time.Now()
		resp, err := client.Get("http://" + addr + "/healthz")
		if err != nil {
			t.Fatalf("/healthz %s: %v", when, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/healthz %s: %s", when, resp.Status)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("/healthz %s took %v", when, d)
		}
	}
	healthz("before the flood")
	pid := p.cmd.Process.Pid
	base := fdCount(t, pid)

	conns := make([]net.Conn, 0, flood)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	maxSeen := 0
	for i := 0; i < flood; i++ {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		if i%250 == 249 {
			healthz(fmt.Sprintf("with %d idle connections open", i+1))
			maxSeen = max(maxSeen, fdCount(t, pid))
		}
	}
	maxSeen = max(maxSeen, fdCount(t, pid))
	healthz("after the flood")
	// base already holds the listener; allow a few for the probe itself.
	if extra := maxSeen - base; extra > maxConns+4 {
		t.Errorf("the node held %d more descriptors during the flood, cap %d", extra, maxConns)
	}
	t.Logf("descriptors: %d before, at most %d during %d idle connections (cap %d)", base, maxSeen, flood, maxConns)
}

func TestConnLimiterBusyRefusesNew(t *testing.T) {
	l := newConnLimiter(2, slog.New(slog.DiscardHandler))
	pipe := func() net.Conn { a, b := net.Pipe(); t.Cleanup(func() { a.Close(); b.Close() }); return a }
	c1, c2, c3 := pipe(), pipe(), pipe()
	l.admit(c1)
	l.admit(c2)
	l.connState(c1, http.StateActive)
	if !l.admit(c3) || l.open() != 2 {
		t.Fatalf("at the cap with one idle connection: admit must evict it; open %d", l.open())
	}
	if _, ok := l.conns[c2]; ok {
		t.Fatal("the idle connection was not the one evicted")
	}
	l.connState(c3, http.StateActive)
	if l.admit(pipe()) || l.open() != 2 {
		t.Fatalf("every connection busy: a new one must be refused; open %d", l.open())
	}
	l.connState(c1, http.StateClosed)
	if l.open() != 1 {
		t.Fatalf("closed connection still counted: open %d", l.open())
	}
}

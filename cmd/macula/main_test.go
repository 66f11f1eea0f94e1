package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "macula-cmd-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "macula")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build macula: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func testUDPPort(t *testing.T) int {
	t.Helper()
	p, err := freeUDPPort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// proc is a `macula run --json` process whose stdout lines are collected.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []map[string]any
	signal chan struct{}
	stderr bytes.Buffer
	done   chan struct{}
}

func startRun(t *testing.T, args ...string) *proc {
	t.Helper()
	return startRunEnv(t, nil, args...)
}

// startRunEnv is startRun with more environment variables.
func startRunEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{signal: make(chan struct{}, 1), done: make(chan struct{})}
	// --control 127.0.0.1:0: never the fixed default port in tests.
	p.cmd = exec.Command(binary, append([]string{"run", "--json", "--control", "127.0.0.1:0"}, args...)...)
	p.cmd.Env = append(append(os.Environ(), "MACULA_COOKIE=test-cookie"), env...)
	p.cmd.Stderr = &p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"event": "NOT-JSON", "raw": sc.Text()}
			}
			p.mu.Lock()
			p.lines = append(p.lines, m)
			p.mu.Unlock()
			select {
			case p.signal <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		p.cmd.Wait()
		if t.Failed() {
			t.Logf("stderr of %v:\n%s", p.cmd.Args, p.stderr.String())
		}
	})
	return p
}

func (p *proc) all() []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]map[string]any(nil), p.lines...)
}

func (p *proc) waitFor(t *testing.T, what string, pred func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		for _, l := range p.all() {
			if pred(l) {
				return l
			}
		}
		select {
		case <-p.signal:
		case <-p.done:
			for _, l := range p.all() {
				if pred(l) {
					return l
				}
			}
			t.Fatalf("process exited before %s; lines %v", what, p.all())
		case <-deadline:
			t.Fatalf("timed out waiting for %s; lines %v", what, p.all())
		}
	}
}

func is(event, node string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["event"] == event && (node == "" || m["node"] == node) }
}

func TestRunJSONContract(t *testing.T) {
	port := fmt.Sprint(testUDPPort(t))
	common := []string{"--interface", "lo", "--port", port, "--interval", "100", "--secret", "s3cret", "--listen", "127.0.0.1:0", "--link-timeout", "1s"}
	a := startRun(t, append(common, "--name", "a@127.0.0.1", "--http", "127.0.0.1:0")...)
	b := startRun(t, append(common, "--name", "b@127.0.0.1")...)

	ready := a.waitFor(t, "ready", is("ready", ""))
	if ready["node"] != "a@127.0.0.1" || ready["gossip"] != "230.1.1.251:"+port || ready["addr"] == "" {
		t.Fatalf("ready = %v", ready)
	}
	if first := a.all()[0]; first["event"] != "ready" {
		t.Fatalf("first line %v, want ready", first)
	}
	d := a.waitFor(t, "discovered b", is("discovered", "b@127.0.0.1"))
	if d["source"] != "gossip" || !strings.HasPrefix(d["addr"].(string), "127.0.0.1:") {
		t.Fatalf("discovered = %v", d)
	}
	up := a.waitFor(t, "nodeup b", is("nodeup", "b@127.0.0.1"))
	if inc, _ := up["incarnation"].(string); inc == "" || inc == "0" {
		t.Fatalf("nodeup without incarnation: %v", up)
	}
	for _, l := range a.all() {
		if _, err := time.Parse(time.RFC3339Nano, fmt.Sprint(l["time"])); err != nil {
			t.Fatalf("line without RFC 3339 time: %v", l)
		}
	}

	// HTTP endpoints of a.
	base := "http://" + ready["http"].(string)
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz %d", code)
	}
	code, body := get("/nodes")
	var v nodesView
	if code != 200 || json.Unmarshal([]byte(body), &v) != nil || v.Self.Node != "a@127.0.0.1" ||
		len(v.Connected) != 1 || v.Connected[0].Node != "b@127.0.0.1" || len(v.Discovered) != 1 {
		t.Fatalf("/nodes %d %s", code, body)
	}
	_, metrics := get("/metrics")
	for _, m := range []string{"macula_gossip_heartbeats_sent_total", "macula_gossip_heartbeats_received_total",
		"macula_mesh_links_up_total 1", "macula_connected_nodes 1", "macula_discovered_nodes 1", "macula_mesh_message_bytes_total"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}

	// `macula nodes` reads the same view.
	out, err := exec.Command(binary, "nodes", "--http", ready["http"].(string)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "b@127.0.0.1") || !strings.Contains(string(out), "1 discovered, 1 connected") {
		t.Fatalf("macula nodes: %v\n%s", err, out)
	}

	// SIGTERM: b leaves gracefully, exits 0, a sees "left" and then "lost" later.
	b.cmd.Process.Signal(syscall.SIGTERM)
	down := a.waitFor(t, "nodedown b", is("nodedown", "b@127.0.0.1"))
	if down["reason"] != "left" {
		t.Fatalf("nodedown = %v, want reason left", down)
	}
	<-b.done
	if err := b.cmd.Wait(); err != nil {
		t.Fatalf("b did not exit 0 after SIGTERM: %v\n%s", err, b.stderr.String())
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz with --min-peers 0: %d", code)
	}
}

func TestRunReadyzMinPeers(t *testing.T) {
	p := startRun(t, "--interface", "lo", "--port", fmt.Sprint(testUDPPort(t)), "--listen", "127.0.0.1:0",
		"--name", "lonely@127.0.0.1", "--http", "127.0.0.1:0", "--min-peers", "1")
	ready := p.waitFor(t, "ready", is("ready", ""))
	resp, err := http.Get("http://" + ready["http"].(string) + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "0 of 1") {
		t.Fatalf("/readyz = %d %q, want 503 naming 0 of 1", resp.StatusCode, body)
	}
}

func TestRunErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		code int
		want string
	}{
		{[]string{"--interface", "nosuch0", "--listen", "127.0.0.1:0"}, "", 1, "nosuch0"},
		{[]string{"--strategy", "telepathy"}, "", 2, "telepathy"},
		{[]string{"--link-timeout", "10ms"}, "", 2, "--link-timeout"},
		{[]string{"--interface", "lo"}, "MACULA_GOSSIP_PORT=70000", 2, "MACULA_GOSSIP_PORT"},
		{[]string{"--bogus"}, "", 2, "bogus"},
	} {
		cmd := exec.Command(binary, append([]string{"run", "--control", "off"}, tc.args...)...)
		cmd.Env = append(os.Environ(), "MACULA_COOKIE=c")
		if tc.env != "" {
			cmd.Env = append(cmd.Env, tc.env)
		}
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != tc.code || !strings.Contains(string(out), tc.want) {
			t.Errorf("run %v (%s): exit %d, output %q; want exit %d naming %q", tc.args, tc.env, cmd.ProcessState.ExitCode(), out, tc.code, tc.want)
		}
	}
}

func TestDemo(t *testing.T) {
	var out, errb bytes.Buffer
	start := time.Now()
	if code := realMain([]string{"demo"}, &out, &errb); code != 0 {
		t.Fatalf("demo exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	if d := time.Since(start); d > 9*time.Second {
		t.Errorf("demo took %v", d)
	}
	for _, want := range []string{"full mesh:", "message passed around the mesh: 5 hops", "all 4 others reported nodedown (left)", "demo5@127.0.0.1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestDoctorLoopback(t *testing.T) {
	var out, errb bytes.Buffer
	code := realMain([]string{"doctor", "--interface", "lo", "--port", fmt.Sprint(testUDPPort(t)), "--listen", "127.0.0.1:0", "--listen-for", "200ms",
		"--secret", "s", "--cookie", "c"}, &out, &errb)
	if code != 0 {
		t.Fatalf("doctor on lo: exit %d\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"[ ok ] interfaces", "[ ok ] send/receive on lo", "probe looped back", "[ ok ] gossip secret", "[ ok ] mesh cookie", "0 failed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestDoctorFailures(t *testing.T) {
	var out, errb bytes.Buffer
	code := realMain([]string{"doctor", "--interface", "nosuch0", "--port", fmt.Sprint(testUDPPort(t)), "--listen", "127.0.0.1:0"}, &out, &errb)
	if code != 1 || !strings.Contains(out.String(), `interface "nosuch0" does not exist`) || !strings.Contains(out.String(), "fix:") {
		t.Fatalf("doctor with a missing interface: exit %d\n%s", code, out.String())
	}
	// A port held without SO_REUSEADDR cannot be shared.
	ln, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.LocalAddr().(*net.UDPAddr).Port
	out.Reset()
	code = realMain([]string{"doctor", "--interface", "lo", "--port", fmt.Sprint(port), "--listen", "127.0.0.1:0"}, &out, &errb)
	if code != 1 || !strings.Contains(out.String(), fmt.Sprintf("[FAIL] gossip port %d/udp", port)) {
		t.Fatalf("doctor with a taken port: exit %d\n%s", code, out.String())
	}
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "macula ") {
		t.Fatalf("--version: %v %q", err, out)
	}
}

func TestNodesNoServer(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	var out, errb bytes.Buffer
	if code := realMain([]string{"nodes", "--http", addr}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no node answering") {
		t.Fatalf("nodes without a server: exit %d %q", code, errb.String())
	}
}

// TestAgentGC: "macula run" raises the collector's target to
// agentGCPercent, unless GOGC is set (then the runtime's reading of it
// stands).
func TestAgentGC(t *testing.T) {
	old := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(old) })
	agentGC(func(string) (string, bool) { return "", false })
	if got := debug.SetGCPercent(100); got != agentGCPercent {
		t.Errorf("GOGC unset: GC percent %d, want %d", got, agentGCPercent)
	}
	agentGC(func(k string) (string, bool) { return "150", k == "GOGC" })
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC set: GC percent changed to %d", got)
	}
}

package erldist

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/macula-io/cluster/internal/erltest"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(testMain{m})
}

// testMain removes the compiled agent after the tests (goleak.VerifyTestMain calls os.Exit).
type testMain struct{ m *testing.M }

func (t testMain) Run() int {
	code := t.m.Run()
	if agentDir != "" {
		os.RemoveAll(agentDir)
	}
	return code
}

const testCookie = "erldist-test-cookie"

// needErlang, freePort and startEPMD are internal/erltest's.
var (
	needErlang = erltest.NeedErlang
	freePort   = erltest.FreeTCPPort
	startEPMD  = erltest.StartEPMD
)

var (
	agentOnce sync.Once
	agentDir  string
	agentErr  error
)

// agentBeam compiles testdata/agent.erl once per test binary.
func agentBeam(t testing.TB) string {
	t.Helper()
	agentOnce.Do(func() {
		agentDir, agentErr = os.MkdirTemp("", "erldist-agent-")
		if agentErr != nil {
			return
		}
		out, err := exec.Command("erlc", "-o", agentDir, "testdata/agent.erl").CombinedOutput()
		if err != nil {
			agentErr = fmt.Errorf("erlc: %v: %s", err, out)
		}
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentDir
}

// erlNode is a running Erlang node with the agent.
type erlNode struct {
	t     testing.TB
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
	pid   string // the agent's pid as printed

	backlog []string // lines read but not yet waited for
}

type erlOpts struct {
	ticktime int    // net_ticktime seconds; 0 = 4
	connect  string // node to net_adm:ping at start
}

// startErl starts `erl -name name` with the agent, on the given epmd port, and waits for "ready".
func startErl(t testing.TB, name string, epmdPort int, o erlOpts) *erlNode {
	t.Helper()
	needErlang(t)
	dir := agentBeam(t)
	if o.ticktime == 0 {
		o.ticktime = 4
	}
	cmd := exec.Command("erl", "-noshell", "-name", name, "-setcookie", testCookie,
		"-start_epmd", "false", "-kernel", "net_ticktime", fmt.Sprint(o.ticktime),
		"-kernel", "inet_dist_use_interface", "{127,0,0,1}",
		"-pa", dir, "-s", "agent", "start")
	home := t.TempDir()
	cmd.Env = append(os.Environ(), fmt.Sprintf("ERL_EPMD_PORT=%d", epmdPort), "HOME="+home,
		"AGENT_CONNECT="+o.connect)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e := &erlNode{t: t, name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		defer close(e.done)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			select {
			case e.lines <- s.Text():
			default:
			}
		}
		cmd.Wait()
	}()
	t.Cleanup(e.kill)
	line := e.waitLine("ready ", 20*time.Second)
	if f := strings.Fields(line); len(f) == 3 {
		e.pid = f[2]
	}
	return e
}

// kill stops the whole process group (SIGCONT first, in case a test stopped it) and waits.
func (e *erlNode) kill() {
	syscall.Kill(-e.cmd.Process.Pid, syscall.SIGCONT)
	syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
	<-e.done
}

func (e *erlNode) signal(sig syscall.Signal) {
	if err := syscall.Kill(-e.cmd.Process.Pid, sig); err != nil {
		e.t.Fatal(err)
	}
}

func (e *erlNode) command(line string) {
	if _, err := io.WriteString(e.stdin, line+"\n"); err != nil {
		e.t.Fatalf("%s: write %q: %v", e.name, line, err)
	}
}

// waitLine waits for an output line starting with prefix. Lines that do not match stay
// queued for later waits (in order), so the order two lines arrive in does not matter.
func (e *erlNode) waitLine(prefix string, timeout time.Duration) string {
	e.t.Helper()
	for i, l := range e.backlog {
		if strings.HasPrefix(l, prefix) {
			e.backlog = append(e.backlog[:i:i], e.backlog[i+1:]...)
			return l
		}
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case l := <-e.lines:
			if strings.HasPrefix(l, prefix) {
				return l
			}
			e.t.Logf("%s: %s", e.name, l)
			e.backlog = append(e.backlog, l)
		case <-e.done:
			e.t.Fatalf("%s exited while waiting for %q", e.name, prefix)
		case <-timer.C:
			e.t.Fatalf("%s: no %q within %v", e.name, prefix, timeout)
		}
	}
}

// events records OnNodeUp/OnNodeDown in order.
type events struct {
	mu  sync.Mutex
	log []string
	sig chan struct{}
}

func newEvents() *events { return &events{sig: make(chan struct{}, 1)} }

func (ev *events) config(c *Config) {
	c.OnNodeUp = func(n string) { ev.add("up " + n) }
	c.OnNodeDown = func(n string, reason error) {
		r := "closed"
		if errors.Is(reason, ErrTickTimeout) {
			r = "tick"
		} else if errors.Is(reason, ErrRestarted) {
			r = "restarted"
		}
		ev.add("down " + n + " " + r)
	}
}

func (ev *events) add(s string) {
	ev.mu.Lock()
	ev.log = append(ev.log, s)
	ev.mu.Unlock()
	select {
	case ev.sig <- struct{}{}:
	default:
	}
}

func (ev *events) snapshot() []string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return append([]string(nil), ev.log...)
}

// wait waits until the log has n entries and returns them.
func (ev *events) wait(t testing.TB, n int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if s := ev.snapshot(); len(s) >= n {
			return s
		}
		select {
		case <-ev.sig:
		case <-deadline.C:
			t.Fatalf("events: want %d, have %q", n, ev.snapshot())
		}
	}
}

func startGo(t testing.TB, name string, epmdPort int, mod func(*Config)) *Node {
	t.Helper()
	cfg := Config{Name: name, Cookie: testCookie, EPMDPort: epmdPort, TickTime: 4 * time.Second,
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if mod != nil {
		mod(&cfg)
	}
	n, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func recv(t testing.TB, m *Mailbox, timeout time.Duration) Message {
	t.Helper()
	select {
	case msg, ok := <-m.C():
		if !ok {
			t.Fatal("mailbox closed")
		}
		return msg
	case <-time.After(timeout):
		t.Fatalf("mailbox %s: nothing within %v", m.Name(), timeout)
	}
	return Message{}
}

//go:build unix

// Package erltest runs real Erlang nodes for the interop tests of Config.Erlang (package
// cluster and the macula command): an epmd, and erl with macula_gossip.erl, a script that does
// what Macula's macula_cluster_gossip does, on 127.0.0.1 and lo only.
package erltest

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

//go:embed macula_gossip.erl
var script []byte

// NeedErlang skips the test when erl is absent, but fails it under CI=true (.ci/run installs
// erlang-base there).
func NeedErlang(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"erl", "erlc", "epmd"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found; CI must run the Erlang interop tests (.ci/run installs erlang-base)", tool)
			}
			t.Skipf("%s not found: install Debian's erlang-base to run the Erlang interop tests", tool)
		}
	}
}

// FreeTCPPort is a TCP port free on 127.0.0.1 now.
func FreeTCPPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// StartEPMD runs a real epmd on 127.0.0.1 at a free port for the test and returns the port.
func StartEPMD(t testing.TB) int {
	t.Helper()
	for range 5 {
		port := FreeTCPPort(t)
		cmd := exec.Command("epmd", "-port", strconv.Itoa(port), "-address", "127.0.0.1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-done })
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			select {
			case <-done:
				deadline = time.Time{} // exited: port taken, try another
				continue
			default:
			}
			if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
				c.Close()
				return port
			}
		}
	}
	t.Fatal("epmd did not start")
	return 0
}

// Node is a running Erlang node with testdata/macula_gossip.erl.
type Node struct {
	t       testing.TB
	name    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan string
	done    chan struct{}
	backlog []string
}

// Start compiles the script and starts `erl -name name -setcookie cookie` with it, net_ticktime
// 4 s, distribution on 127.0.0.1, EPMD at epmdPort, gossip on lo at gossipPort every interval;
// it waits for "ready". The node is killed at the end of the test.
func Start(t testing.TB, name, cookie string, epmdPort, gossipPort int, interval time.Duration) *Node {
	t.Helper()
	NeedErlang(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "macula_gossip.erl"), script, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("erlc", "-o", dir, filepath.Join(dir, "macula_gossip.erl")).CombinedOutput(); err != nil {
		t.Fatalf("erlc: %v: %s", err, out)
	}
	// Host names are looked up in /etc/hosts only: Macula's connect_node on a Go node's
	// "name@127.0.0.1:9100" field must not become a DNS query.
	inetrc := filepath.Join(dir, "inetrc")
	if err := os.WriteFile(inetrc, []byte("{lookup, [file]}.\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("erl", "-noshell", "-name", name, "-setcookie", cookie,
		"-start_epmd", "false", "-kernel", "net_ticktime", "4",
		"-kernel", "inet_dist_use_interface", "{127,0,0,1}",
		"-pa", dir, "-s", "macula_gossip", "start")
	cmd.Env = append(os.Environ(), "ERL_EPMD_PORT="+strconv.Itoa(epmdPort), "HOME="+dir, "ERL_INETRC="+inetrc,
		"GOSSIP_PORT="+strconv.Itoa(gossipPort), "GOSSIP_INTERVAL_MS="+strconv.Itoa(int(interval/time.Millisecond)))
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
	e := &Node{t: t, name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 4096), done: make(chan struct{})}
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
	t.Cleanup(e.Kill)
	e.WaitLine("ready ", 20*time.Second)
	return e
}

// Kill stops the node with SIGKILL and waits for it.
func (e *Node) Kill() {
	syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
	<-e.done
}

// Command writes a line to the script: "nodes", "send <go node>" (to its gobox), "stop".
func (e *Node) Command(line string) {
	if _, err := io.WriteString(e.stdin, line+"\n"); err != nil {
		e.t.Fatalf("%s: write %q: %v", e.name, line, err)
	}
}

// WaitLine waits for an output line starting with prefix; other lines stay queued.
func (e *Node) WaitLine(prefix string, timeout time.Duration) string {
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

// Stamp is the microsecond timestamp at the end of a "heard/nodeup/nodedown <node> <us>" line.
func Stamp(t testing.TB, line string) time.Time {
	t.Helper()
	f := strings.Fields(line)
	us, err := strconv.ParseInt(f[len(f)-1], 10, 64)
	if err != nil {
		t.Fatalf("no timestamp in %q", line)
	}
	return time.UnixMicro(us)
}

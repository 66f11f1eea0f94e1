//go:build unix

// Package erltest runs real Erlang nodes for the interop tests of package erldist, of
// Config.Erlang (package cluster) and of the macula command: an epmd, and erl with one of two
// scripts embedded here:
//
//   - macula_gossip.erl does what Macula's macula_cluster_gossip does: joins the gossip group,
//     heartbeats, connect_node on every node heard, monitor_nodes.
//   - agent.erl is a plain node for erldist's protocol tests: commands on stdin and as
//     messages (connect, ping, global_sync, calls, monitors, links).
//
// Nodes run on 127.0.0.1 and lo, or inside a network namespace that the test made
// (Options.Netns, with an address of that namespace): never on a real interface.
package erltest

import (
	"bufio"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	//go:embed macula_gossip.erl
	gossipScript []byte
	//go:embed agent.erl
	agentScript []byte
)

// Modules of Options.Module.
const (
	// Gossip is macula_gossip.erl: Macula's gossip (the default).
	Gossip = "macula_gossip"
	// Agent is agent.erl: a node driven by commands, for erldist's tests.
	Agent = "agent"
)

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
		cmd.SysProcAttr = procAttr()
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

var (
	beamsOnce sync.Once
	beamsDir  string
	beamsErr  error
)

// beams compiles the scripts once per process into a directory of os.TempDir() named by a
// hash of the scripts and of erlc's path and size, and returns it. The directory is a cache
// (two small .beam files and an inetrc), kept for later runs like Go's build cache: tests
// start nodes in parallel and in several packages, and every package would otherwise compile
// its own copy.
func beams(t testing.TB) string {
	t.Helper()
	beamsOnce.Do(func() { beamsDir, beamsErr = compile() })
	if beamsErr != nil {
		t.Fatal(beamsErr)
	}
	return beamsDir
}

func compile() (string, error) {
	erlc, err := exec.LookPath("erlc")
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(erlc)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s %d %d\n", erlc, fi.Size(), fi.ModTime().UnixNano())
	h.Write(gossipScript)
	h.Write(agentScript)
	dir := filepath.Join(os.TempDir(), "erltest-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(filepath.Join(dir, "ok")); err == nil {
		return dir, nil
	}
	tmp, err := os.MkdirTemp("", "erltest-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // gone after the rename
	for name, src := range map[string][]byte{Gossip + ".erl": gossipScript, Agent + ".erl": agentScript,
		// Host names are looked up in /etc/hosts only: Macula's connect_node on a Go node's
		// "name@127.0.0.1:9100" field must not become a DNS query.
		"inetrc": []byte("{lookup, [file]}.\n")} {
		if err := os.WriteFile(filepath.Join(tmp, name), src, 0o644); err != nil {
			return "", err
		}
	}
	if out, err := exec.Command(erlc, "-o", tmp, filepath.Join(tmp, Gossip+".erl"), filepath.Join(tmp, Agent+".erl")).CombinedOutput(); err != nil {
		return "", fmt.Errorf("erlc: %v: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(tmp, "ok"), nil, 0o644); err != nil {
		return "", err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another test process made it first (rename of a directory onto a non-empty one fails).
		if _, serr := os.Stat(filepath.Join(dir, "ok")); serr == nil {
			return dir, nil
		}
		return "", err
	}
	return dir, nil
}

// Options says which node Start runs.
type Options struct {
	// Name is the node name, name@host with an IP host (-name).
	Name string
	// Cookie is the distribution cookie.
	Cookie string
	// Module is the script: Gossip ("" too) or Agent.
	Module string
	// EPMDPort is the port of the epmd the node registers with (ERL_EPMD_PORT). 0 = 4369.
	EPMDPort int
	// TickTime is net_ticktime in seconds. 0 = 4.
	TickTime int
	// Addr is the IPv4 address the node's distribution listens on and, for Gossip, the
	// interface of its multicast. "" = 127.0.0.1 (lo); any other address must be one of a
	// namespace the test made (Netns).
	Addr string
	// Netns runs the node inside this network namespace ("ip netns exec"). "" = this one.
	Netns string
	// GossipPort is Gossip's UDP port.
	GossipPort int
	// GossipInterval is Gossip's heartbeat interval. 0 = 100 ms.
	GossipInterval time.Duration
	// Connect is a node Agent pings at start (it prints "ping pong" or "ping pang"). "" = none.
	Connect string
}

// Node is a running Erlang node.
type Node struct {
	t       testing.TB
	name    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan string
	done    chan struct{}
	backlog []string
}

// Start starts `erl -name Name -setcookie Cookie` with the script, distribution on Addr, epmd
// at EPMDPort (it starts none: StartEPMD, or an epmd of the namespace), and waits for its
// "ready" line. The node is killed at the end of the test.
func Start(t testing.TB, o Options) *Node {
	t.Helper()
	NeedErlang(t)
	dir := beams(t)
	if o.Module == "" {
		o.Module = Gossip
	}
	if o.EPMDPort == 0 {
		o.EPMDPort = 4369
	}
	if o.TickTime == 0 {
		o.TickTime = 4
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1"
	}
	if o.GossipInterval == 0 {
		o.GossipInterval = 100 * time.Millisecond
	}
	ip := net.ParseIP(o.Addr).To4()
	if ip == nil {
		t.Fatalf("erltest: Addr %q is not an IPv4 address", o.Addr)
	}
	args := []string{"-noshell", "-name", o.Name, "-setcookie", o.Cookie,
		"-start_epmd", "false", "-kernel", "net_ticktime", strconv.Itoa(o.TickTime),
		"-kernel", "inet_dist_use_interface", fmt.Sprintf("{%d,%d,%d,%d}", ip[0], ip[1], ip[2], ip[3]),
		"-pa", dir, "-s", o.Module, "start"}
	cmd := exec.Command("erl", args...)
	if o.Netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", o.Netns, "erl"}, args...)...)
	}
	cmd.Env = append(os.Environ(), "ERL_EPMD_PORT="+strconv.Itoa(o.EPMDPort), "HOME="+t.TempDir(),
		"ERL_INETRC="+filepath.Join(dir, "inetrc"), "AGENT_CONNECT="+o.Connect, "GOSSIP_IF="+o.Addr,
		"GOSSIP_PORT="+strconv.Itoa(o.GossipPort), "GOSSIP_INTERVAL_MS="+strconv.Itoa(int(o.GossipInterval/time.Millisecond)))
	cmd.SysProcAttr = procAttr()
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
	e := &Node{t: t, name: o.Name, cmd: cmd, stdin: stdin, lines: make(chan string, 4096), done: make(chan struct{})}
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

// Name is the node's name.
func (e *Node) Name() string { return e.name }

// Kill stops the node's process group with SIGKILL (after SIGCONT, in case a test stopped it)
// and waits for it. It may be called many times.
func (e *Node) Kill() {
	syscall.Kill(-e.cmd.Process.Pid, syscall.SIGCONT)
	syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
	<-e.done
}

// Signal sends sig to the node's process group (SIGSTOP, SIGCONT).
func (e *Node) Signal(sig syscall.Signal) {
	e.t.Helper()
	if err := syscall.Kill(-e.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		e.t.Fatal(err)
	}
}

// Command writes a line to the script's stdin (see the scripts for the commands).
func (e *Node) Command(line string) {
	e.t.Helper()
	if _, err := io.WriteString(e.stdin, line+"\n"); err != nil {
		e.t.Fatalf("%s: write %q: %v", e.name, line, err)
	}
}

// WaitLine waits for an output line starting with prefix. Lines that do not match stay
// queued for later waits (in order), so the order two lines arrive in does not matter.
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

// Pending returns the lines printed so far that no WaitLine took, without waiting, and keeps
// them queued.
func (e *Node) Pending() []string {
	for {
		select {
		case l := <-e.lines:
			e.backlog = append(e.backlog, l)
		default:
			return append([]string(nil), e.backlog...)
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

package cluster_test

import (
	"bufio"
	"context"
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

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/erldist"
	"github.com/macula-io/cluster/gossip"
)

// The Erlang interop tests of Config.Erlang: a Go cluster node and real Erlang nodes running
// testdata/macula_gossip.erl (what Macula's gossip module does), on 127.0.0.1 and lo only.

const erlCookie = "cluster-erlang-test-cookie"

// needErlang skips the test when erl is absent, but fails it under CI=true (.ci/run installs
// erlang-base there).
func needErlang(t *testing.T) {
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

func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startEPMD runs a real epmd on 127.0.0.1 at a free port for the test and returns the port.
func startEPMD(t *testing.T) int {
	t.Helper()
	for range 5 {
		port := freeTCPPort(t)
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

// erlGossip is a running Erlang node with testdata/macula_gossip.erl.
type erlGossip struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan string
	done    chan struct{}
	backlog []string
}

// startErlGossip compiles the script (once per test) and starts `erl -name name` with it.
func startErlGossip(t *testing.T, name string, epmdPort, gossipPort int, interval time.Duration) *erlGossip {
	t.Helper()
	needErlang(t)
	dir := t.TempDir()
	if out, err := exec.Command("erlc", "-o", dir, "testdata/macula_gossip.erl").CombinedOutput(); err != nil {
		t.Fatalf("erlc: %v: %s", err, out)
	}
	// Host names are looked up in /etc/hosts only: Macula's connect_node on a Go node's
	// "name@127.0.0.1:9100" field must not become a DNS query.
	inetrc := filepath.Join(dir, "inetrc")
	if err := os.WriteFile(inetrc, []byte("{lookup, [file]}.\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("erl", "-noshell", "-name", name, "-setcookie", erlCookie,
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
	e := &erlGossip{t: t, name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 4096), done: make(chan struct{})}
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
	e.waitLine("ready ", 20*time.Second)
	return e
}

func (e *erlGossip) kill() {
	syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
	<-e.done
}

func (e *erlGossip) command(line string) {
	if _, err := io.WriteString(e.stdin, line+"\n"); err != nil {
		e.t.Fatalf("%s: write %q: %v", e.name, line, err)
	}
}

// waitLine waits for an output line starting with prefix; other lines stay queued.
func (e *erlGossip) waitLine(prefix string, timeout time.Duration) string {
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

// stamp is the microsecond timestamp at the end of a "heard/nodeup/nodedown <node> <us>" line.
func stamp(t *testing.T, line string) time.Time {
	t.Helper()
	f := strings.Fields(line)
	us, err := strconv.ParseInt(f[len(f)-1], 10, 64)
	if err != nil {
		t.Fatalf("no timestamp in %q", line)
	}
	return time.UnixMicro(us)
}

func erlangConfig(gossipPort, epmdPort int, name string) cluster.Config {
	var cfg cluster.Config
	cfg.Strategy = cluster.StrategyGossip
	cfg.Gossip = gossip.Config{Port: gossipPort, Interfaces: []string{"lo"}, Interval: 100 * time.Millisecond}
	cfg.Mesh.Name, cfg.Mesh.Listen, cfg.Mesh.Cookie = name, "127.0.0.1:0", erlCookie
	cfg.Erlang = cluster.ErlangConfig{Enable: true, EPMDPort: epmdPort, TickTime: 4 * time.Second,
		RetryInterval: 200 * time.Millisecond}
	return cfg
}

func isErlangUp(node string) func([]cluster.Event) bool {
	return func(evs []cluster.Event) bool {
		for _, e := range evs {
			if e.Kind == cluster.NodeUp && e.Node == node && e.Protocol == cluster.ProtocolErlang {
				return true
			}
		}
		return false
	}
}

// TestErlangMaculaNode: a Go node with Config.Erlang and Erlang nodes running Macula's gossip
// find and connect to each other both ways, exchange messages, and see each other go down.
func TestErlangMaculaNode(t *testing.T) {
	needErlang(t)
	epmd := startEPMD(t)
	gport := freeUDPPort(t)
	const goName, erl1, erl2 = "go@127.0.0.1", "erl1@127.0.0.1", "erl2@127.0.0.1"
	e1 := startErlGossip(t, erl1, epmd, gport, 100*time.Millisecond)

	started := time.Now()
	n := start(t, erlangConfig(gport, epmd, goName))
	if n.c.Erlang() == nil || n.c.Erlang().Name() != goName {
		t.Fatalf("Erlang() = %v", n.c.Erlang())
	}
	// Erlang: nodeup for the Go node, timed from its first heartbeat heard (the Erlang-form
	// twin: the name@host:port field is heard too, and its connect fails, as in Macula).
	heard := stamp(t, e1.waitLine("heard "+goName+" ", 10*time.Second))
	up := stamp(t, e1.waitLine("nodeup "+goName+" ", 10*time.Second))
	t.Logf("Erlang nodeup %v after the Go node's first heartbeat reached it (%v after cluster.Start began)",
		up.Sub(heard), up.Sub(started))
	// Go: the Erlang node is discovered (no address) and up, through the one event stream.
	n.rec.waitFor(t, 10*time.Second, "erlang nodeup "+erl1, isErlangUp(erl1))
	var goUp time.Time
	for _, e := range n.rec.all() {
		if e.Kind == cluster.NodeUp && e.Node == erl1 {
			goUp = e.Time
		}
	}
	t.Logf("Go NodeUp %s %v after cluster.Start began", erl1, goUp.Sub(started))
	found := false
	for _, m := range n.c.Connected() {
		if m.Node == erl1 {
			found = m.Erlang && m.Addr == ""
		}
	}
	if !found {
		t.Fatalf("Connected() = %+v: want %s with Erlang set", n.c.Connected(), erl1)
	}
	e1.command("nodes")
	if l := e1.waitLine("nodes ", 5*time.Second); !strings.Contains(l, "'"+goName+"'") {
		t.Fatalf("Go node not in Erlang's nodes(): %s", l)
	}

	// Messages both ways: Erlang -> a registered Go name, Go -> the Erlang process and back.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	box, err := n.c.Erlang().Register("gobox")
	if err != nil {
		t.Fatal(err)
	}
	e1.command("send " + goName)
	select {
	case m := <-box.C():
		if want := (erldist.Tuple{erldist.Atom("hello"), erldist.Atom(erl1)}); !erldist.Equal(m.Term, want) {
			t.Fatalf("got %#v, want %#v", m.Term, want)
		}
	case <-ctx.Done():
		t.Fatal("no message from Erlang")
	}
	sent := time.Now()
	if err := box.Send(ctx, erldist.Name{Node: erl1, Name: "macula_gossip"},
		erldist.Tuple{erldist.Atom("echo"), box.Pid(), int64(42)}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-box.C():
		if want := (erldist.Tuple{erldist.Atom("echo"), erldist.Atom(erl1), int64(42)}); !erldist.Equal(m.Term, want) {
			t.Fatalf("got %#v, want %#v", m.Term, want)
		}
		t.Logf("round trip Go -> Erlang -> Go %v", time.Since(sent))
	case <-ctx.Done():
		t.Fatal("no echo from Erlang")
	}

	// Kill the Erlang node: Go reports NodeDown at once (the TCP connection closes).
	killed := time.Now()
	e1.kill()
	n.rec.waitFor(t, 10*time.Second, "nodedown "+erl1, func(evs []cluster.Event) bool {
		return count(evs, cluster.NodeDown, erl1) == 1
	})
	for _, e := range n.rec.all() {
		if e.Kind == cluster.NodeDown && e.Node == erl1 {
			if e.Protocol != cluster.ProtocolErlang || e.Reason != "closed" {
				t.Errorf("NodeDown %+v: want protocol erlang, reason closed", e)
			}
			t.Logf("Go NodeDown %s %v after SIGKILL", erl1, e.Time.Sub(killed))
		}
	}

	// A second Erlang node; then the Go node leaves: Erlang sees nodedown at once.
	e2 := startErlGossip(t, erl2, epmd, gport, 100*time.Millisecond)
	e2.waitLine("nodeup "+goName+" ", 10*time.Second)
	n.rec.waitFor(t, 10*time.Second, "erlang nodeup "+erl2, isErlangUp(erl2))
	closed := time.Now()
	n.c.Close()
	down := stamp(t, e2.waitLine("nodedown "+goName+" ", 5*time.Second))
	t.Logf("Erlang nodedown %v after Cluster.Close began", down.Sub(closed))

	evs := n.rec.all()
	checkLinkSequence(t, goName, evs)
	for _, node := range []string{erl1, erl2} {
		if got := count(evs, cluster.NodeUp, node); got != 1 {
			t.Errorf("%d NodeUp for %s, want 1:\n%s", got, node, dump(evs))
		}
		if got := count(evs, cluster.NodeDown, node); got != 1 {
			t.Errorf("%d NodeDown for %s, want 1:\n%s", got, node, dump(evs))
		}
	}
	for _, e := range evs {
		if e.Node == goName {
			t.Errorf("the Go node reported itself: %v", e)
		}
	}
}

// TestErlangTwinsOfGoNodes: two Go nodes with Config.Erlang see each other once, on the mesh:
// neither its own Erlang-form heartbeat nor the other's is a peer. No erl needed: the first
// node runs the embedded EPMD.
func TestErlangTwinsOfGoNodes(t *testing.T) {
	epmd := freeTCPPort(t)
	gport := freeUDPPort(t)
	cfgA := erlangConfig(gport, epmd, "a@127.0.0.1")
	cfgA.Erlang.EmbeddedEPMD = true
	a := start(t, cfgA)
	b := start(t, erlangConfig(gport, epmd, "b@127.0.0.1"))
	waitFullMesh(t, []*node{a, b}, 10*time.Second)
	// Some rounds more, with both forms heard by each.
	g := b.c.Strategy().(*gossip.Strategy).Gossip()
	deadline := time.Now().Add(5 * time.Second)
	for g.Stats().TwinsIgnored < 5 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if g.Stats().TwinsIgnored < 5 {
		t.Fatalf("b ignored %d twins, want the a's Erlang-form heartbeats", g.Stats().TwinsIgnored)
	}
	for _, n := range []*node{a, b} {
		evs := n.rec.all()
		checkLinkSequence(t, n.c.Self().Node, evs)
		if len(evs) != 2 {
			t.Errorf("%s: want Discovered and NodeUp of the other only:\n%s", n.c.Self().Node, dump(evs))
		}
		for _, e := range evs {
			if e.Addr == "" || e.Protocol != "" {
				t.Errorf("%s: %v: want the peer on the mesh, with its address", n.c.Self().Node, e)
			}
		}
		if m := n.c.Connected(); len(m) != 1 || m[0].Erlang {
			t.Errorf("%s: Connected() = %+v", n.c.Self().Node, m)
		}
		if len(n.c.Erlang().Nodes()) != 0 {
			t.Errorf("%s: Erlang links %q, want none", n.c.Self().Node, n.c.Erlang().Nodes())
		}
	}
}

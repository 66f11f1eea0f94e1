package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// previousWire is the last commit whose mesh speaks wire version 1
// (plaintext links after the handshake).
const previousWire = "e7c572f"

// buildAt builds cmd/macula from commit rev of this repository (git archive
// into a temporary directory, so no worktree is registered). Outside CI a
// failure (no git history, no module cache) skips the test; under CI=true
// it fails.
func buildAt(t *testing.T, rev string) string {
	t.Helper()
	fail := t.Skipf
	if os.Getenv("CI") == "true" {
		fail = t.Fatalf
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		fail("build macula at %s: not in a git checkout: %v", rev, err)
	}
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh",
		strings.TrimSpace(string(top)), rev, src)
	if out, err := archive.CombinedOutput(); err != nil {
		fail("build macula at %s: git archive (shallow clone? fetch the history): %v\n%s", rev, err, out)
	}
	bin := filepath.Join(t.TempDir(), "macula-"+rev)
	build := exec.Command("go", "build", "-o", bin, "./cmd/macula")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		fail("build macula at %s: %v\n%s", rev, err, out)
	}
	return bin
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// node is a `macula run --json` process of some build.
type node struct {
	cmd    *exec.Cmd
	stderr lockedBuffer
	mu     sync.Mutex
	events []map[string]any
	done   chan struct{}
}

func runBin(t *testing.T, bin string, args ...string) *node {
	t.Helper()
	n := &node{done: make(chan struct{})}
	n.cmd = exec.Command(bin, append([]string{"run", "--json"}, args...)...)
	n.cmd.Env = append(os.Environ(), "MACULA_COOKIE=upgrade-cookie")
	n.cmd.Stderr = &n.stderr
	out, err := n.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(n.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				n.mu.Lock()
				n.events = append(n.events, m)
				n.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		n.cmd.Process.Kill()
		<-n.done
		n.cmd.Wait()
		if t.Failed() {
			t.Logf("stderr of %v:\n%s", n.cmd.Args, n.stderr.String())
		}
	})
	return n
}

func (n *node) has(event, node string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, e := range n.events {
		if e["event"] == event && (node == "" || e["node"] == node) {
			return true
		}
	}
	return false
}

// until polls cond (bounded) every 20 ms.
func until(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
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

// A rolling upgrade from wire version 1 (commit e7c572f) to version 2: the
// documented outcome (mesh/doc.go, "Wire format") is that mixed nodes do not
// link and both sides say why, naming the versions; nodes of the same
// version link. Old node o, new nodes n1 and n2, all listing each other as
// static nodes on 127.0.0.1.
func TestRollingUpgradeFromWireV1(t *testing.T) {
	if testing.Short() {
		t.Skip("builds an old commit")
	}
	old := buildAt(t, previousWire)
	ports := []int{freeTCPPort(t), freeTCPPort(t), freeTCPPort(t)}
	names := []string{"o@127.0.0.1", "n1@127.0.0.1", "n2@127.0.0.1"}
	var static []string
	for i, n := range names {
		static = append(static, fmt.Sprintf("%s:%d", n, ports[i]))
	}
	args := func(i int) []string {
		return []string{"--strategy", "static", "--nodes", strings.Join(static, ","), "--name", names[i],
			"--listen", fmt.Sprintf("127.0.0.1:%d", ports[i]), "--interface", "lo",
			"--port", fmt.Sprint(testUDPPort(t)), "--link-timeout", "1s"}
	}
	o := runBin(t, old, args(0)...)
	n1 := runBin(t, binary, args(1)...)
	n2 := runBin(t, binary, args(2)...)

	until(t, 15*time.Second, "n1 and n2 linked", func() bool {
		return n1.has("nodeup", names[2]) && n2.has("nodeup", names[1])
	})
	until(t, 15*time.Second, "the new nodes name both versions", func() bool {
		s := n1.stderr.String() + n2.stderr.String()
		return strings.Contains(s, "bad_version") && strings.Contains(s, "wire version 1") &&
			strings.Contains(s, "versions 2 to 2")
	})
	until(t, 15*time.Second, "the old node refuses version 2", func() bool {
		s := o.stderr.String()
		return strings.Contains(s, "bad_version") && strings.Contains(s, "version 2")
	})
	// Several dial rounds later, still no link across versions.
	time.Sleep(2 * time.Second)
	for _, c := range []struct {
		who  string
		n    *node
		peer string
	}{{names[0], o, names[1]}, {names[0], o, names[2]}, {names[1], n1, names[0]}, {names[2], n2, names[0]}} {
		if c.n.has("nodeup", c.peer) {
			t.Errorf("%s linked with %s across wire versions", c.who, c.peer)
		}
	}
}

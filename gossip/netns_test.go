package gossip

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNetns runs TestNetnsChild in a network namespace it creates: two
// veth pairs' worth of interfaces that exist nowhere else. There the tests
// may use what must never touch the host's real interfaces: IPv6 multicast
// (which the host's lo cannot do), the default interface selection, and
// interfaces appearing and vanishing. Needs root and iproute2; skipped
// without them, except with CI=true.

const netnsChildEnv = "GOSSIP_NETNS_CHILD"

const nsPrefix = "gossiptest-"

func TestNetns(t *testing.T) {
	if os.Getenv(netnsChildEnv) != "" {
		t.Skip("inside the namespace")
	}
	t.Parallel()
	why := ""
	if os.Geteuid() != 0 {
		why = "not root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "iproute2 (ip) not found"
	}
	if why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("namespace test cannot run: %s (required when CI=true)", why)
		}
		t.Skipf("namespace test skipped: %s", why)
	}
	removeStaleNamespaces(t)
	ns := fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), rand.IntN(1e6))
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	})
	for _, cmd := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "gv0", "type", "veth", "peer", "name", "gv1"},
		{"addr", "add", "198.18.255.1/24", "dev", "gv0"},
		{"addr", "add", "198.18.255.2/24", "dev", "gv1"},
		{"-6", "addr", "add", "fdca:1ab:ff::1/64", "dev", "gv0", "nodad"},
		{"-6", "addr", "add", "fdca:1ab:ff::2/64", "dev", "gv1", "nodad"},
		{"link", "set", "gv0", "up"},
		{"link", "set", "gv1", "up"},
	} {
		ip(append([]string{"-n", ns}, cmd...)...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, os.Args[0],
		"-test.run=^TestNetnsChild$", "-test.v", "-test.count=1", "-test.timeout=45s")
	cmd.Env = append(os.Environ(), netnsChildEnv+"="+ns)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestNetnsChild") {
		t.Fatalf("child in %s: %v\n%s", ns, err, out)
	}
	t.Logf("child in %s:\n%s", ns, out)
}

// removeStaleNamespaces deletes namespaces left by test processes that died.
func removeStaleNamespaces(t *testing.T) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, nsPrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // still running
		}
		if err := exec.Command("ip", "netns", "del", name).Run(); err == nil {
			t.Logf("removed stale namespace %s", name)
		}
	}
}

// startNS starts a node inside the child's namespace; unlike startNode the
// interfaces are used as given (nil = default selection).
func startNS(t *testing.T, port int, name string, mod func(*Config)) *node {
	t.Helper()
	rec := newRecorder()
	cfg := Config{Port: port, TTL: 1, Interval: tInterval, Expiry: tExpiry,
		Node: name + "@198.18.255.1:9100", Sink: rec, Logger: testLogger()}
	if mod != nil {
		mod(&cfg)
	}
	g, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Start %s: %v", name, err)
	}
	t.Cleanup(func() { g.Close() })
	return &node{Gossip: g, rec: rec, name: cfg.Node}
}

func TestNetnsChild(t *testing.T) {
	ns := os.Getenv(netnsChildEnv)
	if ns == "" {
		t.Skip("runs inside the namespace made by TestNetns")
	}
	// Safety: refuse to run anywhere but in the namespace TestNetns built.
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifi := range ifs {
		if !slices.Contains([]string{"lo", "gv0", "gv1"}, ifi.Name) {
			t.Fatalf("interface %q present: not in namespace %s, refusing", ifi.Name, ns)
		}
	}
	ipc := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}

	t.Run("IPv6", func(t *testing.T) {
		port := freePort(t)
		var nodes []*node
		for i := range 3 {
			nodes = append(nodes, startNS(t, port, fmt.Sprintf("v6n%d", i), func(c *Config) {
				c.Group = "ff02::4d41:1"
				c.Interfaces = []string{"gv0"}
			}))
		}
		waitMesh(t, nodes)
		if g := nodes[0].Group(); g != fmt.Sprintf("[ff02::4d41:1]:%d", port) {
			t.Errorf("Group() = %q", g)
		}
		nodes[1].Close()
		nodes[0].rec.wait(t, "lost v6n1", func(evs []Event) bool { return has(evs, Lost, nodes[1].name) })
	})

	t.Run("IPv6SiteLocalSigned", func(t *testing.T) {
		port := freePort(t)
		mod := func(c *Config) { c.Group = "ff05::4d41:1"; c.Interfaces = []string{"gv0"}; c.Secrets = []string{"k"} }
		nodes := []*node{startNS(t, port, "s0", mod), startNS(t, port, "s1", mod)}
		waitMesh(t, nodes)
	})

	t.Run("DefaultInterfaces", func(t *testing.T) {
		port := freePort(t)
		nodes := []*node{startNS(t, port, "d0", nil), startNS(t, port, "d1", nil)}
		waitMesh(t, nodes)
		if got := nodes[0].Interfaces(); !slices.Equal(got, []string{"gv0", "gv1"}) {
			t.Errorf("default selection joined %v, want [gv0 gv1] (lo excluded)", got)
		}
		// The peer can hear a heartbeat before the sender counts it.
		eventually(t, "one heartbeat per interface counted", func() bool { return nodes[0].Stats().HeartbeatsSent >= 2 })
		if st := nodes[0].Stats(); st.SendErrors != 0 {
			t.Errorf("stats %+v", st)
		}
	})

	t.Run("BroadcastDefault", func(t *testing.T) {
		port := freePort(t)
		mod := func(c *Config) { c.Broadcast = true }
		nodes := []*node{startNS(t, port, "b0", mod), startNS(t, port, "b1", mod)}
		waitMesh(t, nodes)
		if got := nodes[0].Interfaces(); !slices.Equal(got, []string{"gv0", "gv1"}) {
			t.Errorf("broadcast default selection %v", got)
		}
	})

	t.Run("Hotplug", func(t *testing.T) {
		n := startNS(t, freePort(t), "h", nil)
		ipc("link", "add", "gv2", "type", "veth", "peer", "name", "gv3")
		t.Cleanup(func() { exec.Command("ip", "link", "del", "gv2").Run() })
		ipc("addr", "add", "198.18.254.1/24", "dev", "gv2")
		ipc("addr", "add", "198.18.254.2/24", "dev", "gv3")
		ipc("link", "set", "gv2", "up")
		ipc("link", "set", "gv3", "up")
		eventually(t, "gv2 and gv3 joined", func() bool {
			return slices.Equal(n.Interfaces(), []string{"gv0", "gv1", "gv2", "gv3"})
		})
		ipc("link", "del", "gv2") // removes its peer gv3 too
		eventually(t, "gv2 and gv3 left", func() bool { return slices.Equal(n.Interfaces(), []string{"gv0", "gv1"}) })
		// A named interface that vanishes is left, and joined again when it returns.
		ipc("link", "add", "gv6", "type", "veth", "peer", "name", "gv7")
		t.Cleanup(func() { exec.Command("ip", "link", "del", "gv6").Run() })
		ipc("link", "set", "gv6", "up")
		ipc("link", "set", "gv7", "up")
		m := startNS(t, freePort(t), "m", func(c *Config) { c.Interfaces = []string{"gv6"} })
		ipc("link", "del", "gv6")
		eventually(t, "named gv6 left", func() bool { return len(m.Interfaces()) == 0 })
		ipc("link", "add", "gv6", "type", "veth", "peer", "name", "gv7")
		ipc("link", "set", "gv6", "up")
		eventually(t, "named gv6 joined again", func() bool { return slices.Equal(m.Interfaces(), []string{"gv6"}) })
	})

	t.Run("NoInterfaceJoins", func(t *testing.T) {
		ipc("link", "add", "gv4", "type", "veth", "peer", "name", "gv5") // left down
		t.Cleanup(func() { exec.Command("ip", "link", "del", "gv4").Run() })
		_, err := Start(context.Background(), Config{Port: freePort(t), Node: "x@198.18.255.1:1", Interfaces: []string{"gv4"}})
		if !errors.Is(err, ErrNoInterface) || !strings.Contains(err.Error(), "230.1.1.251") {
			t.Errorf("down interface: %v", err)
		}
		// Broadcast mode needs an IPv4 broadcast address.
		ipc("link", "set", "gv4", "up")
		_, err = Start(context.Background(), Config{Port: freePort(t), Node: "x@198.18.255.1:1", Interfaces: []string{"gv4"}, Broadcast: true})
		if !errors.Is(err, ErrNoInterface) {
			t.Errorf("broadcast without address: %v", err)
		}
	})
}

//go:build linux

package mcast

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/macula-io/cluster/internal/netlab"
)

// TestNetns runs TestNetnsChild in host 0 of a netlab lab: a namespace
// with lo and eth0 (198.18.0.10/16, fdca:1ab::10/64) on a virtual switch
// that reaches nothing else. There the test may add interfaces and use
// IPv6 multicast and broadcast, which must never touch the machine's real
// interfaces. Needs root and iproute2: skipped without, except with
// CI=true.

const netnsChildEnv = "MCAST_NETNS_CHILD"

func TestNetns(t *testing.T) {
	if os.Getenv(netnsChildEnv) != "" {
		t.Skip("inside the namespace")
	}
	lab := netlab.New(t, netlab.Options{Hosts: 1})
	h := lab.Hosts[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := h.Command(ctx, os.Args[0], "-test.run=^TestNetnsChild$", "-test.v", "-test.count=1", "-test.timeout=50s")
	cmd.Env = append(os.Environ(), netnsChildEnv+"="+h.NS)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestNetnsChild") {
		t.Fatalf("child in %s: %v\n%s", h.NS, err, out)
	}
	t.Logf("child in %s:\n%s", h.NS, out)
}

// Interfaces the child may see: netlab's, and the ones it adds.
var childIfaces = []string{"lo", "eth0", "mw0", "mw1"}

func TestNetnsChild(t *testing.T) {
	ns := os.Getenv(netnsChildEnv)
	if ns == "" {
		t.Skip("runs inside the namespace made by TestNetns")
	}
	// Safety: refuse to run anywhere but in the lab's host namespace.
	all, err := List()
	if err != nil {
		t.Fatal(err)
	}
	for _, ifi := range all {
		if !slices.Contains(childIfaces, ifi.Name) {
			t.Fatalf("interface %q present: not in namespace %s, refusing", ifi.Name, ns)
		}
	}
	ip := func(t *testing.T, args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	eth0 := func(t *testing.T) Interface {
		t.Helper()
		use, missing, err := Interfaces(Want{IPv4: true})
		if err != nil || len(missing) > 0 || !slices.Equal(names(use), []string{"eth0"}) {
			t.Fatalf("default selection %v, missing %v, err %v; want [eth0]", names(use), missing, err)
		}
		return use[0]
	}

	t.Run("Addresses", func(t *testing.T) {
		e := eth0(t)
		bcast, src := e.Broadcast4()
		if want := netip.MustParseAddr("198.18.0.10"); src != want || e.Source4() != want || bcast != netip.MustParseAddr("198.18.255.255") {
			t.Errorf("eth0 %v: broadcast %v from %v", e.Addrs, bcast, src)
		}
		if !slices.Contains(e.V6(), netip.MustParseAddr("fdca:1ab::10")) {
			t.Errorf("eth0 IPv6 %v", e.V6())
		}
	})

	t.Run("IPv6", func(t *testing.T) {
		e := eth0(t)
		g1, g2 := netip.MustParseAddr("ff02::4d41:77"), netip.MustParseAddr("ff02::4d41:78")
		a := listen(t, Config{Group: g1}, &e.Interface)
		b := listen(t, Config{Group: g1, Port: a.Port()}, &e.Interface)
		other := listen(t, Config{Group: g2, Port: a.Port()}, &e.Interface)
		send(t, a, &e.Interface, netip.Addr{}, other.Group(), "to g2")
		send(t, a, &e.Interface, netip.Addr{}, a.Group(), "to g1")
		for _, c := range []*Conn{a, b} {
			p, msg := readOne(t, c)
			if msg != "to g1" || p.Dst != g1 || p.IfIndex != e.Index || p.Src.Port() != uint16(a.Port()) {
				t.Errorf("got %q %+v first (IPV6_MULTICAST_ALL off: not the other group)", msg, p)
			}
		}
		if p, msg := readOne(t, other); msg != "to g2" || p.Dst != g2 {
			t.Errorf("other group's socket got %q %+v", msg, p)
		}
	})

	t.Run("Broadcast", func(t *testing.T) {
		e := eth0(t)
		bcast, src := e.Broadcast4()
		c := listen(t, Config{Group: netip.MustParseAddr("239.255.77.1"), Broadcast: true}, nil)
		send(t, c, &e.Interface, src, netip.AddrPortFrom(bcast, uint16(c.Port())), "broadcast")
		if p, msg := readOne(t, c); msg != "broadcast" || p.Dst != bcast || p.IfIndex != e.Index || p.Src.Addr() != src {
			t.Errorf("got %q %+v", msg, p)
		}
	})

	// watchLink adds and removes a veth pair and checks that w reports
	// each step within limit.
	watchLink := func(t *testing.T, w *Watcher, limit time.Duration) {
		t.Cleanup(func() { exec.Command("ip", "link", "del", "mw0").Run() })
		waitSignal(t, w, limit, "Watch")
		ip(t, "link", "add", "mw0", "type", "veth", "peer", "name", "mw1")
		waitSignal(t, w, limit, "ip link add mw0")
		ip(t, "addr", "add", "198.18.77.1/24", "dev", "mw0")
		waitSignal(t, w, limit, "ip addr add")
		ip(t, "link", "set", "mw0", "up")
		ip(t, "link", "set", "mw1", "up")
		waitSignal(t, w, limit, "ip link set up")
		if use, _, _ := Interfaces(Want{IPv4: true}); !slices.Equal(names(use), []string{"eth0", "mw0"}) {
			t.Errorf("after the signal, the default selection is %v", names(use))
		}
		ip(t, "link", "del", "mw0")
		waitSignal(t, w, limit, "ip link del mw0")
	}

	t.Run("WatchEvents", func(t *testing.T) {
		w := Watch(context.Background())
		defer w.Close()
		if !w.events {
			t.Fatal("not subscribed to rtnetlink events")
		}
		// Far below the 30 s safety poll: only an event can be this quick.
		watchLink(t, w, 3*time.Second)
		// An event that changes nothing the watcher reports (the MTU) gives
		// no signal. (The namespace goes away with the lab.)
		ip(t, "link", "set", "eth0", "mtu", "1400")
		time.Sleep(settleDelay + 300*time.Millisecond)
		noSignal(t, w, "an MTU change")
	})

	t.Run("WatchPoll", func(t *testing.T) {
		w := watch(context.Background(), watchOptions{poll: 50 * time.Millisecond, noEvents: true})
		defer w.Close()
		if w.events {
			t.Fatal("subscribed although told not to")
		}
		watchLink(t, w, 3*time.Second)
	})

	t.Run("WatchCancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		w := Watch(ctx)
		waitSignal(t, w, time.Second, "Watch")
		cancel()
		done := make(chan struct{})
		go func() { w.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Close blocked after the context was cancelled")
		}
	})

}

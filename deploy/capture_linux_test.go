package deploy_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The unmodified compose.yaml runs on an ordinary (not internal) bridge
// network. groupCapture verifies, from the host, what keeps that safe: it
// reads every IPv4 packet from the network's subnet on the host's
// interfaces (an AF_PACKET socket, receive only) while the nodes run, and
// the check fails the test if a gossip packet (230.1.1.251:45892) or any
// other packet from the containers appears on an interface other than the
// network's bridge and its ports, or if a gossip packet has a TTL other than
// 1. Packets for outside addresses that enter the host from the bridge
// are listed: the test's firewall rule (isolate) drops them there. (They
// are Docker's embedded DNS forwarding a name it does not know, such as
// node3 once it stopped, to the host's resolvers.) Masqueraded packets
// would carry the host's address on the way out, which is why that rule,
// not this capture, is what keeps them in.

const (
	gossipGroup = "230.1.1.251"
	gossipPort  = 45892
)

type ifInfo struct{ name, master string }

type flow struct {
	ifindex  int
	src, dst netip.Addr
	proto    uint8
	dport    uint16
	ttl      uint8
	group    bool // to the gossip group and port
}

type groupCapture struct {
	t      *testing.T
	subnet netip.Prefix
	fd     int
	stop   chan struct{}
	done   chan struct{}

	mu     sync.Mutex
	ifs    map[int]ifInfo
	flows  map[flow]int // bounded: maxFlows distinct entries
	drops  int
	closed bool
}

const maxFlows = 4096

// startGroupCapture opens the capture socket; it skips (fails with CI=true)
// where that is not possible (not root), since then the safety of the
// unmodified run cannot be verified.
func startGroupCapture(t *testing.T, subnet netip.Prefix) *groupCapture {
	t.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
	if err != nil {
		skipOrFail(t, "cannot open a packet socket to verify that multicast stays on the compose bridge: %v", err)
	}
	tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		t.Fatalf("packet socket: %v", err)
	}
	c := &groupCapture{t: t, subnet: subnet, fd: fd, stop: make(chan struct{}), done: make(chan struct{}),
		ifs: map[int]ifInfo{}, flows: map[flow]int{}}
	go c.loop()
	t.Cleanup(c.close)
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *groupCapture) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	close(c.stop)
	<-c.done
	unix.Close(c.fd)
}

func (c *groupCapture) loop() {
	defer close(c.done)
	group := netip.MustParseAddr(gossipGroup)
	buf := make([]byte, 64) // headers only
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(c.fd, buf, unix.MSG_TRUNC)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			c.t.Errorf("capture: %v", err)
			return
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		p := buf[:min(n, len(buf))]
		if !ok || len(p) < 20 || p[0]>>4 != 4 {
			continue
		}
		ihl := int(p[0]&0x0f) * 4
		f := flow{ifindex: ll.Ifindex, ttl: p[8], proto: p[9],
			src: netip.AddrFrom4([4]byte(p[12:16])), dst: netip.AddrFrom4([4]byte(p[16:20]))}
		if (f.proto == unix.IPPROTO_UDP || f.proto == unix.IPPROTO_TCP) && len(p) >= ihl+4 {
			f.dport = binary.BigEndian.Uint16(p[ihl+2 : ihl+4])
		}
		f.group = f.dst == group && f.proto == unix.IPPROTO_UDP && f.dport == gossipPort
		if !c.subnet.Contains(f.src) {
			continue // not from the containers
		}
		if !f.group && c.subnet.Contains(f.dst) {
			f.dport = 0 // between containers: one entry per interface (ports of TCP replies vary)
		}
		c.mu.Lock()
		if _, known := c.ifs[f.ifindex]; !known {
			c.ifs[f.ifindex] = lookupIf(f.ifindex)
		}
		if _, known := c.flows[f]; known || len(c.flows) < maxFlows {
			c.flows[f]++
		} else {
			c.drops++
		}
		c.mu.Unlock()
	}
}

// lookupIf names an interface and its bridge (master), at first sight: a
// stopped container's veth is gone by the end.
func lookupIf(index int) ifInfo {
	ifi, err := net.InterfaceByIndex(index)
	if err != nil {
		return ifInfo{name: fmt.Sprintf("#%d", index)}
	}
	info := ifInfo{name: ifi.Name}
	if m, err := os.Readlink(filepath.Join("/sys/class/net", ifi.Name, "master")); err == nil {
		info.master = filepath.Base(m)
	}
	return info
}

// check registers the verification for the project's bridge. It runs at
// cleanup, after the test ran (also when it failed or skipped), before the
// project is removed.
func (c *groupCapture) check(bridge string) {
	t, subnet := c.t, c.subnet
	t.Logf("capture: watching the host's interfaces for packets of %s (bridge %s)", subnet, bridge)
	t.Cleanup(func() {
		c.close()
		c.mu.Lock()
		defer c.mu.Unlock()
		onBridge := func(ifi ifInfo) bool { return ifi.name == bridge || ifi.master == bridge }
		group := netip.MustParseAddr(gossipGroup)
		var heard int
		ttls := map[uint8]int{}
		var leaks, blocked []string
		for f, n := range c.flows {
			ifi := c.ifs[f.ifindex]
			line := fmt.Sprintf("%d packets %v -> %v proto %d port %d on %s (TTL %d)", n, f.src, f.dst, f.proto, f.dport, ifi.name, f.ttl)
			switch {
			case f.group && onBridge(ifi):
				heard += n
				ttls[f.ttl] += n
			case f.dst == group || !onBridge(ifi):
				leaks = append(leaks, line)
			case ifi.name == bridge && !subnet.Contains(f.dst) && !f.dst.IsMulticast():
				// Into the host from the bridge, to an outside address:
				// the test's firewall rule drops it (see isolate).
				// 224.0.0.0/4: IGMP reports, which stay on the bridge.
				blocked = append(blocked, line)
			}
		}
		sort.Strings(leaks)
		sort.Strings(blocked)
		t.Logf("capture: %d gossip packets of %s on bridge %s and its ports, by TTL %v; %d distinct flows (%d not recorded)",
			heard, subnet, bridge, ttls, len(c.flows), c.drops)
		if len(blocked) > 0 {
			t.Logf("capture: packets for outside addresses that entered the host from %s (dropped there by the test's rule):\n%s",
				bridge, strings.Join(blocked, "\n"))
		}
		if len(leaks) > 0 {
			t.Errorf("packets of the containers seen off their bridge %s:\n%s", bridge, strings.Join(leaks, "\n"))
		}
		for ttl, n := range ttls {
			if ttl != 1 {
				t.Errorf("%d gossip packets with TTL %d on bridge %s, want TTL 1 (the default)", n, ttl, bridge)
			}
		}
		if heard == 0 && !t.Skipped() {
			t.Errorf("capture saw no gossip packet on bridge %s: the safety check did not work", bridge)
		}
	})
}

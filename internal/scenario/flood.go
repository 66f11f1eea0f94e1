//go:build linux

package scenario

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/macula-io/cluster/gossip"
	"github.com/macula-io/cluster/internal/netlab"
)

// multicastSender opens a UDP socket inside host's namespace that sends
// multicast out of its eth0 (by the host's address), TTL 1, no loopback.
func multicastSender(host *netlab.Host) (*net.UDPConn, error) {
	var c *net.UDPConn
	err := netlab.InNetns(host.NS, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		f := os.NewFile(uintptr(fd), "flood")
		defer f.Close()
		ip := host.IP.As4()
		for _, o := range []struct {
			name string
			err  error
		}{
			{"IP_MULTICAST_IF", unix.SetsockoptInet4Addr(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_IF, ip)},
			{"IP_MULTICAST_TTL", unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, 1)},
			{"IP_MULTICAST_LOOP", unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0)},
			{"SO_SNDBUF", unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)},
			{"bind", unix.Bind(fd, &unix.SockaddrInet4{Addr: ip})},
		} {
			if o.err != nil {
				return fmt.Errorf("%s: %w", o.name, o.err)
			}
		}
		pc, err := net.FilePacketConn(f)
		if err != nil {
			return err
		}
		c = pc.(*net.UDPConn)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("flood socket in %s: %w", host.NS, err)
	}
	return c, nil
}

// FloodStats says what a flood sent.
type FloodStats struct {
	Sent    uint64
	Errors  uint64
	Elapsed time.Duration
	// ByKind counts packets per kind: unsigned, wrong HMAC, signed with
	// another secret, malformed.
	ByKind map[string]uint64
}

// floodBatch is how many packets one send system call carries.
const floodBatch = 64

// batchSender sends batches of flood packets. Each packet is built in a
// buffer that starts with hdrLen bytes for the sender's headers.
type batchSender interface {
	hdrLen() int
	// send fills the headers of each packet and sends them all; it
	// returns how many were sent.
	send(pkts [][]byte) (int, error)
	close() error
}

// Flood sends hostile gossip packets from host's eth0 to group (the lab's
// multicast group and gossip port): rate packets per second for at most
// d, and at most rate*d packets, in batches of 64 per system call, paced
// per batch. With target nil the packets are multicast to the whole
// group, so every host of the lab receives each one. With a target they
// are sent as Ethernet frames to the target's MAC address, still with the
// group as IP destination and the gossip port as UDP port, so that only
// the target's kernel and node receive them (exactly what a group flood
// costs one node), not every node on the bridge: on one machine, a group
// flood of R packets/s costs R deliveries per host, N*R in all, on the
// same cores.
//
// The mix, in turn: unsigned heartbeats of unique names, heartbeats of
// unique names with a random HMAC, heartbeats signed with another secret,
// malformed packets (no prefix, empty node, bad characters, a short or
// non-hex HMAC, too long), and now and then a real node's name with a
// wrong HMAC. Every packet leaves only through the host's namespace.
func Flood(ctx context.Context, host, target *netlab.Host, group netip.AddrPort, rate int, d time.Duration) (FloodStats, error) {
	st := FloodStats{ByKind: map[string]uint64{}}
	if rate <= 0 || d <= 0 {
		return st, nil
	}
	var snd batchSender
	var err error
	if target == nil {
		snd, err = newGroupSender(host, group)
	} else {
		snd, err = newFrameSender(host, target, group)
	}
	if err != nil {
		return st, err
	}
	defer snd.close()
	hl := snd.hdrLen()
	bufs := make([][]byte, floodBatch)
	pkts := make([][]byte, floodBatch)
	for i := range bufs {
		bufs[i] = make([]byte, hl, hl+gossip.MaxPacketSize+64)
	}
	g := newGenerator()
	total := uint64(rate) * uint64(d/time.Millisecond) / 1000
	start := time.Now()
	deadline := start.Add(d)
	for st.Sent < total {
		now := time.Now()
		if now.After(deadline) || ctx.Err() != nil {
			break
		}
		due := min(total, uint64(now.Sub(start).Seconds()*float64(rate))+1)
		if st.Sent >= due {
			// Paced per batch: sleep until a whole batch is due.
			next := start.Add(time.Duration(float64(st.Sent+min(floodBatch, total-st.Sent)-1) / float64(rate) * float64(time.Second)))
			time.Sleep(max(next.Sub(now), 50*time.Microsecond))
			continue
		}
		n := int(min(uint64(floodBatch), due-st.Sent))
		for i := range n {
			kind, b := g.next(bufs[i][:hl])
			bufs[i] = b
			pkts[i] = b
			st.ByKind[kind]++
		}
		sent, err := snd.send(pkts[:n])
		if sent < n {
			// Not sent (socket buffer full); ByKind counts them anyway.
			st.Errors += uint64(n - max(sent, 0))
		}
		if sent > 0 {
			st.Sent += uint64(sent)
		}
		if err != nil && sent <= 0 {
			time.Sleep(time.Millisecond)
		}
	}
	st.Elapsed = time.Since(start)
	return st, nil
}

// groupSender multicasts UDP datagrams to the group (sendmmsg).
type groupSender struct {
	c    *net.UDPConn
	pc   *ipv4.PacketConn
	msgs []ipv4.Message
}

func newGroupSender(host *netlab.Host, group netip.AddrPort) (*groupSender, error) {
	c, err := multicastSender(host)
	if err != nil {
		return nil, err
	}
	s := &groupSender{c: c, pc: ipv4.NewPacketConn(c), msgs: make([]ipv4.Message, floodBatch)}
	dst := net.UDPAddrFromAddrPort(group)
	for i := range s.msgs {
		s.msgs[i].Addr = dst
		s.msgs[i].Buffers = make([][]byte, 1)
	}
	return s, nil
}

func (s *groupSender) hdrLen() int  { return 0 }
func (s *groupSender) close() error { return s.c.Close() }

func (s *groupSender) send(pkts [][]byte) (int, error) {
	for i, p := range pkts {
		s.msgs[i].Buffers[0] = p
	}
	return s.pc.WriteBatch(s.msgs[:len(pkts)], 0)
}

// frameSender sends Ethernet frames (IPv4, UDP to the group's address and
// port) to one host's MAC address from an AF_PACKET socket bound to the
// flooder's eth0 (sendmmsg).
type frameSender struct {
	fd   int
	tmpl [frameHdrLen]byte // Ethernet, IPv4 and UDP headers without lengths and checksum
	ipID uint16
	msgs []unix.Mmsghdr
	iovs []unix.Iovec
}

const frameHdrLen = 14 + 20 + 8

func newFrameSender(host, target *netlab.Host, group netip.AddrPort) (*frameSender, error) {
	var dstMAC net.HardwareAddr
	if err := netlab.InNetns(target.NS, func() error {
		ifi, err := net.InterfaceByName(target.Iface)
		if err != nil {
			return err
		}
		dstMAC = ifi.HardwareAddr
		return nil
	}); err != nil {
		return nil, fmt.Errorf("target's MAC address in %s: %w", target.NS, err)
	}
	if len(dstMAC) != 6 {
		return nil, fmt.Errorf("target %s: MAC address %v", target.NS, dstMAC)
	}
	s := &frameSender{fd: -1, msgs: make([]unix.Mmsghdr, floodBatch), iovs: make([]unix.Iovec, floodBatch)}
	err := netlab.InNetns(host.NS, func() error {
		ifi, err := net.InterfaceByName(host.Iface)
		if err != nil {
			return err
		}
		if len(ifi.HardwareAddr) != 6 {
			return fmt.Errorf("%s: MAC address %v", host.Iface, ifi.HardwareAddr)
		}
		// Network safety: the interface must be the lab host's (its
		// address), or nothing is sent.
		if !hasAddr(ifi, host.IP) {
			return fmt.Errorf("%s in %s does not have the lab address %v: not flooding", host.Iface, host.NS, host.IP)
		}
		// Protocol 0: the socket receives nothing, it only sends.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		s.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
			return fmt.Errorf("bind to %s: %w", host.Iface, err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20); err != nil {
			return fmt.Errorf("SO_SNDBUF: %w", err)
		}
		copy(s.tmpl[0:6], dstMAC)
		copy(s.tmpl[6:12], ifi.HardwareAddr)
		return nil
	})
	if err != nil {
		if s.fd >= 0 {
			unix.Close(s.fd)
		}
		return nil, fmt.Errorf("flood frame socket in %s: %w", host.NS, err)
	}
	t := s.tmpl[:]
	t[12], t[13] = 0x08, 0x00 // IPv4
	ip := t[14:34]
	ip[0] = 0x45 // version 4, 20-byte header
	ip[6] = 0x40 // don't fragment
	ip[8] = 1    // TTL 1, like the nodes' heartbeats
	ip[9] = unix.IPPROTO_UDP
	src, dst := host.IP.As4(), group.Addr().As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	udp := t[34:42]
	udp[0], udp[1] = byte(GossipPort>>8), byte(GossipPort&0xff)
	udp[2], udp[3] = byte(group.Port()>>8), byte(group.Port()&0xff)
	// UDP checksum 0: none (allowed in IPv4).
	return s, nil
}

// hasAddr reports whether ifi has the address a.
func hasAddr(ifi *net.Interface, a netip.Addr) bool {
	addrs, err := ifi.Addrs()
	if err != nil {
		return false
	}
	for _, x := range addrs {
		if n, ok := x.(*net.IPNet); ok {
			if b, ok := netip.AddrFromSlice(n.IP); ok && b.Unmap() == a {
				return true
			}
		}
	}
	return false
}

func (s *frameSender) hdrLen() int { return frameHdrLen }

func (s *frameSender) close() error { return unix.Close(s.fd) }

func (s *frameSender) send(pkts [][]byte) (int, error) {
	for i, p := range pkts {
		copy(p, s.tmpl[:])
		ip := p[14:34]
		ipLen := len(p) - 14
		ip[2], ip[3] = byte(ipLen>>8), byte(ipLen)
		s.ipID++
		ip[4], ip[5] = byte(s.ipID>>8), byte(s.ipID)
		var sum uint32
		for j := 0; j < 20; j += 2 {
			sum += uint32(ip[j])<<8 | uint32(ip[j+1])
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		ip[10], ip[11] = byte(^sum>>8), byte(^sum)
		udpLen := ipLen - 20
		p[38], p[39] = byte(udpLen>>8), byte(udpLen)
		s.iovs[i] = unix.Iovec{Base: &p[0]}
		s.iovs[i].SetLen(len(p))
		s.msgs[i] = unix.Mmsghdr{}
		s.msgs[i].Hdr.Iov = &s.iovs[i]
		s.msgs[i].Hdr.SetIovlen(1)
	}
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msgs[0])), uintptr(len(pkts)), 0, 0, 0)
	runtime.KeepAlive(pkts)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// generator makes the flood's packets.
type generator struct {
	i       uint64
	wrong   *gossip.Keyring
	real    string
	hexRand uint64
}

func newGenerator() *generator {
	return &generator{wrong: gossip.NewKeyring("not-the-secret"), real: "n0@198.18.0.10:" + strconv.Itoa(MeshPort), hexRand: 0x9e3779b97f4a7c15}
}

func (g *generator) name(b []byte) []byte {
	// A unique name per packet: f<counter>@10.<a>.<b>.<c>:9100.
	b = append(b, 'f')
	b = strconv.AppendUint(b, g.i, 10)
	b = append(b, "@10."...)
	b = strconv.AppendUint(b, (g.i>>16)&0xff, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, (g.i>>8)&0xff, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, g.i&0xff, 10)
	return append(b, ":9100"...)
}

func (g *generator) randHex(b []byte, n int) []byte {
	const digits = "0123456789ABCDEF"
	for range n {
		g.hexRand ^= g.hexRand << 13
		g.hexRand ^= g.hexRand >> 7
		g.hexRand ^= g.hexRand << 17
		b = append(b, digits[g.hexRand&15])
	}
	return b
}

func (g *generator) next(b []byte) (string, []byte) {
	g.i++
	switch g.i % 4 {
	case 0: // unsigned, unique name
		b = append(b, gossip.Prefix...)
		return "unsigned", g.name(b)
	case 1: // unique name, random HMAC; sometimes a real node's name
		b = append(b, gossip.Prefix...)
		if g.i%64 == 1 {
			b = append(b, g.real...)
		} else {
			b = g.name(b)
		}
		b = append(b, '|')
		return "wrong_hmac", g.randHex(b, 64)
	case 2: // signed with another secret
		var nb [64]byte
		return "other_secret", gossip.AppendHeartbeat(b, string(g.name(nb[:0])), g.wrong)
	}
	switch (g.i / 4) % 8 { // malformed
	case 0:
		b = g.randHex(b, 40) // no prefix
	case 1:
		b = append(b, gossip.Prefix...) // empty node
	case 2:
		b = append(b, gossip.Prefix...)
		b = append(b, "bad name\x00\xff@host:1"...)
	case 3:
		b = append(b, gossip.Prefix...)
		b = g.name(b)
		b = append(b, "|ABC"...) // short HMAC
	case 4:
		b = append(b, gossip.Prefix...)
		b = g.name(b)
		b = append(b, '|')
		b = append(b, strings.Repeat("zz", 32)...) // not hex
	case 5:
		b = append(b, gossip.Prefix...)
		for len(b) < gossip.MaxPacketSize+32 { // too long
			b = g.name(b)
		}
	case 6:
		b = append(b, gossip.Prefix...)
		b = append(b, "@:|"...)
	default:
		b = append(b, "MACULA_GOSSIP"...) // truncated prefix
	}
	return "malformed", b
}

// nsHTTPClient is an HTTP client whose connections are made inside ns.
func nsHTTPClient(ns string, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			Proxy:             nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				var c net.Conn
				err := netlab.InNetns(ns, func() error {
					var d net.Dialer
					var err error
					c, err = d.DialContext(ctx, network, addr)
					return err
				})
				return c, err
			},
		},
	}
}

// healthProbe polls url every period until stop is closed and records the
// answers.
type healthProbe struct {
	mu      sync.Mutex
	ok, bad int
	lastOK  time.Time
	maxGap  time.Duration
	maxLat  time.Duration
	lastErr error
}

func (hp *healthProbe) run(ctx context.Context, c *http.Client, url string, period time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(period)
	defer t.Stop()
	hp.mu.Lock()
	hp.lastOK = time.Now()
	hp.mu.Unlock()
	for {
		start := time.Now()
		err := get(ctx, c, url)
		now := time.Now()
		hp.mu.Lock()
		if err == nil {
			hp.ok++
			hp.maxLat = max(hp.maxLat, now.Sub(start))
			hp.maxGap = max(hp.maxGap, now.Sub(hp.lastOK))
			hp.lastOK = now
		} else {
			hp.bad++
			hp.lastErr = err
		}
		hp.mu.Unlock()
		select {
		case <-stop:
			hp.mu.Lock()
			hp.maxGap = max(hp.maxGap, time.Since(hp.lastOK))
			hp.mu.Unlock()
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func get(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// scrape returns the samples of a Prometheus text page whose metric name
// starts with prefix, keyed by "name{labels}".
func scrape(ctx context.Context, c *http.Client, url, prefix string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// udpRcvbufErrors is the UDP RcvbufErrors counter of the network namespace
// of process pid (/proc/PID/net/snmp).
func udpRcvbufErrors(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/snmp", pid))
	if err != nil {
		return 0, err
	}
	var names []string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				return strconv.ParseUint(f[i], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/net/snmp: no Udp RcvbufErrors", pid)
}

// ---- flood scenario ---------------------------------------------------------

const healthAddr = "127.0.0.1:9180"

func runFlood(ctx context.Context, h *harness) error {
	if err := h.newLab(h.cfg.Hosts+1, false); err != nil {
		return err
	}
	nodes, _, _, err := h.form(ctx, func(i int) []string {
		if i == 0 {
			return []string{"--http", healthAddr}
		}
		return nil
	})
	if err != nil {
		return err
	}
	target, flooder := nodes[0], h.lab.Hosts[h.cfg.Hosts]
	client := nsHTTPClient(target.host.NS, 2*time.Second)
	base := "http://" + healthAddr
	if err := get(ctx, client, base+"/healthz"); err != nil {
		return fmt.Errorf("target /healthz before the flood: %w", err)
	}
	if err := sleep(ctx, h.settle()); err != nil {
		return err
	}
	pid := target.proc().Pid()
	rss0, err1 := procStatus(pid, "VmRSS")
	hwm0, err2 := procStatus(pid, "VmHWM")
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	rej0, _ := scrape(ctx, client, base+"/metrics", "macula_gossip_packets_rejected_total")
	cpu0, _ := target.proc().CPUTime()
	drops0, _ := udpRcvbufErrors(pid)
	// Another host's eth0: the flood is for the target only.
	other := nodes[len(nodes)-1].host
	oc0, oerr0 := other.Counters()
	tc0, terr0 := target.host.Counters()

	stop := make(chan struct{})
	var hp healthProbe
	var wg sync.WaitGroup
	wg.Go(func() { hp.run(ctx, client, base+"/healthz", 200*time.Millisecond, stop) })
	// The target's RSS through the flood, to tell a plateau from growth.
	var rssSeries []uint64
	wg.Go(func() {
		t := time.NewTicker(h.cfg.FloodDuration / 10)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if v, err := procStatus(pid, "VmRSS"); err == nil {
					rssSeries = append(rssSeries, v)
				}
			}
		}
	})
	group := netip.AddrPortFrom(netip.MustParseAddr(GossipGroup), GossipPort)
	h.logf("flood: %d packets/s for %v from %s", h.cfg.FloodRate, h.cfg.FloodDuration, flooder.NS)
	t0 := time.Now()
	fs, ferr := Flood(ctx, flooder, target.host, group, h.cfg.FloodRate, h.cfg.FloodDuration)
	serr := sleep(ctx, h.settle()+time.Second)
	close(stop)
	wg.Wait()
	if err := errors.Join(ferr, serr); err != nil {
		return err
	}
	cpu1, _ := target.proc().CPUTime()
	drops1, _ := udpRcvbufErrors(pid)
	oc1, oerr1 := other.Counters()
	tc1, terr1 := target.host.Counters()
	rss1, err1 := procStatus(pid, "VmRSS")
	hwm1, err2 := procStatus(pid, "VmHWM")
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("target after the flood: %w", err)
	}
	rej1, _ := scrape(ctx, client, base+"/metrics", "macula_gossip_packets_rejected_total")
	finalErr := get(ctx, client, base+"/healthz")

	r := h.res
	r.add("flood_sent", "hostile packets sent", float64(fs.Sent), "count")
	r.add("flood_rate_pps", "hostile packets sent per second (achieved)", round(float64(fs.Sent)/fs.Elapsed.Seconds(), 0), "pkt/s")
	r.add("flood_goal_pps", "hostile packets per second asked for (the goal rate)", float64(h.cfg.FloodRate), "pkt/s")
	r.add("flood_send_errors", "packets the flooder could not send (socket buffer full)", float64(fs.Errors), "count")
	var rejected float64
	for k, v := range rej1 {
		rejected += v - rej0[k]
	}
	r.add("flood_rejected_at_target", "gossip packets the target counted and dropped during the flood", rejected, "count")
	if errors.Join(oerr0, oerr1, terr0, terr1) == nil {
		r.add("flood_rx_target_pkts", "packets the target host's eth0 received during the flood and settle", float64(tc1.RxPackets-tc0.RxPackets), "count")
		if other != target.host {
			r.add("flood_rx_other_pkts", "packets another host's eth0 received during the flood and settle (the flood is not for it)", float64(oc1.RxPackets-oc0.RxPackets), "count")
		}
	}
	r.add("flood_target_kernel_drops", "datagrams the target's kernel dropped for a full socket buffer (UDP RcvbufErrors in its namespace)", float64(drops1-drops0), "count")
	r.add("flood_target_cpu_pct", "target CPU (utime+stime) from the flood's start to the end of the settle after it, % of one core", round(100*(cpu1-cpu0).Seconds()/time.Since(t0).Seconds(), 1), "%")
	r.add("flood_rss_before_B", "target VmRSS before", float64(rss0), "B")
	r.add("flood_rss_after_B", "target VmRSS after", float64(rss1), "B")
	r.add("flood_maxrss_before_B", "target VmHWM (peak RSS) before", float64(hwm0), "B")
	r.add("flood_maxrss_after_B", "target VmHWM (peak RSS) after", float64(hwm1), "B")
	hp.mu.Lock()
	r.add("flood_health_ok", "target /healthz answers during the flood", float64(hp.ok), "count")
	r.add("flood_health_failed", "target /healthz failures during the flood", float64(hp.bad), "count")
	r.addMS("flood_health_max_gap_ms", "longest time without a /healthz answer", hp.maxGap)
	r.addMS("flood_health_max_latency_ms", "slowest /healthz answer", hp.maxLat)
	gap, lastErr := hp.maxGap, hp.lastErr
	hp.mu.Unlock()
	if len(rssSeries) > 0 {
		var mibs []string
		for _, v := range rssSeries {
			mibs = append(mibs, strconv.FormatFloat(float64(v)/(1<<20), 'f', 1, 64))
		}
		r.note("flood: target RSS every %v from the flood's start (MiB): %s", h.cfg.FloodDuration/10, strings.Join(mibs, " "))
	}
	var kinds []string
	for k, v := range fs.ByKind {
		kinds = append(kinds, fmt.Sprintf("%s=%d", k, v))
	}
	slices.Sort(kinds)
	r.note("flood mix: %s", strings.Join(kinds, " "))

	// Invariants.
	changes := 0
	for _, n := range nodes {
		for _, e := range eventsBetween(n.proc(), "", t0, time.Time{}) {
			changes++
			r.violate("flood: %s: membership changed: %s %s %s at %s", n.name, e.Kind, e.Node, e.Reason, stamp(e.At))
		}
	}
	r.add("flood_membership_changes", "membership events on any node during and after the flood", float64(changes), "count")
	const rssBound = 64 << 20
	if hwm1 > hwm0+rssBound {
		r.violate("flood: target peak RSS grew from %d to %d bytes (more than %d)", hwm0, hwm1, rssBound)
	}
	if gap > 3*time.Second {
		r.violate("flood: target did not answer /healthz for %v (last error: %v)", gap.Round(time.Millisecond), lastErr)
	}
	if finalErr != nil {
		r.violate("flood: target /healthz after the flood: %v", finalErr)
	}
	if fs.Sent == 0 {
		r.violate("flood: no packet sent")
	}
	h.logf("flood: sent %d in %v (%d rejected at the target), %d membership changes",
		fs.Sent, fs.Elapsed.Round(time.Millisecond), int(rejected), changes)
	h.checkSequences(nodes)
	return nil
}

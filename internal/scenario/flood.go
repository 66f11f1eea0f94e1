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
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

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

// Flood sends hostile gossip packets from host's eth0 to group (the lab's
// multicast group and gossip port): rate packets per second for at most
// d, and at most rate*d packets. The mix, in turn: unsigned heartbeats of
// unique names, heartbeats of unique names with a random HMAC, heartbeats
// signed with another secret, malformed packets (no prefix, empty node,
// bad characters, a short or non-hex HMAC, too long), and now and then a
// real node's name with a wrong HMAC. Every packet leaves only through the
// host's namespace.
func Flood(ctx context.Context, host *netlab.Host, group netip.AddrPort, rate int, d time.Duration) (FloodStats, error) {
	st := FloodStats{ByKind: map[string]uint64{}}
	if rate <= 0 || d <= 0 {
		return st, nil
	}
	c, err := multicastSender(host)
	if err != nil {
		return st, err
	}
	defer c.Close()
	pc := ipv4.NewPacketConn(c)
	dst := net.UDPAddrFromAddrPort(group)
	const batch = 64
	msgs := make([]ipv4.Message, batch)
	bufs := make([][]byte, batch)
	for i := range msgs {
		bufs[i] = make([]byte, 0, gossip.MaxPacketSize+64)
		msgs[i].Addr = dst
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
			time.Sleep(200 * time.Microsecond)
			continue
		}
		n := int(min(uint64(batch), due-st.Sent))
		for i := range n {
			kind, b := g.next(bufs[i][:0])
			bufs[i] = b
			msgs[i].Buffers = [][]byte{b}
			st.ByKind[kind]++
		}
		sent, err := pc.WriteBatch(msgs[:n], 0)
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

	stop := make(chan struct{})
	var hp healthProbe
	var wg sync.WaitGroup
	wg.Go(func() { hp.run(ctx, client, base+"/healthz", 200*time.Millisecond, stop) })
	group := netip.AddrPortFrom(netip.MustParseAddr(GossipGroup), GossipPort)
	h.logf("flood: %d packets/s for %v from %s", h.cfg.FloodRate, h.cfg.FloodDuration, flooder.NS)
	t0 := time.Now()
	fs, ferr := Flood(ctx, flooder, group, h.cfg.FloodRate, h.cfg.FloodDuration)
	serr := sleep(ctx, h.settle()+time.Second)
	close(stop)
	wg.Wait()
	if err := errors.Join(ferr, serr); err != nil {
		return err
	}
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

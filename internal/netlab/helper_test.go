//go:build linux

package netlab

// Helper modes of the test binary: re-executed inside a namespace with
// NETLAB_HELPER=1 and the mode as first argument. Every mode is bounded in
// time.

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

const helperEnv = "NETLAB_HELPER"

func runHelper(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "helper: no mode")
		return 2
	}
	var err error
	switch args[0] {
	case "ping": // ping ADDR TIMEOUT
		err = helperPing(args[1], args[2])
	case "mcast-recv": // mcast-recv GROUP|BROADCAST PORT TIMEOUT
		err = helperMcastRecv(args[1], args[2], args[3])
	case "mcast-send": // mcast-send GROUP PORT COUNT
		err = helperMcastSend(args[1], args[2], args[3])
	case "udp-flood": // udp-flood ADDR PORT PPS DURATION: 100-byte frames, PPS 0 = as fast as possible
		err = helperUDPFlood(args[1], args[2], args[3], args[4])
	case "udp-sink": // udp-sink PORT DURATION: count datagrams
		err = helperUDPSink(args[1], args[2])
	case "json": // json: lines, then bye on SIGTERM
		err = helperJSON(false)
	case "stubborn": // like json but ignores SIGTERM
		err = helperJSON(true)
	case "env":
		emit(map[string]any{"event": "env", "x": os.Getenv("NETLAB_X"), "path": os.Getenv("PATH")})
	case "sleep": // sleep DURATION, printing ready first
		d, _ := time.ParseDuration(args[1])
		fmt.Println(`{"event":"ready"}`)
		time.Sleep(d)
	default:
		err = fmt.Errorf("unknown mode %q", args[0])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

func emit(m map[string]any) {
	b, _ := json.Marshal(m)
	fmt.Println(string(b))
}

// helperPing sends ICMP echo requests every 100ms until a reply comes or
// the timeout passes.
func helperPing(addr, timeout string) error {
	dst, err := netip.ParseAddr(addr)
	if err != nil {
		return err
	}
	d, err := time.ParseDuration(timeout)
	if err != nil {
		return err
	}
	network, laddr, proto := "ip4:icmp", "0.0.0.0", 1
	var reqType, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, laddr, proto = "ip6:ipv6-icmp", "::", 58
		reqType, replyType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	c, err := icmp.ListenPacket(network, laddr)
	if err != nil {
		return err
	}
	defer c.Close()
	id := os.Getpid() & 0xffff
	deadline := time.Now().Add(d)
	buf := make([]byte, 1500)
	for seq := 1; time.Now().Before(deadline); seq++ {
		msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("netlab")}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			// No route or neighbour yet: keep trying until the deadline.
			fmt.Fprintln(os.Stderr, "send:", err)
		}
		_ = c.SetReadDeadline(minTime(time.Now().Add(100*time.Millisecond), deadline))
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || m.Type != replyType {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id {
				emit(map[string]any{"event": "pong", "from": from.String(), "seq": e.Seq})
				return nil
			}
		}
	}
	return fmt.Errorf("no echo reply from %s within %s", dst, d)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func helperMcastRecv(group, port, timeout string) error {
	ifi, err := net.InterfaceByName("eth0")
	if err != nil {
		return err
	}
	p, _ := strconv.Atoi(port)
	g := net.ParseIP(group)
	network := "udp4"
	if g.To4() == nil {
		network = "udp6"
	}
	var c *net.UDPConn
	if g.IsMulticast() {
		c, err = net.ListenMulticastUDP(network, ifi, &net.UDPAddr{IP: g, Port: p})
	} else { // broadcast
		c, err = net.ListenUDP(network, &net.UDPAddr{Port: p})
	}
	if err != nil {
		return err
	}
	defer c.Close()
	d, _ := time.ParseDuration(timeout)
	_ = c.SetReadDeadline(time.Now().Add(d))
	emit(map[string]any{"event": "ready"})
	buf := make([]byte, 1500)
	n, from, err := c.ReadFromUDP(buf)
	if err != nil {
		return err
	}
	emit(map[string]any{"event": "got", "from": from.String(), "data": string(buf[:n])})
	return nil
}

func helperMcastSend(group, port, count string) error {
	n, _ := strconv.Atoi(count)
	g := net.ParseIP(group)
	addr := net.JoinHostPort(group, port)
	network := "udp4"
	if g.To4() == nil {
		network = "udp6"
		addr = net.JoinHostPort(group+"%eth0", port)
	}
	ua, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		return err
	}
	c, err := net.DialUDP(network, nil, ua)
	if err != nil {
		return err
	}
	defer c.Close()
	for i := range n {
		if _, err := c.Write([]byte("hello " + strconv.Itoa(i))); err != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func helperJSON(stubborn bool) error {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	fmt.Fprintln(os.Stderr, "helper json: starting")
	emit(map[string]any{"event": "ready", "node": "a@198.18.0.10:9100", "incarnation": uint64(1234567890123456789)})
	fmt.Println("not json")
	emit(map[string]any{"event": "nodeup", "node": "b@198.18.0.11:9100"})
	deadline := time.After(30 * time.Second)
	for {
		select {
		case <-sig:
			if stubborn {
				fmt.Fprintln(os.Stderr, "helper json: ignoring SIGTERM")
				continue
			}
			emit(map[string]any{"event": "bye"})
			return nil
		case <-deadline:
			return fmt.Errorf("no signal within 30s")
		}
	}
}

// helperUDPFlood sends UDP datagrams of 58 bytes (100-byte Ethernet
// frames) to addr:port for the duration, at pps per second (0 = as fast as
// it can), and prints how many it sent.
func helperUDPFlood(addr, port, pps, duration string) error {
	rate, _ := strconv.Atoi(pps)
	d, err := time.ParseDuration(duration)
	if err != nil {
		return err
	}
	c, err := net.Dial("udp4", net.JoinHostPort(addr, port))
	if err != nil {
		return err
	}
	defer c.Close()
	payload := make([]byte, 100-14-20-8)
	start := time.Now()
	sent, errs := 0, 0
	for {
		el := time.Since(start)
		if el >= d {
			break
		}
		n := 256
		if rate > 0 {
			n = int(el.Seconds()*float64(rate)) - sent
			if n <= 0 {
				time.Sleep(100 * time.Microsecond)
				continue
			}
		}
		for range n {
			if _, err := c.Write(payload); err != nil {
				errs++ // ENOBUFS and the like: count and go on
			}
			sent++
		}
	}
	emit(map[string]any{"event": "sent", "n": sent, "errors": errs, "secs": time.Since(start).Seconds()})
	return nil
}

// helperUDPSink counts the datagrams that reach port for the duration.
func helperUDPSink(port, duration string) error {
	p, _ := strconv.Atoi(port)
	d, err := time.ParseDuration(duration)
	if err != nil {
		return err
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: p})
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetReadBuffer(4 << 20)
	_ = c.SetReadDeadline(time.Now().Add(d))
	emit(map[string]any{"event": "ready"})
	buf := make([]byte, 2048)
	n := 0
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
		n++
	}
	emit(map[string]any{"event": "got", "n": n})
	return nil
}

package gossip

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

func expListen(t *testing.T, network, addr string, v6 bool) net.PacketConn {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if serr == nil && !v6 {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0)
			}
			if serr == nil && v6 {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0)
			}
			if serr == nil && !v6 {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	c, err := lc.ListenPacket(context.Background(), network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestExpV4(t *testing.T) {
	lo, _ := net.InterfaceByName("lo")
	p := freePortT(t)
	grp := &net.UDPAddr{IP: net.ParseIP("230.1.1.251")}
	var pcs []*ipv4.PacketConn
	for i := 0; i < 3; i++ {
		c := expListen(t, "udp4", net.JoinHostPort("0.0.0.0", itoa(p)), false)
		defer c.Close()
		pc := ipv4.NewPacketConn(c)
		if err := pc.JoinGroup(lo, grp); err != nil {
			t.Fatal(err)
		}
		pc.SetMulticastTTL(1)
		pc.SetMulticastLoopback(true)
		pc.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
		pcs = append(pcs, pc)
	}
	dst := &net.UDPAddr{IP: grp.IP, Port: p}
	n, err := pcs[0].WriteTo([]byte("hello"), &ipv4.ControlMessage{IfIndex: lo.Index}, dst)
	t.Log("write", n, err)
	n, err = pcs[0].WriteTo([]byte("bcast"), &ipv4.ControlMessage{IfIndex: lo.Index}, &net.UDPAddr{IP: net.ParseIP("127.255.255.255"), Port: p})
	t.Log("write bcast", n, err)
	n, err = pcs[0].WriteTo([]byte("ucast"), nil, &net.UDPAddr{IP: net.ParseIP("127.0.0.1"), Port: p})
	t.Log("write ucast", n, err)
	for i, pc := range pcs {
		buf := make([]byte, 100)
		for {
			pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, cm, src, err := pc.ReadFrom(buf)
			if err != nil {
				t.Log(i, "err", err)
				break
			}
			t.Log(i, string(buf[:n]), cm, src)
		}
	}
}

func TestExpV6(t *testing.T) {
	lo, _ := net.InterfaceByName("lo")
	p := freePortT(t)
	grp := &net.UDPAddr{IP: net.ParseIP("ff02::4d41:1")}
	var pcs []*ipv6.PacketConn
	for i := 0; i < 3; i++ {
		c := expListen(t, "udp6", net.JoinHostPort("::", itoa(p)), true)
		defer c.Close()
		pc := ipv6.NewPacketConn(c)
		if err := pc.JoinGroup(lo, grp); err != nil {
			t.Fatal("join", err)
		}
		pc.SetMulticastHopLimit(1)
		pc.SetMulticastLoopback(true)
		pc.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
		pcs = append(pcs, pc)
	}
	dst := &net.UDPAddr{IP: grp.IP, Port: p, Zone: "lo"}
	n, err := pcs[0].WriteTo([]byte("hello6"), &ipv6.ControlMessage{IfIndex: lo.Index}, dst)
	t.Log("write", n, err)
	for i, pc := range pcs {
		buf := make([]byte, 100)
		for {
			pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			n, cm, src, err := pc.ReadFrom(buf)
			if err != nil {
				t.Log(i, "err", err)
				break
			}
			t.Log(i, string(buf[:n]), cm, src)
		}
	}
}

func itoa(p int) string { return net.JoinHostPort("", "")[:0] + string(rune('0'+0))[:0] + fmtInt(p) }
func fmtInt(p int) string {
	s := ""
	for p > 0 {
		s = string(rune('0'+p%10)) + s
		p /= 10
	}
	return s
}
func freePortT(t *testing.T) int {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

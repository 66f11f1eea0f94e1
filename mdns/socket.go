package mdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

var (
	group4 = netip.MustParseAddr("224.0.0.251")
	group6 = netip.MustParseAddr("ff02::fb")
)

// ifaceInfo is one interface we use and its addresses.
type ifaceInfo struct {
	ifi   net.Interface
	addrs addrs
}

// scanInterfaces lists the interfaces to use: the named ones (each must
// exist and be up), or with no names every up, multicast-capable,
// non-loopback interface. missing lists named interfaces not found or down.
func scanInterfaces(names []string) (found []ifaceInfo, missing []string, err error) {
	all, err := net.Interfaces()
	if err != nil {
		return nil, nil, fmt.Errorf("mdns: list interfaces: %w", err)
	}
	use := func(ifi net.Interface) {
		info := ifaceInfo{ifi: ifi}
		as, _ := ifi.Addrs()
		for _, a := range as {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			if ip.Is4In6() || ip.Is4() {
				info.addrs.v4 = append(info.addrs.v4, ip.Unmap())
			} else {
				info.addrs.v6 = append(info.addrs.v6, ip)
			}
		}
		found = append(found, info)
	}
	if len(names) == 0 {
		for _, ifi := range all {
			if ifi.Flags&net.FlagUp != 0 && ifi.Flags&net.FlagMulticast != 0 && ifi.Flags&net.FlagLoopback == 0 {
				use(ifi)
			}
		}
		return found, nil, nil
	}
	for _, name := range names {
		i := slices.IndexFunc(all, func(ifi net.Interface) bool { return ifi.Name == name })
		if i < 0 || all[i].Flags&net.FlagUp == 0 {
			missing = append(missing, name)
			continue
		}
		use(all[i])
	}
	return found, missing, nil
}

// conn holds the IPv4 and IPv6 sockets, bound to the wildcard address on
// the mDNS port. Either may be nil.
type conn struct {
	c4   net.PacketConn
	p4   *ipv4.PacketConn
	c6   net.PacketConn
	p6   *ipv6.PacketConn
	dst4 *net.UDPAddr
	dst6 *net.UDPAddr
}

// openConn binds the sockets. IPv6 failing is not an error while IPv4
// works (err6 says why); both failing is.
func openConn(port int, want6 bool) (c *conn, err6 error, err error) {
	lc := net.ListenConfig{Control: control}
	c = &conn{
		dst4: &net.UDPAddr{IP: group4.AsSlice(), Port: port},
		dst6: &net.UDPAddr{IP: group6.AsSlice(), Port: port},
	}
	p := strconv.Itoa(port)
	c4, err4 := lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:"+p)
	if err4 == nil {
		c.c4 = c4
		c.p4 = ipv4.NewPacketConn(c4)
		err4 = errors.Join(
			c.p4.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true),
			c.p4.SetMulticastTTL(255),
			c.p4.SetMulticastLoopback(true))
		if err4 != nil {
			c4.Close()
			c.c4, c.p4 = nil, nil
		}
	}
	err6 = errors.New("IPv6 disabled")
	if want6 {
		var c6 net.PacketConn
		c6, err6 = lc.ListenPacket(context.Background(), "udp6", "[::]:"+p)
		if err6 == nil {
			c.c6 = c6
			c.p6 = ipv6.NewPacketConn(c6)
			err6 = errors.Join(
				c.p6.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true),
				c.p6.SetMulticastHopLimit(255),
				c.p6.SetMulticastLoopback(true))
			if err6 != nil {
				c6.Close()
				c.c6, c.p6 = nil, nil
			}
		}
	}
	if c.c4 == nil && c.c6 == nil {
		return nil, err6, fmt.Errorf("mdns: listen on port %d: %w", port, errors.Join(err4, err6))
	}
	if err4 != nil {
		err6 = errors.Join(err6, fmt.Errorf("IPv4: %w", err4))
	}
	return c, err6, nil
}

// join joins the mDNS groups on ifi; ok4/ok6 say which family works there.
func (c *conn) join(ifi *net.Interface) (ok4, ok6 bool, err error) {
	var e4, e6 error
	if c.p4 != nil {
		e4 = c.p4.JoinGroup(ifi, &net.UDPAddr{IP: group4.AsSlice()})
		ok4 = e4 == nil
	}
	if c.p6 != nil {
		e6 = c.p6.JoinGroup(ifi, &net.UDPAddr{IP: group6.AsSlice()})
		ok6 = e6 == nil
	}
	return ok4, ok6, errors.Join(e4, e6)
}

func (c *conn) leave(ifi *net.Interface, ok4, ok6 bool) {
	if ok4 && c.p4 != nil {
		_ = c.p4.LeaveGroup(ifi, &net.UDPAddr{IP: group4.AsSlice()})
	}
	if ok6 && c.p6 != nil {
		_ = c.p6.LeaveGroup(ifi, &net.UDPAddr{IP: group6.AsSlice()})
	}
}

// send multicasts b on interface index ifIndex, from src4 for IPv4 when
// valid (so that a packet on "lo" comes from 127.0.0.1, not from the
// address of another interface).
func (c *conn) send(b []byte, ifIndex int, v6 bool, src4 netip.Addr) error {
	if v6 {
		_, err := c.p6.WriteTo(b, &ipv6.ControlMessage{IfIndex: ifIndex, HopLimit: 255}, c.dst6)
		return err
	}
	cm := &ipv4.ControlMessage{IfIndex: ifIndex}
	if src4.Is4() {
		cm.Src = src4.AsSlice()
	}
	_, err := c.p4.WriteTo(b, cm, c.dst4)
	return err
}

func (c *conn) close() {
	if c.c4 != nil {
		c.c4.Close()
	}
	if c.c6 != nil {
		c.c6.Close()
	}
}

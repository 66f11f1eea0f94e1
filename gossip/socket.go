package gossip

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

// Start errors, wrapped with the name of the thing that failed.
var (
	// ErrNoSuchInterface: a name in Config.Interfaces does not exist.
	ErrNoSuchInterface = errors.New("gossip: no such interface")
	// ErrNoInterface: no interface could join the group (or, in broadcast
	// mode, has a broadcast address).
	ErrNoInterface = errors.New("gossip: no interface could join the group")
	// ErrBind: the UDP port cannot be bound; the OS error is wrapped too
	// (errors.Is(err, syscall.EADDRINUSE) works).
	ErrBind = errors.New("gossip: cannot bind")
)

// iface is one interface we joined and send on.
type iface struct {
	name  string
	index int
	src   net.IP     // IPv4 source for our packets (nil: kernel's choice)
	bcast netip.Addr // IPv4 broadcast address (broadcast mode)
}

// packetConn is the IPv4 or IPv6 socket.
type packetConn interface {
	join(ifi *net.Interface) error
	leave(ifi *net.Interface) error
	// read returns the datagram length, its destination address and
	// arrival interface from the control message (zero if absent), and its
	// source.
	read(buf []byte) (n int, dst netip.Addr, ifIndex int, src netip.AddrPort, err error)
	// write sends b to dst out of interface ifi.
	write(b []byte, ifi iface, dst netip.AddrPort) error
	close() error
}

// listen binds the wildcard address on the port and sets TTL, loopback and
// control messages.
func listen(ctx context.Context, s *settings) (packetConn, error) {
	v6 := s.group.Is6()
	network, addr := "udp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(s.port))
	if v6 {
		network, addr = "udp6", net.JoinHostPort("::", strconv.Itoa(s.port))
	}
	lc := net.ListenConfig{Control: control(v6, s.broadcast)}
	c, err := lc.ListenPacket(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("%w udp %s: %w", ErrBind, addr, err)
	}
	var pc packetConn
	if v6 {
		pc, err = newConn6(c, s)
	} else {
		pc, err = newConn4(c, s)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("gossip: socket options on udp %s: %w", addr, err)
	}
	return pc, nil
}

type conn4 struct {
	c     net.PacketConn
	pc    *ipv4.PacketConn
	group net.IP
}

func newConn4(c net.PacketConn, s *settings) (*conn4, error) {
	pc := ipv4.NewPacketConn(c)
	for _, err := range []error{
		pc.SetMulticastTTL(s.ttl),
		pc.SetTTL(s.ttl), // broadcast packets use the unicast TTL
		pc.SetMulticastLoopback(true),
		pc.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true),
	} {
		if err != nil {
			return nil, err
		}
	}
	return &conn4{c: c, pc: pc, group: net.IP(s.group.AsSlice())}, nil
}

func (c *conn4) join(ifi *net.Interface) error {
	return c.pc.JoinGroup(ifi, &net.UDPAddr{IP: c.group})
}

func (c *conn4) leave(ifi *net.Interface) error {
	return c.pc.LeaveGroup(ifi, &net.UDPAddr{IP: c.group})
}

func (c *conn4) read(buf []byte) (int, netip.Addr, int, netip.AddrPort, error) {
	n, cm, src, err := c.pc.ReadFrom(buf)
	if err != nil {
		return 0, netip.Addr{}, 0, netip.AddrPort{}, err
	}
	var dst netip.Addr
	var ifIndex int
	if cm != nil {
		dst, _ = netip.AddrFromSlice(cm.Dst)
		ifIndex = cm.IfIndex
	}
	return n, dst.Unmap(), ifIndex, udpAddrPort(src), nil
}

func (c *conn4) write(b []byte, ifi iface, dst netip.AddrPort) error {
	// The interface is chosen per packet (IP_PKTINFO), so sends on several
	// interfaces need no lock around IP_MULTICAST_IF. Setting the source
	// matters on lo: 127.0.0.1 is host-scoped and the kernel would pick
	// another interface's address.
	cm := &ipv4.ControlMessage{IfIndex: ifi.index, Src: ifi.src}
	_, err := c.pc.WriteTo(b, cm, net.UDPAddrFromAddrPort(dst))
	return err
}

func (c *conn4) close() error { return c.c.Close() }

type conn6 struct {
	c     net.PacketConn
	pc    *ipv6.PacketConn
	group net.IP
}

func newConn6(c net.PacketConn, s *settings) (*conn6, error) {
	pc := ipv6.NewPacketConn(c)
	for _, err := range []error{
		pc.SetMulticastHopLimit(s.ttl),
		pc.SetMulticastLoopback(true),
		pc.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true),
	} {
		if err != nil {
			return nil, err
		}
	}
	return &conn6{c: c, pc: pc, group: net.IP(s.group.AsSlice())}, nil
}

func (c *conn6) join(ifi *net.Interface) error {
	return c.pc.JoinGroup(ifi, &net.UDPAddr{IP: c.group})
}

func (c *conn6) leave(ifi *net.Interface) error {
	return c.pc.LeaveGroup(ifi, &net.UDPAddr{IP: c.group})
}

func (c *conn6) read(buf []byte) (int, netip.Addr, int, netip.AddrPort, error) {
	n, cm, src, err := c.pc.ReadFrom(buf)
	if err != nil {
		return 0, netip.Addr{}, 0, netip.AddrPort{}, err
	}
	var dst netip.Addr
	var ifIndex int
	if cm != nil {
		dst, _ = netip.AddrFromSlice(cm.Dst)
		ifIndex = cm.IfIndex
	}
	return n, dst, ifIndex, udpAddrPort(src), nil
}

func (c *conn6) write(b []byte, ifi iface, dst netip.AddrPort) error {
	cm := &ipv6.ControlMessage{IfIndex: ifi.index}
	ua := &net.UDPAddr{IP: net.IP(dst.Addr().AsSlice()), Port: int(dst.Port())}
	if dst.Addr().IsLinkLocalMulticast() || dst.Addr().IsInterfaceLocalMulticast() {
		ua.Zone = strconv.Itoa(ifi.index)
	}
	_, err := c.pc.WriteTo(b, cm, ua)
	return err
}

func (c *conn6) close() error { return c.c.Close() }

func udpAddrPort(a net.Addr) netip.AddrPort {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// candidate is an interface we want, with the data needed to join it.
type candidate struct {
	ifi  net.Interface
	info iface
}

// scan lists the interfaces we want now. Named interfaces that do not
// exist are returned in missing; named ones that are down are skipped, as
// are (in broadcast mode) interfaces without an IPv4 broadcast address.
func scan(s *settings) (want []candidate, missing []string, err error) {
	if len(s.ifaces) > 0 {
		for _, name := range s.ifaces {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				missing = append(missing, name)
				continue
			}
			if ifi.Flags&net.FlagUp == 0 {
				continue
			}
			if c, ok := makeCandidate(s, ifi); ok {
				want = append(want, c)
			}
		}
		return want, missing, nil
	}
	all, err := net.Interfaces()
	if err != nil {
		return nil, nil, fmt.Errorf("gossip: list interfaces: %w", err)
	}
	need := net.FlagMulticast
	if s.broadcast {
		need = net.FlagBroadcast
	}
	for i := range all {
		ifi := &all[i]
		if ifi.Flags&(net.FlagUp|net.FlagRunning|need) != net.FlagUp|net.FlagRunning|need || ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		c, ok := makeCandidate(s, ifi)
		if !ok || (s.group.Is4() && c.info.src == nil) {
			continue // an IPv4 group needs an IPv4 address to send from
		}
		want = append(want, c)
	}
	return want, nil, nil
}

// makeCandidate fills in the addresses of ifi; ok is false in broadcast
// mode when ifi has no IPv4 broadcast address.
func makeCandidate(s *settings, ifi *net.Interface) (candidate, bool) {
	c := candidate{ifi: *ifi, info: iface{name: ifi.Name, index: ifi.Index}}
	if s.group.Is4() {
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil {
				continue
			}
			ip4 := ipn.IP.To4()
			if c.info.src == nil {
				c.info.src = ip4
			}
			if ones, bits := ipn.Mask.Size(); bits == 32 && ones <= 30 && !c.info.bcast.IsValid() {
				var b [4]byte
				for i := range b {
					b[i] = ip4[i] | ^ipn.Mask[i]
				}
				c.info.bcast = netip.AddrFrom4(b)
				c.info.src = ip4 // send from the address the broadcast belongs to
			}
		}
	}
	if s.broadcast && !c.info.bcast.IsValid() {
		return c, false
	}
	return c, true
}

// ifaceSet is an immutable snapshot of the joined interfaces, sorted by name.
type ifaceSet struct {
	list []iface
}

func (set *ifaceSet) byIndex(index int) (iface, bool) {
	if set == nil {
		return iface{}, false
	}
	i := slices.IndexFunc(set.list, func(f iface) bool { return f.index == index })
	if i < 0 {
		return iface{}, false
	}
	return set.list[i], true
}

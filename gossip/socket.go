package gossip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/macula-io/cluster/internal/mcast"
	"github.com/macula-io/cluster/internal/ratelimit"
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

// packetConn is the gossip socket: an mcast.Conn on the group's port.
type packetConn struct{ c *mcast.Conn }

// listen binds the wildcard address on the port with the TTL, loopback
// and control messages set (see package mcast). Read errors the socket
// survives are logged, at most once per warnPeriod.
func listen(ctx context.Context, s *settings) (packetConn, error) {
	warn := ratelimit.New(warnPeriod, 0)
	c, err := mcast.Listen(ctx, mcast.Config{Group: s.group, Port: s.port, TTL: s.ttl, Broadcast: s.broadcast,
		ReadError: func(err error) {
			if ok, suppressed := warn.Allow("read"); ok {
				s.log.Warn("gossip: read", "err", err, "suppressed", suppressed)
			}
		}})
	if errors.Is(err, mcast.ErrBind) {
		return packetConn{}, fmt.Errorf("%w: %w", ErrBind, err)
	}
	if err != nil {
		return packetConn{}, fmt.Errorf("gossip: %w", err)
	}
	return packetConn{c}, nil
}

func (p packetConn) join(ifi *net.Interface) error  { return p.c.Join(ifi) }
func (p packetConn) leave(ifi *net.Interface) error { return p.c.Leave(ifi) }

// read returns the datagram length, its destination address and arrival
// interface (zero if unknown), and its source. It fails only once the
// socket is closed.
func (p packetConn) read(buf []byte) (n int, dst netip.Addr, ifIndex int, src netip.AddrPort, err error) {
	pk, err := p.c.Read(buf)
	return pk.N, pk.Dst, pk.IfIndex, pk.Src, err
}

// write sends b to dst out of interface f, from f's IPv4 source address.
func (p packetConn) write(b []byte, f iface, dst netip.AddrPort) error {
	src, _ := netip.AddrFromSlice(f.src)
	return p.c.WriteTo(b, f.index, src, dst)
}

func (p packetConn) close() error { return p.c.Close() }

// candidate is an interface we want, with the data needed to join it.
type candidate struct {
	ifi  net.Interface
	info iface
}

// scan lists the interfaces we want now (see mcast.Want). Named interfaces
// that do not exist are returned in missing; named ones that are down are
// skipped, as are (in broadcast mode) interfaces without an IPv4 broadcast
// address.
func scan(s *settings) (want []candidate, missing []string, err error) {
	found, missing, err := mcast.Interfaces(mcast.Want{Names: s.ifaces, Broadcast: s.broadcast, IPv4: s.group.Is4()})
	if err != nil {
		return nil, nil, fmt.Errorf("gossip: %w", err)
	}
	for _, ifi := range found {
		c := candidate{ifi: ifi.Interface, info: iface{name: ifi.Name, index: ifi.Index}}
		if s.group.Is4() {
			if src := ifi.Source4(); src.IsValid() {
				c.info.src = net.IP(src.AsSlice())
			}
			c.info.bcast, _ = ifi.Broadcast4()
		}
		if s.broadcast && !c.info.bcast.IsValid() {
			continue
		}
		want = append(want, c)
	}
	return want, missing, nil
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

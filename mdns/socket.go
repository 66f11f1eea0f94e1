package mdns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/macula-io/cluster/internal/mcast"
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
// exist and be up), or with no names every up, running, multicast-capable,
// non-loopback interface (see mcast.Want). missing lists named interfaces
// not found or down.
func scanInterfaces(names []string) (found []ifaceInfo, missing []string, err error) {
	use, _, err := mcast.Interfaces(mcast.Want{Names: names})
	if err != nil {
		return nil, nil, fmt.Errorf("mdns: %w", err)
	}
	for _, ifi := range use {
		found = append(found, ifaceInfo{ifi: ifi.Interface, addrs: addrs{v4: ifi.V4(), v6: ifi.V6()}})
	}
	for _, name := range names {
		if !slices.ContainsFunc(found, func(f ifaceInfo) bool { return f.ifi.Name == name }) {
			missing = append(missing, name)
		}
	}
	return found, missing, nil
}

// conn holds the IPv4 and IPv6 sockets, bound to the wildcard address on
// the mDNS port. Either may be nil.
type conn struct {
	c4, c6 *mcast.Conn
}

// openConn binds the sockets, with TTL/hop limit 255 (RFC 6762 §11). IPv6
// failing is not an error while IPv4 works (err6 says why); both failing
// is. readErr is told of read errors the sockets survive.
func openConn(port int, want6 bool, readErr func(error)) (c *conn, err6 error, err error) {
	c = &conn{}
	cfg := mcast.Config{Group: group4, Port: port, TTL: 255, ReadError: readErr}
	c4, err4 := mcast.Listen(context.Background(), cfg)
	if err4 == nil {
		c.c4 = c4
	}
	err6 = errors.New("IPv6 disabled")
	if want6 {
		cfg.Group = group6
		var c6 *mcast.Conn
		if c6, err6 = mcast.Listen(context.Background(), cfg); err6 == nil {
			c.c6 = c6
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
	if c.c4 != nil {
		e4 = c.c4.Join(ifi)
		ok4 = e4 == nil
	}
	if c.c6 != nil {
		e6 = c.c6.Join(ifi)
		ok6 = e6 == nil
	}
	return ok4, ok6, errors.Join(e4, e6)
}

func (c *conn) leave(ifi *net.Interface, ok4, ok6 bool) {
	if ok4 && c.c4 != nil {
		_ = c.c4.Leave(ifi)
	}
	if ok6 && c.c6 != nil {
		_ = c.c6.Leave(ifi)
	}
}

// send multicasts b on interface index ifIndex, from src4 for IPv4 when
// valid (so that a packet on "lo" comes from 127.0.0.1, not from the
// address of another interface).
func (c *conn) send(b []byte, ifIndex int, v6 bool, src4 netip.Addr) error {
	if v6 {
		return c.c6.WriteTo(b, ifIndex, netip.Addr{}, c.c6.Group())
	}
	return c.c4.WriteTo(b, ifIndex, src4, c.c4.Group())
}

func (c *conn) close() {
	if c.c4 != nil {
		c.c4.Close()
	}
	if c.c6 != nil {
		c.c6.Close()
	}
}

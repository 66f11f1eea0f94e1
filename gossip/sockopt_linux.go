package gossip

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// control sets the socket options that must be in place before bind:
// SO_REUSEADDR so several nodes on one host share the port (on Linux every
// socket bound to the port gets its own copy of each multicast or broadcast
// datagram; SO_REUSEPORT is not used, it would load-balance unicast and is
// not needed for fan-out), IP(V6)_MULTICAST_ALL off so the socket only sees
// the groups it joined itself, and SO_BROADCAST in broadcast mode.
func control(v6, broadcast bool) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			s := int(fd)
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			if v6 {
				// IPV6_MULTICAST_ALL exists since Linux 4.20; tolerate older kernels.
				if e := unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0); e != nil && !errors.Is(e, unix.ENOPROTOOPT) {
					serr = e
					return
				}
			} else if serr = unix.SetsockoptInt(s, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0); serr != nil {
				return
			}
			if broadcast {
				serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

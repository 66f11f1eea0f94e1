//go:build unix && !linux

package gossip

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// control sets SO_REUSEADDR and SO_REUSEPORT (BSD-derived systems need
// both for several sockets on one multicast port) and SO_BROADCAST in
// broadcast mode. Linux is the supported platform; see sockopt_linux.go.
func control(_, broadcast bool) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			s := int(fd)
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				return
			}
			if serr = unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
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

//go:build unix && !linux

package mdns

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// control sets SO_REUSEADDR and SO_REUSEPORT, which BSD-derived systems
// need for several sockets on the mDNS port.
func control(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

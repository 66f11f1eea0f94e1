//go:build unix

package mcast

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// control returns the ListenConfig.Control that sets the options needed
// before bind: SO_REUSEADDR, the platform's options (platformOptions) and,
// for broadcast, SO_BROADCAST.
func control(v6, broadcast bool) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			s := int(fd)
			if serr = setInt(s, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"); serr != nil {
				return
			}
			if serr = platformOptions(s, v6); serr != nil {
				return
			}
			if broadcast {
				serr = setInt(s, unix.SOL_SOCKET, unix.SO_BROADCAST, 1, "SO_BROADCAST")
			}
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// setInt sets an integer socket option; the error names the option and
// wraps the errno (errors.Is(err, unix.ENOPROTOOPT) works).
func setInt(fd, level, opt, value int, name string) error {
	if err := unix.SetsockoptInt(fd, level, opt, value); err != nil {
		return os.NewSyscallError("setsockopt "+name, err)
	}
	return nil
}

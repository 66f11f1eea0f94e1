//go:build unix && !linux

package mcast

import "golang.org/x/sys/unix"

// platformOptions sets SO_REUSEPORT: BSD-derived systems (macOS included)
// need it besides SO_REUSEADDR for several sockets on one multicast port.
// They have no IP_MULTICAST_ALL: a socket there receives only the groups
// it joined.
func platformOptions(fd int, _ bool) error {
	return setInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1, "SO_REUSEPORT")
}

// filterSupported: SetFilter attaches socket filters on Linux only.
const filterSupported = false

func detachFilter(int) error { return nil }

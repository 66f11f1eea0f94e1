package mcast

import (
	"errors"

	"golang.org/x/sys/unix"
)

// platformOptions turns IP_MULTICAST_ALL (IPv4) or IPV6_MULTICAST_ALL off,
// so the socket receives only the groups it joined itself. The IPv6 option
// exists since Linux 4.20: ENOPROTOOPT from an older kernel is tolerated
// (its IPv6 sockets get only their own groups anyway); any other error,
// and any error of the IPv4 option (Linux 2.6.31), fails the Listen.
// SO_REUSEPORT is not set: on Linux SO_REUSEADDR alone gives each socket
// its own copy of a multicast datagram, and SO_REUSEPORT would
// load-balance unicast between the nodes.
func platformOptions(fd int, v6 bool) error {
	if v6 {
		err := setInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0, "IPV6_MULTICAST_ALL")
		if errors.Is(err, unix.ENOPROTOOPT) {
			return nil
		}
		return err
	}
	return setInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0, "IP_MULTICAST_ALL")
}

// filterSupported: SetFilter attaches socket filters here.
const filterSupported = true

// detachFilter removes the socket's filter, if any. Replacing a filter in
// place charges the old and the new one together against the socket's
// option memory (net.core.optmem_max) until the swap; removed first, the
// new one needs only its own size. ENOENT (no filter) is not an error.
func detachFilter(fd int) error {
	err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

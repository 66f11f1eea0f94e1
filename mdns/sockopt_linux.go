package mdns

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// control sets SO_REUSEADDR (other mDNS responders, avahi among them, hold
// the port too) and turns IP_MULTICAST_ALL off so that the socket receives
// only the groups it joined itself.
func control(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if serr != nil {
			return
		}
		if network == "udp6" {
			// Linux 4.20 and later; older kernels deliver only joined groups
			// to IPv6 sockets anyway.
			_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, 0)
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0)
	})
	if err != nil {
		return err
	}
	return serr
}

package mcast

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// subscribe opens a non-blocking NETLINK_ROUTE socket subscribed to link
// and IPv4/IPv6 address events (RTMGRP_LINK, RTMGRP_IPV4_IFADDR,
// RTMGRP_IPV6_IFADDR) of the calling thread's network namespace, as an
// os.File so that reads go through the runtime poller and Close ends a
// blocked read.
func subscribe() (*os.File, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, os.NewSyscallError("socket AF_NETLINK", err)
	}
	sa := &unix.SockaddrNetlink{
		Family: unix.AF_NETLINK,
		Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR,
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind NETLINK_ROUTE", err)
	}
	return os.NewFile(uintptr(fd), "rtnetlink"), nil
}

// readEvents sends a kick for every message on the socket; it does not
// parse them: the watcher compares the interfaces, which filters out
// events that change nothing it reports. ENOBUFS (the kernel dropped
// events for want of buffer) is a kick too. It returns when f is closed,
// or on any other error, leaving the watcher to its safety poll.
func readEvents(f *os.File, kick chan<- struct{}) {
	buf := make([]byte, 16<<10) // longer messages are truncated: only their arrival counts
	for {
		_, err := f.Read(buf)
		if err != nil && !errors.Is(err, unix.ENOBUFS) {
			return
		}
		select {
		case kick <- struct{}{}:
		default:
		}
	}
}

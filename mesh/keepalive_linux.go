package mesh

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// setUserTimeout sets TCP_USER_TIMEOUT: data written to the connection
// and not acknowledged by the peer for d fails it (ETIMEDOUT). This is how
// a stalled link with traffic is noticed without per-link ticks.
func setUserTimeout(c net.Conn, d time.Duration) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
}

// abortedLocally reports whether the kernel ended c by itself: after
// TCP_USER_TIMEOUT aborts a connection the error may be reported to the
// writer and the reader then sees a plain EOF, which must not pass for the
// peer's FIN. Such a connection is CLOSE (not CLOSE_WAIT, as after a FIN)
// with data still unacknowledged or in retransmission; a reset by the peer
// (also CLOSE) normally has neither.
func abortedLocally(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	aborted := false
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			aborted = info.State == 7 && (info.Unacked > 0 || info.Retransmits > 0 || info.Backoff > 0) // TCP_CLOSE
		}
	})
	return aborted
}

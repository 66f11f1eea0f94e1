//go:build !linux

package mesh

import (
	"net"
	"time"
)

// setUserTimeout is Linux-only (TCP_USER_TIMEOUT); elsewhere a stalled
// link with traffic is noticed by the write deadline and the keepalive.
func setUserTimeout(net.Conn, time.Duration) {}

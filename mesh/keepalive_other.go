//go:build !linux

package mesh

import (
	"net"
	"time"
)

// setUserTimeout is Linux-only (TCP_USER_TIMEOUT); elsewhere a stalled
// link with traffic is noticed by the write deadline and the keepalive.
func setUserTimeout(net.Conn, time.Duration) {}

// abortedLocally: see keepalive_linux.go; without TCP_USER_TIMEOUT an EOF
// is the peer's FIN.
func abortedLocally(net.Conn) bool { return false }

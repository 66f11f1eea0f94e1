//go:build !unix

package mdns

import "syscall"

// control is a no-op where the socket options are not available.
func control(_, _ string, _ syscall.RawConn) error { return nil }

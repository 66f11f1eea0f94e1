//go:build !unix

package gossip

import "syscall"

// control is a no-op on platforms other than Unix: several nodes on one
// host cannot share the port there. Linux is the supported platform.
func control(_, _ bool) func(network, address string, c syscall.RawConn) error {
	return nil
}

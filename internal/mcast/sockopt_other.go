//go:build !unix

package mcast

import "syscall"

// control sets nothing where golang.org/x/sys/unix is not available
// (Windows): several nodes on one host cannot share the port there.
func control(_, _ bool) func(network, address string, c syscall.RawConn) error {
	return nil
}

// filterSupported: SetFilter attaches socket filters on Linux only.
const filterSupported = false

func detachFilter(int) error { return nil }

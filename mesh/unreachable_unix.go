//go:build unix

package mesh

import (
	"errors"
	"syscall"
)

// unreachable reports whether err says the network cannot reach the peer.
func unreachable(err error) bool {
	return errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) ||
		errors.Is(err, syscall.EHOSTDOWN) || errors.Is(err, syscall.ETIMEDOUT)
}

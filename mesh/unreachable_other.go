//go:build !unix

package mesh

import (
	"errors"
	"syscall"
)

// unreachable reports whether err says the network cannot reach the peer.
func unreachable(err error) bool {
	return errors.Is(err, syscall.ETIMEDOUT)
}

//go:build unix

package main

import "syscall"

// openFileLimit returns the soft and hard RLIMIT_NOFILE. The Go runtime
// already raised the soft limit to the hard one at start (Go 1.19+, on
// every Unix; children started with os/exec get the original back), so
// the command does not raise it again: it reads it to size the HTTP
// connection cap and logs it.
func openFileLimit() (soft, hard uint64) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, 0
	}
	return uint64(r.Cur), uint64(r.Max)
}

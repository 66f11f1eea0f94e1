//go:build !unix

package main

// openFileLimit: no RLIMIT_NOFILE here (Windows has no per-process
// descriptor limit of that kind); 0 means unknown.
func openFileLimit() (soft, hard uint64) { return 0, 0 }

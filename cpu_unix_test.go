//go:build unix

package cluster_test

import (
	"time"

	"golang.org/x/sys/unix"
)

// processCPU is the user+system CPU time of this process so far.
func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

//go:build !unix

package cluster_test

import "time"

// processCPU is not measured here: the flood test logs 0.
func processCPU() time.Duration { return 0 }

//go:build !linux

package main

import (
	"context"
	"fmt"
	"io"
	"runtime"
)

// cmdBench without Linux: the benchmark runs its hosts in network
// namespaces, which only Linux has. The rest of the command works here.
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", stdout)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: macula bench [flags]\n\nbench needs Linux network namespaces (ip netns, root); it is not available on %s.\n", runtime.GOOS)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	return usageError{fmt.Errorf("bench needs Linux network namespaces (ip netns, root); not available on %s", runtime.GOOS)}
}

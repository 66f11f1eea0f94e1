//go:build unix

package main

import (
	"context"
	"os/exec"
	"syscall"
)

// shellCommand runs s with /bin/sh -c in its own process group, so that a
// timeout kills the commands it started too.
func shellCommand(ctx context.Context, s string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", s)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

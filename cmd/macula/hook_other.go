//go:build !unix

package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
)

// shellCommand runs s with cmd /C on Windows (%ComSpec%); a timeout kills
// cmd.exe (not the processes it started).
func shellCommand(ctx context.Context, s string) *exec.Cmd {
	shell := os.Getenv("ComSpec")
	if shell == "" {
		shell = filepath.Join(os.Getenv("SystemRoot"), "System32", "cmd.exe")
	}
	return exec.CommandContext(ctx, shell, "/C", s)
}

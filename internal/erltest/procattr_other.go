//go:build unix && !linux

package erltest

import "syscall"

// procAttr puts a process in a group of its own (Kill takes its children too); without
// Linux's Pdeathsig, only the test's cleanup kills it.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

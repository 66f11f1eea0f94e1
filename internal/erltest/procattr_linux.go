package erltest

import "syscall"

// procAttr puts a process in a group of its own (Kill takes its children too) that gets
// SIGKILL if the test binary dies.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

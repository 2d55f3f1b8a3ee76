package chaos

import "syscall"

// procAttr makes a refit process die with the harness.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }

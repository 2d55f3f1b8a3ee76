//go:build !linux

package chaos

import "syscall"

// procAttr: there is no parent-death signal outside Linux; the harness kills
// its refit processes when it ends normally.
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }

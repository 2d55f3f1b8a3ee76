//go:build unix && !linux

package pgtest

import "syscall"

// sysProcAttr returns the process attributes of initdb and postgres: run as
// cred (nil: as ourselves), in their own process group. There is no
// parent-death signal outside Linux, so deathSig is unused: a killed test
// binary may leave its server running there.
func sysProcAttr(cred *syscall.Credential, deathSig syscall.Signal) *syscall.SysProcAttr {
	_ = deathSig
	return &syscall.SysProcAttr{
		Credential: cred,
		Setpgid:    true,
	}
}

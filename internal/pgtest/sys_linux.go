package pgtest

import "syscall"

// sysProcAttr returns the process attributes of initdb and postgres: run as
// cred (nil: as ourselves), in their own process group, and receive
// deathSig when the thread that started them dies.
func sysProcAttr(cred *syscall.Credential, deathSig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Credential: cred,
		Setpgid:    true,
		Pdeathsig:  deathSig,
	}
}

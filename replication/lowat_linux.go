package replication

import (
	"net"
	"syscall"
)

// setRcvLowat sets SO_RCVLOWAT on a TCP or Unix socket; other connections
// (TLS) are left as they are. Best effort: the stream works without it.
func setRcvLowat(c net.Conn, n int) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT, n)
	})
}

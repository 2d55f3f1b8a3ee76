package replication

import (
	"crypto/tls"
	"net"
	"syscall"
)

// setRcvLowat sets SO_RCVLOWAT on a TCP or Unix socket, below TLS if the
// connection is encrypted (the low-water mark counts ciphertext bytes, which
// is as good). Best effort: the stream works without it.
func setRcvLowat(c net.Conn, n int) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
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

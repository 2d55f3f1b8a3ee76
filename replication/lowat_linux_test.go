package replication

import (
	"crypto/tls"
	"net"
	"syscall"
	"testing"
)

// TestSetRcvLowat: the low-water mark lands on the TCP socket, also when
// the connection is wrapped in TLS.
func TestSetRcvLowat(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	get := func(c net.Conn) int {
		raw, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v int
		var gerr error
		if err := raw.Control(func(fd uintptr) {
			v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVLOWAT)
		}); err != nil || gerr != nil {
			t.Fatal(err, gerr)
		}
		return v
	}
	for _, wrap := range []bool{false, true} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		var conn net.Conn = c
		if wrap {
			conn = tls.Client(c, &tls.Config{InsecureSkipVerify: true}) // never handshakes here
		}
		setRcvLowat(conn, 32<<10)
		if got := get(c); got != 32<<10 {
			t.Errorf("tls=%v: SO_RCVLOWAT %d, want %d", wrap, got, 32<<10)
		}
		setRcvLowat(conn, 1)
		if got := get(c); got != 1 {
			t.Errorf("tls=%v: SO_RCVLOWAT %d after reset, want 1", wrap, got)
		}
		c.Close()
	}
}

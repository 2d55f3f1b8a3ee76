//go:build !linux

package replication

import "net"

// setRcvLowat is a no-op outside Linux: the stream is then read message by
// message, which costs CPU but nothing else.
func setRcvLowat(net.Conn, int) {}

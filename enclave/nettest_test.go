package enclave

import (
	"net"
	"testing"

	"golang.org/x/net/nettest"
)

// TestRetryConnIsAConn: the EINTR/zero-read wrapper keeps the net.Conn
// contract (deadlines, concurrent use, close) over pipes and TCP.
func TestRetryConnIsAConn(t *testing.T) {
	t.Run("pipe", func(t *testing.T) {
		nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
			a, b := net.Pipe()
			return retryConn{a}, retryConn{b}, func() { a.Close(); b.Close() }, nil
		})
	})
	t.Run("tcp", func(t *testing.T) {
		nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, nil, nil, err
			}
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				c, _ := ln.Accept()
				accepted <- c
			}()
			a, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				return nil, nil, nil, err
			}
			b := <-accepted
			if b == nil {
				a.Close()
				return nil, nil, nil, net.ErrClosed
			}
			return retryConn{a}, retryConn{b}, func() { a.Close(); b.Close() }, nil
		})
	})
}

package testutil

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// DialTCP connects to addr (host:port) over TCP and closes the connection
// when the test ends.
func DialTCP(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// ChanListener is an in-memory net.Listener for tests in a synctest
// bubble: Accept returns the connections sent on C. Make it with
// NewChanListener.
type ChanListener struct {
	C    chan net.Conn
	done chan struct{}
	once sync.Once
}

// NewChanListener returns a ChanListener with an unbuffered C.
func NewChanListener() *ChanListener {
	return &ChanListener{C: make(chan net.Conn), done: make(chan struct{})}
}

// Accept returns the next connection sent on C, or net.ErrClosed once the
// listener is closed.
func (l *ChanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.C:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close makes Accept return net.ErrClosed.
func (l *ChanListener) Close() error { l.once.Do(func() { close(l.done) }); return nil }

// Addr is 127.0.0.1:443.
func (l *ChanListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443} }

// Dial sends the server end of a new pipe, seen as coming from remote, to
// Accept and returns the client end.
func (l *ChanListener) Dial(remote net.Addr) net.Conn {
	a, b := net.Pipe()
	l.C <- AddrConn{Conn: b, Remote: remote}
	return a
}

// AddrConn is a connection (typically a pipe end) with a chosen remote
// address.
type AddrConn struct {
	net.Conn
	Remote net.Addr
}

// RemoteAddr returns c.Remote.
func (c AddrConn) RemoteAddr() net.Addr { return c.Remote }

// ClosedNow reports whether c's peer has closed it: a read that does not
// block finds the end of the stream or a closed pipe.
func ClosedNow(c net.Conn) bool {
	c.SetReadDeadline(time.Now())
	_, err := c.Read(make([]byte, 1))
	c.SetReadDeadline(time.Time{})
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe)
}

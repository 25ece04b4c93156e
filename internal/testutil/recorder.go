package testutil

import (
	"bytes"
	"context"
	"net"
	"sync"
	"time"

	"github.com/enclavekit/enclavekit/transport"
)

// Recorder forwards TCP connections to a destination and keeps a copy
// of every byte that crossed, both ways: it stands for a route of the
// parent, so a test can look for secrets in what crossed it. It relays
// with transport.Relay, as the parent's egress proxy does (half-close
// included).
type Recorder struct {
	ln net.Listener
	to string
	wg sync.WaitGroup

	mu     sync.Mutex
	seen   bytes.Buffer
	conns  map[net.Conn]struct{}
	closed bool
}

// NewRecorder listens on a loopback port and forwards to the address to.
func NewRecorder(to string) (*Recorder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Recorder{ln: ln, to: to, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr is the host:port to dial.
func (r *Recorder) Addr() string { return r.ln.Addr().String() }

func (r *Recorder) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		d, err := net.DialTimeout("tcp", r.to, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		r.mu.Lock()
		if r.closed { // Close ran while this one was being dialed
			r.mu.Unlock()
			c.Close()
			d.Close()
			return
		}
		r.conns[c], r.conns[d] = struct{}{}, struct{}{}
		r.mu.Unlock()
		r.wg.Go(func() {
			// What the client sends is seen by Observe; what comes back,
			// by the reads of the destination's side.
			relay := transport.Relay{Observe: func(p []byte, _ time.Time) { r.record(p) }}
			relay.Run(context.Background(), c, recordingConn{d.(*net.TCPConn), r})
			c.Close()
			d.Close()
			r.mu.Lock()
			delete(r.conns, c)
			delete(r.conns, d)
			r.mu.Unlock()
		})
	}
}

func (r *Recorder) record(p []byte) {
	r.mu.Lock()
	r.seen.Write(p)
	r.mu.Unlock()
}

// recordingConn records what is read from its TCP connection. It offers
// only net.Conn and CloseWrite (for the half-close), nothing that would
// read around Read.
type recordingConn struct {
	tcp *net.TCPConn
	r   *Recorder
}

func (c recordingConn) Read(p []byte) (int, error) {
	n, err := c.tcp.Read(p)
	c.r.record(p[:n])
	return n, err
}

func (c recordingConn) Write(p []byte) (int, error)        { return c.tcp.Write(p) }
func (c recordingConn) CloseWrite() error                  { return c.tcp.CloseWrite() }
func (c recordingConn) Close() error                       { return c.tcp.Close() }
func (c recordingConn) LocalAddr() net.Addr                { return c.tcp.LocalAddr() }
func (c recordingConn) RemoteAddr() net.Addr               { return c.tcp.RemoteAddr() }
func (c recordingConn) SetDeadline(t time.Time) error      { return c.tcp.SetDeadline(t) }
func (c recordingConn) SetReadDeadline(t time.Time) error  { return c.tcp.SetReadDeadline(t) }
func (c recordingConn) SetWriteDeadline(t time.Time) error { return c.tcp.SetWriteDeadline(t) }

// Bytes returns a copy of everything that crossed so far.
func (r *Recorder) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.seen.Bytes())
}

// Close stops accepting, closes every connection and waits for the copies.
func (r *Recorder) Close() {
	r.ln.Close()
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

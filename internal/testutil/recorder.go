package testutil

import (
	"bytes"
	"net"
	"sync"
	"time"
)

// Recorder forwards TCP connections to a destination and keeps a copy
// of every byte that crossed, both ways: it stands for a route of the
// parent, so a test can look for secrets in what crossed it.
type Recorder struct {
	ln net.Listener
	to string
	wg sync.WaitGroup

	mu    sync.Mutex
	seen  bytes.Buffer
	conns map[net.Conn]struct{}
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
		r.conns[c], r.conns[d] = struct{}{}, struct{}{}
		r.mu.Unlock()
		r.wg.Add(2)
		go r.copy(d, c)
		go r.copy(c, d)
	}
}

func (r *Recorder) copy(dst, src net.Conn) {
	defer r.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			r.seen.Write(buf[:n])
			r.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			dst.Close()
			src.Close()
			return
		}
	}
}

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
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

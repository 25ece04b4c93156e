package parent

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// fakeServer speaks protocol v1 on loopback TCP with a scripted reply
// function, so the client can be tested against misbehaving enclaves.
type fakeServer struct {
	t     testing.TB
	ln    net.Listener
	reply func(fc *fakeConn, env protocol.Envelope)
	wg    sync.WaitGroup

	mu    sync.Mutex
	conns map[*fakeConn]struct{}
}

type fakeConn struct {
	net.Conn
	wmu sync.Mutex
}

// send writes one envelope as a frame.
func (fc *fakeConn) send(env protocol.Envelope) error {
	b, err := protocol.MarshalEnvelope(&env)
	if err != nil {
		return err
	}
	return fc.sendRaw(b)
}

func (fc *fakeConn) sendRaw(payload []byte) error {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	return protocol.WriteFrame(fc.Conn, payload, protocol.MaxFrameSizeLimit)
}

// echoReply answers every request with its own body.
func echoReply(fc *fakeConn, env protocol.Envelope) {
	fc.send(protocol.Envelope{ID: env.ID, Body: env.Body})
}

func newFakeServer(t testing.TB, reply func(fc *fakeConn, env protocol.Envelope)) *fakeServer {
	t.Helper()
	ln, err := transport.Listen(context.Background(), "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, ln: ln, reply: reply, conns: map[*fakeConn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.Close)
	return s
}

func (s *fakeServer) Addr() string { return transport.AddrOf(s.ln.Addr()) }

func (s *fakeServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		fc := &fakeConn{Conn: c}
		s.mu.Lock()
		s.conns[fc] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, fc)
				s.mu.Unlock()
				c.Close()
			}()
			serveFake(fc, s.reply)
		}()
	}
}

// serveFake reads requests from fc and runs reply on each in its own
// goroutine until fc fails; then it waits for the replies. Tests on
// net.Pipe conns (synctest) call it through the serve* helpers below.
func serveFake(fc *fakeConn, reply func(fc *fakeConn, env protocol.Envelope)) {
	var hw sync.WaitGroup
	defer hw.Wait()
	readRequests(fc.Conn, func(env protocol.Envelope) { hw.Go(func() { reply(fc, env) }) })
}

// readRequests calls each with every envelope read from c, in order, until
// a frame or an envelope cannot be read.
func readRequests(c net.Conn, each func(protocol.Envelope)) {
	fr, _ := protocol.NewFrameReader(c, 0)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		env, err := protocol.UnmarshalEnvelope(f)
		if err != nil {
			return
		}
		each(env)
	}
}

// serveEcho is a minimal protocol v1 echo server on c.
func serveEcho(c net.Conn) { serveFake(&fakeConn{Conn: c}, echoReply) }

// serveHealthOnly answers enclavekit.health and nothing else: an enclave
// that is alive but whose handlers never finish.
func serveHealthOnly(c net.Conn) {
	serveFake(&fakeConn{Conn: c}, func(fc *fakeConn, env protocol.Envelope) {
		if env.Method == protocol.MethodHealth {
			fc.send(protocol.Envelope{ID: env.ID})
		}
	})
}

// serveSlow answers enclavekit.health at once and every other method after
// delay: a slow handler, not a hung enclave.
func serveSlow(c net.Conn, delay time.Duration) {
	serveFake(&fakeConn{Conn: c}, func(fc *fakeConn, env protocol.Envelope) {
		if env.Method != protocol.MethodHealth {
			time.Sleep(delay)
		}
		echoReply(fc, env)
	})
}

// DropConns closes every open server-side connection (an enclave crash).
func (s *fakeServer) DropConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for fc := range s.conns {
		fc.Close()
	}
}

func (s *fakeServer) Close() {
	s.ln.Close()
	s.DropConns()
	s.wg.Wait()
}

// readLoop runs the background reader on a connection that no one reads
// yet, as a Client does once the role is free.
func (cc *clientConn) readLoop() {
	if cc.claimForBackground() {
		cc.background()
	}
}

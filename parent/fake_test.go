package parent

import (
	"context"
	"net"
	"sync"
	"testing"

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
			fr, _ := protocol.NewFrameReader(c, 0)
			var hw sync.WaitGroup
			defer hw.Wait()
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					return
				}
				env, err := protocol.UnmarshalEnvelope(f)
				if err != nil {
					return
				}
				hw.Add(1)
				go func() {
					defer hw.Done()
					s.reply(fc, env)
				}()
			}
		}()
	}
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

package enclave

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
)

func frame(payload []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(payload))), payload...)
}

func request(id uint64, method string, body []byte) []byte {
	b, err := protocol.MarshalEnvelope(&protocol.Envelope{ID: id, Method: method, Body: body})
	if err != nil {
		panic(err)
	}
	return b
}

// FuzzConn feeds arbitrary bytes to one connection's loop: it must never
// panic, and every goroutine of the connection must end once the peer
// goes away.
func FuzzConn(f *testing.F) {
	cfg := testConfig()
	cfg.MaxFrameSize = 4096
	// A closed net.Pipe stays reachable from its deadline timers until they
	// fire. With testConfig's 10s timeouts, fuzzing at ~20k conns/s kept
	// ~200k dead pipes alive (~850 MB per fuzz worker); with 1s the heap
	// levels off below 200 MB. Every input is written at once, so 1s does
	// not cut a connection short.
	cfg.IdleTimeout, cfg.ReadFrameTimeout, cfg.WriteTimeout = time.Second, time.Second, time.Second
	s, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	s.Handle("echo", echo)
	s.Handle("panic", func(context.Context, []byte) ([]byte, error) { panic("boom") })

	f.Add(frame(request(1, "echo", []byte("hello"))))
	f.Add(append(frame(request(1, "echo", nil)), frame(request(2, "panic", nil))...))
	f.Add(frame(request(3, protocol.MethodHealth, nil)))
	f.Add(frame(request(4, protocol.MethodAttest, []byte{0xa1, 0x01, 0x41, 0x00})))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0x10, 0x01})
	f.Add(frame([]byte{0xa2, 0x00, 0x01, 0x01, 0x18, 0x2a}))
	f.Add(frame(nil))
	f.Add([]byte{0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		srv, peer := net.Pipe()
		s.connWG.Add(1)
		s.open.Add(1)
		c := newConn(s, context.Background(), srv)
		go c.serve()
		drained := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, peer)
			close(drained)
		}()
		_, _ = peer.Write(in)
		peer.Close()
		s.connWG.Wait()
		<-drained
		if n := s.budget.inUse(); n != 0 {
			t.Fatalf("%d bytes still charged to MaxInFlightBytes after the connection ended", n)
		}
	})
}

// FuzzHealthRequest: the enclavekit.health body decoder never panics, and
// accepts at least what the strict decoder of protocol.HealthRequest
// accepts, with the same meaning (it also ignores unknown keys), except a
// null or undefined key 1, which it refuses as the wrong type.
func FuzzHealthRequest(f *testing.F) {
	for _, v := range []any{
		protocol.HealthRequest{}, protocol.HealthRequest{Clock: true},
		map[uint64]any{1: true, 9: "more"}, map[uint64]any{1: 5}, map[string]any{"1": true}, []int{1},
	} {
		b, err := protocol.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xbf, 0x01, 0xf5, 0xff})
	f.Add([]byte{0xa2, 0x01, 0xf5, 0x01, 0xf4})
	f.Add([]byte{0xa1, 0x01, 0xf6})
	f.Add([]byte{0xa1, 0x01, 0xf7})
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := parseHealthRequest(body)
		var strict protocol.HealthRequest
		if len(body) > 0 && protocol.Unmarshal(body, &strict) != nil {
			return
		}
		var m map[uint64]any
		if err != nil && protocol.Unmarshal(body, &m) == nil {
			if v, ok := m[1]; ok && v == nil {
				return // null or undefined: refused on purpose
			}
		}
		if err != nil || got != strict {
			t.Fatalf("parseHealthRequest(%x) = %+v, %v; the strict decoder gives %+v", body, got, err, strict)
		}
	})
}

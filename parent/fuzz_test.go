package parent

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
)

// FuzzClientResponse plays an enclave that answers a request with
// arbitrary bytes, then closes the connection. The client must end the call
// with a response or an error, never panic or hang, and never deliver a
// response to a request id it did not send.
func FuzzClientResponse(f *testing.F) {
	frame := func(env protocol.Envelope) []byte {
		b, err := protocol.MarshalEnvelope(&env)
		if err != nil {
			f.Fatal(err)
		}
		return binary.BigEndian.AppendUint32(nil, uint32(len(b)))
	}
	ok, _ := protocol.MarshalEnvelope(&protocol.Envelope{ID: 1, Body: []byte("ok")})
	f.Add(append(frame(protocol.Envelope{ID: 1, Body: []byte("ok")}), ok...))
	re, _ := protocol.MarshalEnvelope(&protocol.Envelope{ID: 1, Code: protocol.CodeInternal, Message: "x"})
	f.Add(append(binary.BigEndian.AppendUint32(nil, uint32(len(re))), re...))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 3, 0xa1, 0x01, 0x02})
	f.Fuzz(func(t *testing.T, stream []byte) {
		dialer := func(context.Context, string) (net.Conn, error) {
			a, b := net.Pipe()
			go func() {
				defer b.Close()
				if _, err := protocol.ReadFrame(b, nil, 0); err != nil {
					return
				}
				b.Write(stream)
			}()
			return a, nil
		}
		c, err := Dial(context.Background(), "tcp://enclave:1", Options{Dial: dialer, PoolSize: 1, MaxFrameSize: 4096, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := c.CallRaw(ctx, "m", []byte("req"))
		if ctx.Err() != nil {
			t.Fatal("the call hung until its deadline")
		}
		if err == nil {
			// A success must be a well-formed response to id 1 at the
			// start of the stream.
			n := binary.BigEndian.Uint32(stream)
			env, derr := protocol.UnmarshalEnvelope(stream[4 : 4+n])
			if derr != nil || env.ID != 1 || !bytes.Equal(env.Body, got) {
				t.Fatalf("delivered %q from stream %x", got, stream)
			}
		}
	})
}

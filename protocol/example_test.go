package protocol_test

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/enclavekit/enclavekit/protocol"
)

// A request travels as one frame holding one envelope.
func Example() {
	var conn bytes.Buffer // stands in for a net.Conn

	fw, _ := protocol.NewFrameWriter(&conn, 0)
	req, _ := protocol.MarshalEnvelope(&protocol.Envelope{ID: 1, Method: "echo", Body: []byte("hi")})
	_ = fw.WriteFrame(req)

	fr, _ := protocol.NewFrameReader(&conn, 0)
	payload, _ := fr.ReadFrame()
	env, err := protocol.UnmarshalEnvelope(payload)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("request %d: %s(%q)\n", env.ID, env.Method, env.Body)
	// Output: request 1: echo("hi")
}

// A hostile length prefix is refused before anything is allocated.
func ExampleReadFrame() {
	_, err := protocol.ReadFrame(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff}), nil, 0)
	fmt.Println(errors.Is(err, protocol.ErrFrameLengthInvalid))
	fmt.Println(err)
	// Output:
	// true
	// protocol: frame length exceeds the protocol v1 ceiling of 64 MiB: peer declared 4294967295 bytes
}

// Remote failures come back as typed errors.
func ExampleRemoteError() {
	resp := protocol.Envelope{Version: 1, ID: 9, Code: protocol.CodeUnknownMethod, Message: protocol.CodeUnknownMethod.Message()}
	err := resp.Err()
	fmt.Println(errors.Is(err, protocol.ErrUnknownMethod), err)
	// Output: true remote error 2 (unknown method)
}

func ExampleSecret() {
	key := protocol.NewSecret([]byte("0123456789abcdef"))
	fmt.Printf("%v %+v %#v %s\n", key, key, key, key)
	fmt.Println(key.EqualBytes([]byte("0123456789abcdef")))
	// Output:
	// [REDACTED] [REDACTED] [REDACTED] [REDACTED]
	// true
}

func ExamplePad() {
	padded, _ := protocol.Pad([]byte("short"), 64)
	msg, _ := protocol.Unpad(padded, 64)
	fmt.Println(len(padded), string(msg))
	// Output: 64 short
}

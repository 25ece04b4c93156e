package testutil

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
)

// TestRecorderHalfClose: the bytes of both directions are recorded, a half-close
// is passed on, and Close ends the connections still open.
func TestRecorderHalfClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, ln, func(c net.Conn) {
		req, _ := io.ReadAll(c) // until the client's half-close
		c.Write(append([]byte("answer to "), req...))
	})
	r, err := NewRecorder(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := DialTCP(t, r.Addr())
	io.WriteString(c, "secret request")
	c.CloseWrite()
	resp, err := io.ReadAll(c)
	if err != nil || string(resp) != "answer to secret request" {
		t.Fatalf("response %q, %v", resp, err)
	}
	seen := r.Bytes()
	for _, want := range []string{"secret request", "answer to secret request"} {
		if !bytes.Contains(seen, []byte(want)) {
			t.Errorf("recorded %q, lacks %q", seen, want)
		}
	}

	open := DialTCP(t, r.Addr())
	io.WriteString(open, "x")
	r.Close()
	if _, err := io.ReadAll(open); err != nil && !isReset(err) {
		t.Errorf("connection open at Close: read %v, want it closed", err)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}

package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

// v2 builds a PROXY v2 header by hand from the HAProxy spec, section 2.2,
// independently of Append.
func v2(verCmd, fam byte, block []byte) []byte {
	b := append([]byte(nil), Signature[:]...)
	b = append(b, verCmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(block)))
	return append(b, block...)
}

func tcp4Block(src, dst netip.AddrPort) []byte {
	var b []byte
	s, d := src.Addr().As4(), dst.Addr().As4()
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

func tcp6Block(src, dst netip.AddrPort) []byte {
	var b []byte
	s, d := src.Addr().As16(), dst.Addr().As16()
	b = append(b, s[:]...)
	b = append(b, d[:]...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

func TestParse(t *testing.T) {
	src4, dst4 := netip.MustParseAddrPort("203.0.113.7:51000"), netip.MustParseAddrPort("10.0.0.5:443")
	src6, dst6 := netip.MustParseAddrPort("[2001:db8::7]:51000"), netip.MustParseAddrPort("[2001:db8::1]:443")
	tlv := []byte{0x04, 0x00, 0x02, 0xaa, 0xbb} // a NOOP TLV after the addresses
	tests := []struct {
		name    string
		in      []byte
		want    netip.AddrPort
		ok      bool
		wantErr bool
	}{
		{"tcp4", v2(0x21, 0x11, tcp4Block(src4, dst4)), src4, true, false},
		{"tcp6", v2(0x21, 0x21, tcp6Block(src6, dst6)), src6, true, false},
		{"tcp4 with TLVs", v2(0x21, 0x11, append(tcp4Block(src4, dst4), tlv...)), src4, true, false},
		{"local", v2(0x20, 0x00, nil), netip.AddrPort{}, false, false},
		{"local with a block", v2(0x20, 0x11, tcp4Block(src4, dst4)), netip.AddrPort{}, false, false},
		{"udp4: no client address", v2(0x21, 0x12, tcp4Block(src4, dst4)), netip.AddrPort{}, false, false},
		{"bad signature", append([]byte("GET / HTTP/1.1\r\n"), 0, 0), netip.AddrPort{}, false, true},
		{"version 1", v2(0x11, 0x11, tcp4Block(src4, dst4)), netip.AddrPort{}, false, true},
		{"command 2", v2(0x22, 0x11, tcp4Block(src4, dst4)), netip.AddrPort{}, false, true},
		{"tcp4 block too short", v2(0x21, 0x11, make([]byte, 11)), netip.AddrPort{}, false, true},
		{"tcp6 block too short", v2(0x21, 0x21, make([]byte, 35)), netip.AddrPort{}, false, true},
		{"declared length over the limit", v2(0x21, 0x11, make([]byte, MaxBlockLen+1)), netip.AddrPort{}, false, true},
		{"truncated fixed part", v2(0x21, 0x11, nil)[:10], netip.AddrPort{}, false, true},
		{"truncated block", v2(0x21, 0x11, tcp4Block(src4, dst4))[:20], netip.AddrPort{}, false, true},
		{"empty", nil, netip.AddrPort{}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(append(tt.in, "data"...))
			h, err := Parse(r)
			got, ok := h.Src, h.Src.IsValid()
			if tt.wantErr {
				if !errors.Is(err, ErrHeader) || ok || got.IsValid() {
					t.Fatalf("= %v, %v, %v; want only an ErrHeader", got, ok, err)
				}
				return
			}
			if err != nil || ok != tt.ok || got != tt.want {
				t.Fatalf("= %v, %v, %v; want %v, %v", got, ok, err, tt.want, tt.ok)
			}
			if rest, _ := io.ReadAll(r); string(rest) != "data" {
				t.Fatalf("bytes after the header = %q, want %q", rest, "data")
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(v2(0x21, 0x11, tcp4Block(netip.MustParseAddrPort("1.2.3.4:5"), netip.MustParseAddrPort("6.7.8.9:10"))))
	f.Add(v2(0x21, 0x21, make([]byte, 36)))
	f.Add(v2(0x20, 0x00, nil))
	f.Add([]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := Parse(r)
		src, ok := h.Src, h.Src.IsValid()
		if err != nil && (ok || src.IsValid() || h.Dst.IsValid()) {
			t.Fatal("an address returned with an error")
		}
		if ok != h.Dst.IsValid() {
			t.Fatal("a source without a destination, or the reverse")
		}
		if err == nil {
			n := int(binary.BigEndian.Uint16(in[14:16]))
			if consumed := len(in) - r.Len(); consumed != FixedLen+n {
				t.Fatalf("consumed %d bytes, the header is %d", consumed, FixedLen+n)
			}
		}
	})
}

func TestAppend(t *testing.T) {
	tcp := func(s string) net.Addr { return net.TCPAddrFromAddrPort(netip.MustParseAddrPort(s)) }
	for _, tc := range []struct {
		name     string
		src, dst net.Addr
		want     string // hex after the signature
	}{
		{"tcp4", tcp("192.0.2.1:56324"), tcp("198.51.100.7:443"),
			"2111000c" + "c0000201" + "c6336407" + "dc04" + "01bb"},
		{"tcp4 mapped", tcp("[::ffff:192.0.2.1]:1"), tcp("198.51.100.7:2"),
			"2111000c" + "c0000201" + "c6336407" + "0001" + "0002"},
		{"tcp6", tcp("[2001:db8::1]:1"), tcp("[2001:db8::2]:443"),
			"21210024" + "20010db8000000000000000000000001" + "20010db8000000000000000000000002" + "0001" + "01bb"},
		{"mixed", tcp("192.0.2.1:1"), tcp("[2001:db8::2]:2"),
			"21210024" + "00000000000000000000ffffc0000201" + "20010db8000000000000000000000002" + "0001" + "0002"},
		{"not tcp", &net.UnixAddr{Name: "/x", Net: "unix"}, tcp("192.0.2.1:1"), "20000000"},
		{"nil", nil, nil, "20000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Append(nil, tc.src, tc.dst)
			if !bytes.Equal(got[:12], Signature[:]) {
				t.Fatalf("signature %x", got[:12])
			}
			if h := fmt.Sprintf("%x", got[12:]); h != tc.want {
				t.Fatalf("header %s, want %s", h, tc.want)
			}
			if _, err := Parse(bytes.NewReader(got)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// FuzzAppendParse checks that every address pair Append encodes parses
// back, with Parse, to the same addresses, and that Parse reads exactly
// the header.
func FuzzAppendParse(f *testing.F) {
	f.Add([]byte{192, 0, 2, 1}, uint16(1), []byte{198, 51, 100, 7}, uint16(443))
	f.Add(bytes.Repeat([]byte{0x20}, 16), uint16(0), bytes.Repeat([]byte{1}, 16), uint16(65535))
	f.Add([]byte{1, 2, 3}, uint16(5), []byte{}, uint16(6))
	f.Fuzz(func(t *testing.T, s []byte, sp uint16, d []byte, dp uint16) {
		sa, sok := netip.AddrFromSlice(s)
		da, dok := netip.AddrFromSlice(d)
		var src, dst net.Addr
		if sok {
			src = net.TCPAddrFromAddrPort(netip.AddrPortFrom(sa, sp))
		}
		if dok {
			dst = net.TCPAddrFromAddrPort(netip.AddrPortFrom(da, dp))
		}
		b := Append([]byte("prefix"), src, dst)
		if !bytes.HasPrefix(b, []byte("prefix")) {
			t.Fatal("prefix lost")
		}
		r := bytes.NewReader(append(b[6:], "data"...))
		h, err := Parse(r)
		if err != nil {
			t.Fatal(err)
		}
		if r.Len() != len("data") {
			t.Fatalf("Parse left %d bytes after the header, want %d", r.Len(), len("data"))
		}
		gs, gd := h.Src, h.Dst
		if !sok || !dok {
			if gs.IsValid() || gd.IsValid() {
				t.Fatalf("LOCAL header carried %v %v", gs, gd)
			}
			return
		}
		if gs.Addr().Unmap() != sa.Unmap() || gs.Port() != sp || gd.Addr().Unmap() != da.Unmap() || gd.Port() != dp {
			t.Fatalf("round trip %v→%v became %v→%v", sa, da, gs, gd)
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	src := net.TCPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::1]:50000"))
	dst := net.TCPAddrFromAddrPort(netip.MustParseAddrPort("[2001:db8::2]:443"))
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = Append(buf[:0], src, dst)
	}
}

// The listener reports the header's client address and hands the bytes
// after it to Read.
func TestListenerOverTCP(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := NewListener(ln, time.Second)
	defer pl.Close()
	client := netip.MustParseAddrPort("198.51.100.9:40000")
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		c.Write(append(v2(0x21, 0x11, tcp4Block(client, netip.MustParseAddrPort("127.0.0.1:443"))), "hello"...))
		io.Copy(io.Discard, c)
	}()
	c, err := pl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.RemoteAddr().String(); got != client.String() {
		t.Fatalf("RemoteAddr = %s, want %s", got, client)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("Read = %q, %v", buf, err)
	}
}

// chanListener hands out in-memory connections, for synctest.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { close(l.done); return nil }
func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

// A peer that never sends its header does not block Accept; its first Read
// fails after the header timeout, and the caller's deadline is kept.
func TestListenerHeaderTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &chanListener{ch: make(chan net.Conn, 2), done: make(chan struct{})}
		pl := NewListener(l, 5*time.Second)
		defer pl.Close()
		a, b := net.Pipe()
		defer b.Close()
		l.ch <- a
		c, err := pl.Accept() // returns at once: nothing read yet
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		_, err = c.Read(make([]byte, 1))
		if !errors.Is(err, ErrHeader) || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read = %v, want a header timeout", err)
		}
		if d := time.Since(start); d != 5*time.Second {
			t.Fatalf("header wait took %v, want the 5s timeout", d)
		}

		// A caller's earlier, shorter deadline bounds the header too.
		a2, b2 := net.Pipe()
		defer b2.Close()
		l.ch <- a2
		c2, _ := pl.Accept()
		defer c2.Close()
		c2.SetReadDeadline(time.Now().Add(time.Second))
		start = time.Now()
		if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read = %v", err)
		}
		if d := time.Since(start); d != time.Second {
			t.Fatalf("header wait took %v, want the caller's 1s", d)
		}
	})
}

package enclave

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/transport"
)

// v2 builds a PROXY v2 header by hand from the HAProxy spec, section 2.2.
func v2(verCmd, fam byte, block []byte) []byte {
	b := append([]byte(nil), proxyV2Sig...)
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

func TestParseProxyHeaderV2(t *testing.T) {
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
		{"declared length over the limit", v2(0x21, 0x11, make([]byte, MaxProxyHeaderV2+1)), netip.AddrPort{}, false, true},
		{"truncated fixed part", v2(0x21, 0x11, nil)[:10], netip.AddrPort{}, false, true},
		{"truncated block", v2(0x21, 0x11, tcp4Block(src4, dst4))[:20], netip.AddrPort{}, false, true},
		{"empty", nil, netip.AddrPort{}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(append(tt.in, "data"...))
			got, ok, err := ParseProxyHeaderV2(r)
			if tt.wantErr {
				if !errors.Is(err, ErrProxyHeader) || ok || got.IsValid() {
					t.Fatalf("= %v, %v, %v; want only an ErrProxyHeader", got, ok, err)
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

func FuzzParseProxyHeaderV2(f *testing.F) {
	f.Add(v2(0x21, 0x11, tcp4Block(netip.MustParseAddrPort("1.2.3.4:5"), netip.MustParseAddrPort("6.7.8.9:10"))))
	f.Add(v2(0x21, 0x21, make([]byte, 36)))
	f.Add(v2(0x20, 0x00, nil))
	f.Add([]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		src, ok, err := ParseProxyHeaderV2(r)
		if err != nil && (ok || src.IsValid()) {
			t.Fatal("an address returned with an error")
		}
		if ok && !src.IsValid() {
			t.Fatal("ok without an address")
		}
		if err == nil {
			n := int(binary.BigEndian.Uint16(in[14:16]))
			if consumed := len(in) - r.Len(); consumed != proxyV2Fixed+n {
				t.Fatalf("consumed %d bytes, the header is %d", consumed, proxyV2Fixed+n)
			}
		}
	})
}

// The listener reports the header's client address and hands the bytes
// after it to Read.
func TestProxyV2ListenerOverTCP(t *testing.T) {
	checkLeaks(t)
	ln, err := transport.Listen(context.Background(), "tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := NewProxyV2Listener(ln, time.Second)
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
func TestProxyV2ListenerHeaderTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := &chanListener{ch: make(chan net.Conn, 2), done: make(chan struct{})}
		pl := NewProxyV2Listener(l, 5*time.Second)
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
		if !errors.Is(err, ErrProxyHeader) || !errors.Is(err, os.ErrDeadlineExceeded) {
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

// TestProxyV2SilentPeersDoNotStallServer: five connections that never send
// their PROXY header cost the server nothing but their own goroutines: a
// good client's request is answered at once (in fake time), and the silent
// ones are closed when their header timeout expires.
func TestProxyV2SilentPeersDoNotStallServer(t *testing.T) {
	tests := []struct {
		name   string
		silent int
		early  []byte // what the silent peers send: nothing, or part of a header
	}{
		{"five silent", 5, nil},
		{"five with half a signature", 5, proxyV2Sig[:6]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const headerTimeout = 10 * time.Second
				s, err := New(bubbleConfig())
				if err != nil {
					t.Fatal(err)
				}
				s.Handle("echo", echo)
				pl := newPipeListener(nil)
				stop := serveOn(s, NewProxyV2Listener(pl, headerTimeout))
				var silent []net.Conn
				for range tt.silent {
					c, err := pl.Dial()
					if err != nil {
						t.Fatal(err)
					}
					if tt.early != nil {
						go c.Write(tt.early)
					}
					silent = append(silent, c)
				}
				synctest.Wait()
				start := time.Now()
				nc, err := pl.Dial()
				if err != nil {
					t.Fatal(err)
				}
				hdr := v2(0x21, 0x11, tcp4Block(netip.MustParseAddrPort("198.51.100.9:40000"), netip.MustParseAddrPort("127.0.0.1:443")))
				wrote := make(chan struct{})
				go func() { // net.Pipe writes wait for the reader
					defer close(wrote)
					nc.Write(hdr)
				}()
				<-wrote
				good := newClient(t, nc)
				if e := good.call("echo", 1, []byte("hi")); string(e.Body) != "hi" {
					t.Fatalf("echo = %+v", e)
				}
				if d := time.Since(start); d != 0 {
					t.Errorf("good client waited %v behind silent peers", d)
				}
				if got := s.Stats().OpenConns; got != uint64(tt.silent+1) {
					t.Errorf("OpenConns = %d, want %d", got, tt.silent+1)
				}
				time.Sleep(headerTimeout)
				synctest.Wait()
				if got := s.Stats().OpenConns; got != 1 {
					t.Errorf("after the header timeout OpenConns = %d, want 1 (the good client)", got)
				}
				for _, c := range silent {
					c.Close()
				}
				nc.Close()
				if err := stop(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

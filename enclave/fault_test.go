package enclave

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/internal/syncbuf"
	"github.com/enclavekit/enclavekit/protocol"
)

// fault is one injected misbehaviour of a net.Conn call.
type fault uint8

const (
	pass    fault = iota // call through
	eintr                // return syscall.EINTR, nothing transferred
	eintrOp              // return EINTR inside *net.OpError / *os.SyscallError
	zero                 // return (0, nil)
	short                // transfer at most 1 byte
	reset                // return ECONNRESET and close the connection
)

// faultConn injects faults into Read and Write: each call consumes the next
// fault of its script; once a script is used up, forever applies.
type faultConn struct {
	net.Conn
	mu                        sync.Mutex
	reads, writes             []fault
	readForever, writeForever fault
	readCalls, writeCalls     int
}

func (c *faultConn) next(script *[]fault, forever fault, calls *int) fault {
	c.mu.Lock()
	defer c.mu.Unlock()
	*calls++
	if len(*script) == 0 {
		return forever
	}
	f := (*script)[0]
	*script = (*script)[1:]
	return f
}

func opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(op, err)}
}

func (c *faultConn) Read(p []byte) (int, error) {
	switch c.next(&c.reads, c.readForever, &c.readCalls) {
	case eintr:
		return 0, syscall.EINTR
	case eintrOp:
		return 0, opErr("read", syscall.EINTR)
	case zero:
		return 0, nil
	case short:
		return c.Conn.Read(p[:min(len(p), 1)])
	case reset:
		c.Conn.Close()
		return 0, opErr("read", syscall.ECONNRESET)
	}
	return c.Conn.Read(p)
}

func (c *faultConn) Write(p []byte) (int, error) {
	switch c.next(&c.writes, c.writeForever, &c.writeCalls) {
	case eintr:
		return 0, syscall.EINTR
	case eintrOp:
		return 0, opErr("write", syscall.EINTR)
	case zero:
		return 0, nil
	case short:
		if len(p) > 1 {
			return c.Conn.Write(p[:1])
		}
	case reset:
		c.Conn.Close()
		return 0, opErr("write", syscall.ECONNRESET)
	}
	return c.Conn.Write(p)
}

// stubConn is an in-memory net.Conn half: reads from r, writes to w.
type stubConn struct {
	net.Conn // nil: other methods are not used
	r        io.Reader
	w        bytes.Buffer
	closed   bool
}

func (s *stubConn) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s *stubConn) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *stubConn) Close() error                { s.closed = true; return nil }

func repeat(f fault, n int) []fault {
	s := make([]fault, n)
	for i := range s {
		s[i] = f
	}
	return s
}

func TestRetryConnRead(t *testing.T) {
	tests := []struct {
		name     string
		script   []fault
		forever  fault
		want     string
		wantErr  error
		maxCalls int
	}{
		{name: "plain", want: "hello"},
		{name: "EINTR then data", script: []fault{eintr, eintr}, want: "hello"},
		{name: "EINTR in OpError then data", script: []fault{eintrOp}, want: "hello"},
		{name: "zero reads below the bound", script: repeat(zero, maxZeroReads-1), want: "hello"},
		{name: "short read", script: []fault{short}, want: "h"},
		{name: "zero reads forever", forever: zero, wantErr: ErrNoProgress, maxCalls: maxZeroReads},
		{name: "EINTR forever", forever: eintrOp, wantErr: ErrNoProgress, maxCalls: maxEINTR},
		{name: "reset", script: []fault{reset}, wantErr: syscall.ECONNRESET},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := &faultConn{Conn: &stubConn{r: strings.NewReader("hello")}, reads: tt.script, readForever: tt.forever}
			buf := make([]byte, 16)
			n, err := retryConn{fc}.Read(buf)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || n != 0 {
					t.Fatalf("Read = %d, %v; want 0, %v", n, err, tt.wantErr)
				}
				if err == io.EOF {
					t.Fatal("no progress reported as EOF")
				}
				if tt.maxCalls > 0 && fc.readCalls != tt.maxCalls {
					t.Fatalf("%d reads before giving up, want %d (bounded)", fc.readCalls, tt.maxCalls)
				}
				return
			}
			if err != nil || string(buf[:n]) != tt.want {
				t.Fatalf("Read = %q, %v; want %q", buf[:n], err, tt.want)
			}
		})
	}
	if !errors.Is(ErrNoProgress, io.ErrNoProgress) {
		t.Error("ErrNoProgress does not match io.ErrNoProgress")
	}
}

func TestRetryConnWrite(t *testing.T) {
	const msg = "hello, enclave"
	tests := []struct {
		name    string
		script  []fault
		forever fault
		wantErr error
	}{
		{name: "plain"},
		{name: "short writes are completed", script: []fault{short, short, short}},
		{name: "EINTR retried", script: []fault{eintr, eintrOp, short, eintr}},
		{name: "zero writes below the bound", script: repeat(zero, maxZeroReads-1)},
		{name: "zero writes forever", forever: zero, wantErr: ErrNoProgress},
		{name: "EINTR forever", forever: eintr, wantErr: ErrNoProgress},
		{name: "reset", script: []fault{short, reset}, wantErr: syscall.ECONNRESET},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stub := &stubConn{r: strings.NewReader("")}
			fc := &faultConn{Conn: stub, writes: tt.script, writeForever: tt.forever}
			n, err := retryConn{fc}.Write([]byte(msg))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Write = %d, %v; want %v", n, err, tt.wantErr)
				}
				if n != stub.w.Len() {
					t.Fatalf("Write reported %d bytes, %d were written", n, stub.w.Len())
				}
				return
			}
			if err != nil || n != len(msg) || stub.w.String() != msg {
				t.Fatalf("Write = %d, %v, wrote %q; want %d, nil, %q", n, err, stub.w.String(), len(msg), msg)
			}
		})
	}
}

// faultListener wraps each accepted connection.
type faultListener struct {
	net.Listener
	wrap func(i int, c net.Conn) net.Conn
	n    int
}

func (l *faultListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.n++
	return l.wrap(l.n, c), nil
}

// TestServerSurvivesFaults: EINTR (bare and wrapped), bounded zero-length
// reads, short reads and short writes on the server's side of a connection
// do not drop it; requests still get correct responses.
func TestServerSurvivesFaults(t *testing.T) {
	checkLeaks(t)
	sched := []fault{eintrOp, zero, short, eintr, zero, zero, pass, short, eintrOp}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &faultListener{Listener: ln, wrap: func(_ int, c net.Conn) net.Conn {
		var r, w []fault
		for range 20 {
			r = append(r, sched...)
			w = append(w, short, eintr, eintrOp, zero, pass)
		}
		return &faultConn{Conn: c, reads: r, writes: w}
	}}
	s, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	s.Handle("echo", echo)
	stop := serveOn(s, fl)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	c := dial(t, "tcp://"+ln.Addr().String())
	for i := range uint64(50) {
		body := bytes.Repeat([]byte{byte(i)}, int(i*97))
		resp := c.call("echo", i, body)
		if resp.Code != protocol.CodeOK || !bytes.Equal(resp.Body, body) {
			t.Fatalf("request %d: code %d, %d bytes back, want %d", i, resp.Code, len(resp.Body), len(body))
		}
	}
	if st := s.Stats(); st.DroppedConns != 0 || st.Errors != 0 {
		t.Fatalf("stats %+v: want no dropped connections and no errors", st)
	}
}

// TestServerClosesOnFaults: a connection whose reads make no progress or
// are reset is closed with a logged reason; the server keeps serving others.
func TestServerClosesOnFaults(t *testing.T) {
	tests := []struct {
		name    string
		conn    func(net.Conn) net.Conn
		wantLog string
	}{
		{"zero-length reads forever", func(c net.Conn) net.Conn { return &faultConn{Conn: c, readForever: zero} }, "no progress"},
		{"EINTR forever", func(c net.Conn) net.Conn { return &faultConn{Conn: c, readForever: eintr} }, "no progress"},
		{"reset on read", func(c net.Conn) net.Conn { return &faultConn{Conn: c, reads: []fault{reset}} }, "connection reset"},
		{"reset on write", func(c net.Conn) net.Conn { return &faultConn{Conn: c, writes: []fault{reset}} }, "writing response failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			var logs syncbuf.Buffer
			cfg := testConfig()
			cfg.Logger = newTextLogger(&logs)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			fl := &faultListener{Listener: ln, wrap: func(i int, c net.Conn) net.Conn {
				if i == 1 {
					return tt.conn(c)
				}
				return c
			}}
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			s.Handle("echo", echo)
			stop := serveOn(s, fl)
			defer stop()

			bad := dial(t, "tcp://"+ln.Addr().String())
			_ = bad.send(protocol.Envelope{ID: 1, Method: "echo", Body: []byte("x")})
			bad.expectClosed(5 * time.Second)
			waitFor(t, 5*time.Second, "the bad connection to be released", func() bool { return s.Stats().OpenConns == 0 })

			good := dial(t, "tcp://"+ln.Addr().String())
			if resp := good.call("echo", 2, []byte("ok")); string(resp.Body) != "ok" {
				t.Fatalf("good client got %+v", resp)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Fatalf("log does not mention %q:\n%s", tt.wantLog, logs.String())
			}
		})
	}
}

func TestFaultScriptsDescribe(t *testing.T) {
	// Guards the fault table against silent renumbering.
	if fmt.Sprint(pass, eintr, eintrOp, zero, short, reset) != "0 1 2 3 4 5" {
		t.Fatal("fault constants changed")
	}
}

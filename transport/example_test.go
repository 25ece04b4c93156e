package transport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/enclavekit/enclavekit/transport"
)

func ExampleParseAddr() {
	a, _ := transport.ParseAddr("vsock://parent:5001")
	fmt.Println(a.Network, a.CID, a.Port)
	_, err := transport.ParseAddr("vsock:5001")
	fmt.Println(err)
	// Output:
	// vsock 3 5001
	// transport: bad address "vsock:5001": missing scheme; want vsock://CID:PORT (CID a number or any, parent, host, local) or tcp://HOST:PORT
}

// The same code serves vsock in an enclave and loopback TCP in development.
func ExampleListen() {
	ctx := context.Background()
	ln, err := transport.Listen(ctx, "tcp://127.0.0.1:0") // "vsock://any:5000" in an enclave
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Write([]byte("hello from the enclave"))
	}()
	c, err := transport.Dial(ctx, transport.AddrOf(ln.Addr()))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	msg, _ := io.ReadAll(c)
	fmt.Println(string(msg))
	// Output: hello from the enclave
}

// A server's accept loop: transient errors (out of descriptors, say) are
// retried with a growing pause and logged at most once per 10 s; a clean
// stop (the context ended, the listener closed) is told apart from a
// broken listener.
func ExampleAcceptor() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := transport.Listen(ctx, "tcp://127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	context.AfterFunc(ctx, func() { ln.Close() }) // interrupts a waiting Accept
	go func() {
		c, err := transport.Dial(ctx, transport.AddrOf(ln.Addr()))
		if err == nil {
			c.Close()
		}
	}()
	acc := &transport.Acceptor{Listener: ln, Name: "example server", Logger: slog.Default()}
	for {
		c, err := acc.Accept(ctx)
		if errors.Is(err, transport.ErrStopped) {
			fmt.Println("stopped")
			return
		}
		if err != nil {
			fmt.Println("listener broken:", err)
			return
		}
		fmt.Println("accepted a connection")
		c.Close()
		cancel()
	}
	// Output:
	// accepted a connection
	// stopped
}

// Relay joins two connections both ways: here a client of this process
// and an echo server, through a relay that gives up after a minute with
// no byte moving.
func ExampleRelay() {
	ctx := context.Background()
	echo, _ := transport.Listen(ctx, "tcp://127.0.0.1:0")
	defer echo.Close()
	go func() {
		c, err := echo.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	}()
	front, _ := transport.Listen(ctx, "tcp://127.0.0.1:0")
	defer front.Close()
	go func() {
		a, err := front.Accept()
		if err != nil {
			return
		}
		defer a.Close()
		b, err := transport.Dial(ctx, transport.AddrOf(echo.Addr()))
		if err != nil {
			return
		}
		defer b.Close()
		r := &transport.Relay{Idle: time.Minute}
		r.Run(ctx, a, b)
	}()

	c, _ := transport.Dial(ctx, transport.AddrOf(front.Addr()))
	defer c.Close()
	io.WriteString(c, "hello through the relay")
	c.(*net.TCPConn).CloseWrite() // passed on as a half close
	back, _ := io.ReadAll(c)
	fmt.Println(string(back))
	// Output: hello through the relay
}

// A LogLimiter keeps a flood of per-connection lines out of the log: the
// first passes, the next ones within DefaultLogEvery are counted, and the
// next line that passes says how many were left out.
func ExampleLogLimiter() {
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{} // a stable output for this example
			}
			return a
		},
	}))
	var refusals transport.LogLimiter
	for i := range 1000 {
		refusals.Log(context.Background(), log, slog.LevelWarn, "connection refused", "reason", "max_conns", "n", i)
	}
	// Output: level=WARN msg="connection refused" reason=max_conns n=0
}

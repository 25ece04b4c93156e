package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func proxyTestFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProxyCommandErrors(t *testing.T) {
	bad := proxyTestFile(t, "routes:\n  - listen: tcp://127.0.0.1:0\n    to: example.com:443\nallowlist: []\n")
	unknown := proxyTestFile(t, "allowlist:\n  - {address: a.example, port: 443}\nbogus: 1\n")
	aws := proxyTestFile(t, "allowlist:\n- {address: kms.eu-west-1.amazonaws.com, port: 443}\n")
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"proxy without config", []string{"proxy"}, exitUsage, "usage"},
		{"proxy extra arg", []string{"proxy", "--config", bad, "x"}, exitUsage, "usage"},
		{"proxy help", []string{"proxy", "-h"}, exitOK, "usage"},
		{"proxy missing file", []string{"proxy", "--config", "/nonexistent/x.yaml"}, exitFailure, "no such file"},
		{"proxy route not allowlisted", []string{"proxy", "--config", bad}, exitFailure, bad + ":3: routes[0].to: example.com:443 is not on the allowlist"},
		{"proxy unknown key", []string{"proxy", "--config", unknown}, exitFailure, unknown + ":3: unknown field \"bogus\""},
		{"proxy aws file has no routes", []string{"proxy", "--config", aws}, exitFailure, "no routes"},
		{"vsock-proxy args", []string{"vsock-proxy", "8000", "kms.eu-west-1.amazonaws.com"}, exitUsage, "usage"},
		{"vsock-proxy bad port", []string{"vsock-proxy", "--config", aws, "8000", "kms.eu-west-1.amazonaws.com", "99999"}, exitUsage, "REMOTE_PORT"},
		{"vsock-proxy -4 -6", []string{"vsock-proxy", "--config", aws, "-4", "-6", "8000", "kms.eu-west-1.amazonaws.com", "443"}, exitUsage, "exclude"},
		{"vsock-proxy not allowlisted", []string{"vsock-proxy", "--config", aws, "8000", "kms.us-east-1.amazonaws.com", "443"}, exitFailure, "not on the allowlist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, &out, &errb)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tt.code, errb.String())
			}
			if !strings.Contains(out.String()+errb.String(), tt.want) {
				t.Errorf("output lacks %q:\n%s%s", tt.want, out.String(), errb.String())
			}
		})
	}
}

// TestVsockProxyCommand runs the drop-in form on loopback TCP end to end.
func TestVsockProxyCommand(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	bport := backend.Addr().(*net.TCPAddr).Port
	// Pick a free port for the proxy to listen on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.Addr().String()
	l.Close()

	cfg := proxyTestFile(t, fmt.Sprintf("allowlist:\n- {address: 127.0.0.1, port: %d}\n", bport))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		done <- run(ctx, []string{"vsock-proxy", "--config", cfg, "--listen", "tcp://" + listen, "-w", "8",
			"8000", "127.0.0.1", fmt.Sprint(bport)}, io.Discard, &errb)
	}()
	var c net.Conn
	for range 200 {
		if c, err = net.Dial("tcp", listen); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		cancel()
		<-done
		t.Fatalf("proxy did not come up: %v\n%s", err, errb.String())
	}
	io.WriteString(c, "ping")
	buf := make([]byte, 4)
	_, err = io.ReadFull(c, buf)
	c.Close()
	if err != nil || string(buf) != "ping" {
		t.Errorf("echo through vsock-proxy: %q %v", buf, err)
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("exit %d; stderr:\n%s", code, errb.String())
	}
}

// TestProxyCommandReload: SIGHUP re-reads the allowlist; a CONNECT that
// was allowed is refused after the file drops its destination.
func TestProxyCommandReload(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	bport := backend.Addr().(*net.TCPAddr).Port
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.Addr().String()
	l.Close()
	body := "routes:\n  - listen: tcp://%s\n    connect: true\nallowlist:\n  - {address: 127.0.0.1, port: %d}\n"
	cfg := proxyTestFile(t, fmt.Sprintf(body, listen, bport))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() { done <- run(ctx, []string{"proxy", "--config", cfg}, io.Discard, &errb) }()
	defer func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("exit %d", code)
		}
	}()
	status := func() string {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			return "down"
		}
		defer c.Close()
		fmt.Fprintf(c, "CONNECT 127.0.0.1:%d HTTP/1.1\r\n\r\n", bport)
		line := make([]byte, 12)
		if _, err := io.ReadFull(c, line); err != nil {
			return err.Error()
		}
		return string(line[9:12])
	}
	var got string
	for range 200 {
		if got = status(); got != "down" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got != "200" {
		t.Fatalf("before reload: %s", got)
	}
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(body, listen, bport+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	for range 200 {
		if got = status(); got == "403" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("after SIGHUP reload: %s, want 403", got)
}

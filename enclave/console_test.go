package enclave

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/enclavekit/enclavekit/internal/syncbuf"
)

// stuckPipe returns the write end of a pipe nobody reads: it blocks once
// the kernel's pipe buffer is full.
func stuckPipe(t *testing.T) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Close()
		r.Close()
	})
	return w
}

func TestConsoleWriterPipeNobodyReads(t *testing.T) {
	checkLeaks(t)
	w := stuckPipe(t)
	cw := NewConsoleWriter(w, 8)
	line := []byte(strings.Repeat("x", 1023) + "\n")
	const n = 10000 // 10 MiB: far more than a pipe buffer holds
	for range n {
		if m, err := cw.Write(line); m != len(line) || err != nil {
			t.Fatalf("Write = %d, %v", m, err)
		}
	}
	if cw.Dropped() == 0 {
		t.Fatal("no write dropped with a console nobody reads")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := cw.Close(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close = %v, want the context's error", err)
	}
	// checkLeaks: the writer goroutine ended although nobody read.
}

func TestConsoleWriterFlushes(t *testing.T) {
	tests := []struct {
		name   string
		queue  int
		writes int
	}{
		{"default queue", 0, 100},
		{"queue of one", 1, 1},
		{"exactly full", 16, 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			var out syncbuf.Buffer
			cw := NewConsoleWriter(&out, tt.queue)
			var want strings.Builder
			for i := range tt.writes {
				fmt.Fprintf(cw, "record %d\n", i)
				fmt.Fprintf(&want, "record %d\n", i)
			}
			if err := cw.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if tt.queue == 0 || tt.writes <= tt.queue {
				if out.String() != want.String() {
					t.Errorf("console got %q, want %q", out.String(), want.String())
				}
			}
			cw.Write([]byte("late\n"))
			if strings.Contains(out.String(), "late") {
				t.Error("a write after Close reached the console")
			}
			if cw.Dropped() == 0 {
				t.Error("a write after Close was not counted as dropped")
			}
			if err := cw.Close(context.Background()); err != nil {
				t.Errorf("second Close = %v", err)
			}
		})
	}
}

// TestServerConsoleNobodyReads: with the enclave's console on a pipe
// nobody reads and every request logged (debug level), requests keep being
// answered; the dropped records show in Stats.ConsoleDropped.
func TestServerConsoleNobodyReads(t *testing.T) {
	tests := []struct {
		name    string
		handler func(w *os.File) (slog.Handler, func(context.Context) error)
	}{
		{"console handler", func(w *os.File) (slog.Handler, func(context.Context) error) {
			h := NewConsoleHandler(w, slog.LevelDebug)
			return h, h.Close
		}},
		{"log handler, sink down", func(w *os.File) (slog.Handler, func(context.Context) error) {
			h, err := NewLogHandler(LogConfig{
				Console: w, Level: slog.LevelDebug, ConsoleQueue: 16,
				Dial: func(context.Context, string) (net.Conn, error) { return nil, errors.New("no sink") },
			})
			if err != nil {
				t.Fatal(err)
			}
			return h, h.Close
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			w := stuckPipe(t)
			h, closeLog := tt.handler(w)
			t.Cleanup(func() {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				closeLog(ctx)
			})
			cfg := testConfig()
			cfg.Logger = slog.New(h)
			s, addr := startServer(t, cfg, nil)
			c := dial(t, addr)
			body := []byte(strings.Repeat("b", 512))
			const n = 2000 // a few hundred used to hang
			for i := range uint64(n) {
				if e := c.call("echo", i+1, body); e.Code != 0 {
					t.Fatalf("request %d: code %d", i, e.Code)
				}
			}
			if st := s.Stats(); st.ConsoleDropped == 0 || st.Requests < n {
				t.Fatalf("Stats %+v: want requests ≥ %d and console drops", st, n)
			}
		})
	}
}

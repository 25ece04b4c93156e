package parent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enclavekit/enclavekit/protocol"
)

// leaderRig is a client with one connection to a scripted enclave, inside a
// synctest bubble: the test sees each request (reqs) and writes the
// response bytes itself (srv), so that it can stop in the middle of a frame.
type leaderRig struct {
	c    *Client
	srv  net.Conn
	reqs chan protocol.Envelope
	// health gets the health probes that a call timing out on a silent
	// connection sends; answerProbes answers them.
	health chan protocol.Envelope
	dials  func() int
}

func newLeaderRig(t *testing.T) *leaderRig {
	t.Helper()
	return newLeaderRigTimeout(t, -1)
}

// newLeaderRigTimeout is newLeaderRig with Options.CallTimeout set.
func newLeaderRigTimeout(t *testing.T, callTimeout time.Duration) *leaderRig {
	t.Helper()
	r := &leaderRig{reqs: make(chan protocol.Envelope, 64), health: make(chan protocol.Envelope, 64)}
	conns := make(chan net.Conn, 4)
	dialer, dials := countingPipeDialer(func(_ int, c net.Conn) {
		conns <- c
		readRequests(c, func(env protocol.Envelope) {
			if env.Method == protocol.MethodHealth {
				r.health <- env
				return
			}
			r.reqs <- env
		})
	})
	c, err := Dial(context.Background(), "tcp://enclave:5000", Options{Dial: dialer, Logger: quiet, PoolSize: 1, CallTimeout: callTimeout})
	if err != nil {
		t.Fatal(err)
	}
	r.c, r.srv, r.dials = c, <-conns, dials
	t.Cleanup(func() { c.Close(); r.srv.Close() })
	return r
}

// call runs a call in a goroutine; its outcome arrives on the channel.
func (r *leaderRig) call(ctx context.Context, body string) <-chan callOutcome {
	out := make(chan callOutcome, 1)
	go func() {
		got, err := r.c.CallRaw(ctx, "m", []byte(body))
		out <- callOutcome{string(got), err}
	}()
	return out
}

type callOutcome struct {
	body string
	err  error
}

// request waits for the next request.
func (r *leaderRig) request(t *testing.T) protocol.Envelope {
	t.Helper()
	synctest.Wait()
	select {
	case env := <-r.reqs:
		return env
	default:
		t.Fatal("no request arrived")
		return protocol.Envelope{}
	}
}

// reply is the frame answering req with its own body.
func reply(t *testing.T, req protocol.Envelope) []byte {
	t.Helper()
	p, err := protocol.MarshalEnvelope(&protocol.Envelope{ID: req.ID, Body: req.Body})
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{0, 0, 0, byte(len(p))}, p...)
}

// write sends b to the client in a goroutine (a pipe write waits for the
// reader) and waits until the bubble is idle.
func (r *leaderRig) write(b []byte) {
	if len(b) > 0 {
		go r.srv.Write(b)
	}
	synctest.Wait()
}

// answerProbes answers the health probes sent so far; the stream must be
// between frames.
func (r *leaderRig) answerProbes(t *testing.T) {
	t.Helper()
	for {
		synctest.Wait()
		select {
		case env := <-r.health:
			r.write(reply(t, env))
		default:
			return
		}
	}
}

// state is the connection's reader role: the id of the leading call (0:
// none) and whether the background reader holds it.
func (r *leaderRig) state() (leader uint64, bg bool, pending, abandoned int) {
	cc := r.c.slots[0].conn
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.leaderID, cc.bg, len(cc.pending), cc.abandoned
}

func wantOutcome(t *testing.T, what string, ch <-chan callOutcome, body string, wantErr error) {
	t.Helper()
	synctest.Wait()
	select {
	case o := <-ch:
		if wantErr != nil {
			if !errors.Is(o.err, wantErr) {
				t.Fatalf("%s: %q, %v; want %v", what, o.body, o.err, wantErr)
			}
			return
		}
		if o.err != nil || o.body != body {
			t.Fatalf("%s: %q, %v; want %q", what, o.body, o.err, body)
		}
	default:
		t.Fatalf("%s has not returned", what)
	}
}

func notReturned(t *testing.T, what string, ch <-chan callOutcome) {
	t.Helper()
	synctest.Wait()
	select {
	case o := <-ch:
		t.Fatalf("%s returned early: %q, %v", what, o.body, o.err)
	default:
	}
}

// TestLeaderDeadlineMidFrameSynctest: the leading call's deadline falls
// after every possible prefix of another call's response has arrived; the
// leader returns at its deadline, and the other call, which takes over the
// reading, gets its response intact.
func TestLeaderDeadlineMidFrameSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newLeaderRig(t)
		probe := reply(t, protocol.Envelope{ID: 1, Body: []byte("b-000")})
		for k := 0; k < len(probe); k++ {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			start := time.Now()
			a := r.call(ctx, "a")
			ra := r.request(t)
			if leader, _, _, _ := r.state(); leader != ra.ID {
				t.Fatalf("prefix %d: leader %d, want the first call %d", k, leader, ra.ID)
			}
			b := r.call(context.Background(), fmt.Sprintf("b-%03d", k))
			rb := r.request(t)
			frame := reply(t, rb)
			r.write(frame[:k])
			notReturned(t, "the waiting call", b)
			time.Sleep(time.Second)
			wantOutcome(t, "the leader", a, "", context.DeadlineExceeded)
			if d := time.Since(start); d != time.Second {
				t.Fatalf("prefix %d: the leader returned after %v, want 1s", k, d)
			}
			cancel()
			if leader, _, _, _ := r.state(); leader != rb.ID {
				t.Fatalf("prefix %d: leader %d after the first left, want %d", k, leader, rb.ID)
			}
			r.write(frame[k:])
			wantOutcome(t, fmt.Sprintf("prefix %d: the waiting call", k), b, fmt.Sprintf("b-%03d", k), nil)
			r.answerProbes(t)
			time.Sleep(idleReadDelay) // the background reader takes over
			r.write(reply(t, ra))     // late: dropped
			if _, _, pending, abandoned := r.state(); pending != 0 || abandoned != 0 {
				t.Fatalf("prefix %d: %d pending, %d abandoned after the late response", k, pending, abandoned)
			}
		}
		if n := r.dials(); n != 1 {
			t.Fatalf("%d dials, want 1", n)
		}
	})
}

// TestLeaderDeadlineWhileOthersWaitSynctest: the leader leaves at its
// deadline with two calls waiting; one of them reads on, and both get
// their responses, in either order.
func TestLeaderDeadlineWhileOthersWaitSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newLeaderRig(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		a := r.call(ctx, "a")
		r.request(t)
		b := r.call(context.Background(), "b")
		rb := r.request(t)
		c := r.call(context.Background(), "c")
		rc := r.request(t)
		time.Sleep(time.Second)
		wantOutcome(t, "the leader", a, "", context.DeadlineExceeded)
		if leader, bg, _, _ := r.state(); (leader != rb.ID && leader != rc.ID) || bg {
			t.Fatalf("leader %d (background %v) after the first left, want %d or %d", leader, bg, rb.ID, rc.ID)
		}
		r.write(reply(t, rc))
		wantOutcome(t, "the third call", c, "c", nil)
		r.write(reply(t, rb))
		wantOutcome(t, "the second call", b, "b", nil)
		r.answerProbes(t)
	})
}

// TestLeaderPassesRoleSynctest: the leader, answered, returns at once and
// hands the reading to a waiting call; with no call waiting, the
// background reader takes it after idleReadDelay.
func TestLeaderPassesRoleSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newLeaderRig(t)
		a := r.call(context.Background(), "a")
		ra := r.request(t)
		b := r.call(context.Background(), "b")
		rb := r.request(t)
		if leader, bg, _, _ := r.state(); leader != ra.ID || bg {
			t.Fatalf("leader %d (background %v), want the first call %d", leader, bg, ra.ID)
		}
		r.write(reply(t, ra))
		wantOutcome(t, "the leader", a, "a", nil)
		if leader, bg, _, _ := r.state(); leader != rb.ID || bg {
			t.Fatalf("leader %d (background %v) after the first returned, want %d", leader, bg, rb.ID)
		}
		notReturned(t, "the second call", b)
		r.write(reply(t, rb))
		wantOutcome(t, "the second call", b, "b", nil)
		time.Sleep(idleReadDelay)
		synctest.Wait()
		if leader, bg, _, _ := r.state(); leader != 0 || !bg {
			t.Fatalf("leader %d (background %v) on an idle connection, want the background reader", leader, bg)
		}
		// A call takes the role back from the background reader.
		d := r.call(context.Background(), "d")
		rd := r.request(t)
		if leader, bg, _, _ := r.state(); leader != rd.ID || bg {
			t.Fatalf("leader %d (background %v), want the new call %d", leader, bg, rd.ID)
		}
		r.write(reply(t, rd))
		wantOutcome(t, "the new call", d, "d", nil)
	})
}

// TestLateResponseAfterLeaderLeftSynctest: the response of a leader that
// left at its deadline arrives while the next call leads: that call drops
// it and gets its own.
func TestLateResponseAfterLeaderLeftSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newLeaderRig(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		a := r.call(ctx, "a")
		ra := r.request(t)
		time.Sleep(time.Second)
		wantOutcome(t, "the leader", a, "", context.DeadlineExceeded)
		r.answerProbes(t)
		if _, _, pending, abandoned := r.state(); pending != 1 || abandoned != 1 {
			t.Fatalf("%d pending, %d abandoned; want the abandoned request remembered", pending, abandoned)
		}
		b := r.call(context.Background(), "b")
		rb := r.request(t)
		late := reply(t, ra)
		r.write(late[:3])
		r.write(append(late[3:], reply(t, rb)...))
		wantOutcome(t, "the next call", b, "b", nil)
		if _, _, pending, abandoned := r.state(); pending != 0 || abandoned != 0 {
			t.Fatalf("%d pending, %d abandoned after the late response", pending, abandoned)
		}
		if n := r.dials(); n != 1 {
			t.Fatalf("%d dials, want 1", n)
		}
	})
}

// TestConnLostWhileLeadingSynctest: the enclave closes the connection in
// the middle of a frame while a call leads and another waits: both fail
// with ErrConnLost, and the next call dials again.
func TestConnLostWhileLeadingSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newLeaderRig(t)
		a := r.call(context.Background(), "a")
		ra := r.request(t)
		b := r.call(context.Background(), "b")
		r.request(t)
		r.write(reply(t, ra)[:2])
		r.srv.Close()
		wantOutcome(t, "the leader", a, "", ErrConnLost)
		wantOutcome(t, "the waiting call", b, "", ErrConnLost)
		// The rig's enclave answers nothing on the new connection: the
		// call only has to be sent on it.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := r.c.CallRaw(ctx, "m", nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("call after the loss: %v, want DeadlineExceeded from the new connection", err)
		}
		if n := r.dials(); n != 2 {
			t.Fatalf("%d dials, want 2", n)
		}
	})
}

// TestCallTimeoutAfterLeadingSynctest: the connection's timer skips the
// leading call (which ends its own read at its deadline); a call that led
// when the timer last fired and then leaves the reading to the background
// reader (a response too large to peek began to arrive) still ends at its
// CallTimeout, though that response never completes.
func TestCallTimeoutAfterLeadingSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const timeout = time.Minute
		r := newLeaderRigTimeout(t, timeout)
		ctx, cancel := context.WithCancel(context.Background())
		a := r.call(ctx, "a") // bounded by CallTimeout: the timer is set for it
		r.request(t)
		time.Sleep(time.Second)
		start := time.Now()
		b := r.call(context.Background(), "b")
		rb := r.request(t)
		cancel()
		wantOutcome(t, "the first leader", a, "", context.Canceled)
		if leader, _, _, _ := r.state(); leader != rb.ID {
			t.Fatalf("leader %d after the first call left, want %d", leader, rb.ID)
		}
		// The timer fires at the first call's deadline: that call is
		// abandoned, the second leads.
		time.Sleep(timeout - time.Second)
		synctest.Wait()
		// A response too large for the read buffer begins (only its first
		// bytes come): the background reader takes over the reading.
		big := []byte{0, 0, 0x50, 0}
		r.write(append(big, 0xa3, 0, 1, 1))
		if leader, bg, _, _ := r.state(); leader != 0 || !bg {
			t.Fatalf("leader %d (background %v) inside a large frame, want the background reader", leader, bg)
		}
		notReturned(t, "the second call", b)
		time.Sleep(time.Until(start.Add(timeout)))
		wantOutcome(t, "the second call", b, "", context.DeadlineExceeded)
		if d := time.Since(start); d != timeout {
			t.Fatalf("the second call returned after %v, want %v", d, timeout)
		}
	})
}

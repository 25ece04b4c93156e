package ingress

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/enclavekit/enclavekit/transport"
)

// Framings of Config.Framing: how the ingress finds message
// boundaries in what clients send, to apply MinRate.
const (
	// FramingAuto recognizes TLS records (first byte 20..24) and
	// enclavekit frames (first byte 0..4, a big-endian length of at most
	// 64 MiB) from a connection's first byte; any other stream is
	// forwarded with no rate check (FramingNone).
	FramingAuto = "auto"
	// FramingTLS reads the client's stream as TLS records (5-byte header,
	// 16-bit length).
	FramingTLS = "tls"
	// FramingFrames reads it as enclavekit frames (32-bit length prefix).
	FramingFrames = "frames"
	// FramingNone applies no rate check; IdleTimeout and eviction still do.
	FramingNone = "none"
)

// framing is the detected or configured framing of one connection.
type framing uint8

const (
	framingUnknown framing = iota // auto, no byte yet
	framingNone
	framingTLS
	framingFrames
)

func parseFraming(s string) (framing, bool) {
	switch s {
	case "", FramingAuto:
		return framingUnknown, true
	case FramingTLS:
		return framingTLS, true
	case FramingFrames:
		return framingFrames, true
	case FramingNone:
		return framingNone, true
	}
	return 0, false
}

// recordWatch follows the message boundaries of a client's stream (TLS
// records or enclavekit frames) without changing a byte, so that the
// ingress knows when a message is incomplete and since when. feed is
// called by the one goroutine copying the client's bytes; the atomics are
// read by the accept loop (eviction) and by that goroutine (deadlines).
type recordWatch struct {
	mode framing

	hdr       [5]byte
	hdrLen    int   // header bytes collected for the current message
	remaining int64 // payload bytes still expected
	got       int64 // bytes of the current message so far

	incomplete atomic.Bool  // a message has begun and is not whole
	start      atomic.Int64 // unix nanos of the current message's first byte
	messages   atomic.Uint64
}

// headerLen is the size of a message header in the watched framing.
func (w *recordWatch) headerLen() int {
	if w.mode == framingTLS {
		return 5
	}
	return 4
}

// feed accounts for p, which arrived at now.
func (w *recordWatch) feed(p []byte, now time.Time) {
	if len(p) > 0 && w.mode == framingUnknown {
		switch b := p[0]; {
		case b >= 20 && b <= 24:
			w.mode = framingTLS
		case b <= 4:
			w.mode = framingFrames
		default:
			w.mode = framingNone
		}
	}
	if w.mode == framingNone {
		return
	}
	for len(p) > 0 {
		if w.hdrLen == 0 && w.remaining == 0 {
			// A new message begins.
			w.got = 0
			w.start.Store(now.UnixNano())
			w.incomplete.Store(true)
		}
		if hl := w.headerLen(); w.hdrLen < hl {
			n := copy(w.hdr[w.hdrLen:hl], p)
			w.hdrLen += n
			w.got += int64(n)
			p = p[n:]
			if w.hdrLen < hl {
				return
			}
			if w.mode == framingTLS {
				w.remaining = int64(binary.BigEndian.Uint16(w.hdr[3:5]))
			} else {
				w.remaining = int64(binary.BigEndian.Uint32(w.hdr[0:4]))
			}
		}
		n := min(int64(len(p)), w.remaining)
		w.remaining -= n
		w.got += n
		p = p[n:]
		if w.remaining == 0 {
			w.hdrLen = 0
			w.incomplete.Store(false)
			w.messages.Add(1)
		}
	}
}

// rateDeadline is the time by which the next byte of an incomplete
// message must arrive for the client to keep at least minRate bytes per
// second over the message after grace; zero when no message is
// incomplete.
func (w *recordWatch) rateDeadline(minRate int64, grace time.Duration) time.Time {
	if minRate <= 0 || !w.incomplete.Load() {
		return time.Time{}
	}
	start := time.Unix(0, w.start.Load())
	return start.Add(grace + time.Duration(float64(w.got+1)/float64(minRate)*float64(time.Second)))
}

// conn is one forwarded connection, as eviction sees it.
type conn struct {
	client  net.Conn
	source  string    // sourceKey of the client
	created time.Time // when it was accepted: its activity until relay runs
	relay   *transport.Relay
	watch   *recordWatch
	evicted bool // guarded by Server.mu
}

// Eviction tiers of ingress connections, evicted lowest first.
const (
	tierUnproven = iota // no whole message yet (or no framing known)
	tierWaiting         // idle, or stalled inside a later message
	tierBusy            // a whole message sent, the answer not begun
)

// rank orders connections for eviction: lower tier first, then older
// since (the start of a stalled message, else the last byte moved), then
// fewer messages.
func (ic *conn) rank() (tier int, since int64, msgs uint64) {
	msgs = ic.watch.messages.Load()
	tier = tierWaiting
	if msgs == 0 {
		tier = tierUnproven
	}
	if ic.watch.incomplete.Load() {
		return tier, ic.watch.start.Load(), msgs
	}
	last, up, down := ic.relay.Activity() // up: from the client; down: from the enclave
	if last.IsZero() {
		last = ic.created // still dialing the enclave
	}
	since = last.UnixNano()
	if msgs > 0 && up.After(down) {
		return tierBusy, since, msgs
	}
	return tier, since, msgs
}

// sourceKey groups client addresses for MaxConnsPerSource: an IPv4
// address, or the /64 of an IPv6 one (one host usually has a whole /64).
func sourceKey(a net.Addr) string {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if a == nil {
			return ""
		}
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return a.String()
		}
		ip = ap.Addr()
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// pickVictim returns the connection to evict among cands (lowest rank),
// or nil.
func pickVictim(cands func(yield func(*conn) bool)) *conn {
	var victim *conn
	var vTier int
	var vSince int64
	var vMsgs uint64
	for ic := range cands {
		if ic.evicted {
			continue
		}
		tier, since, msgs := ic.rank()
		if victim == nil || tier < vTier || (tier == vTier && (since < vSince || since == vSince && msgs < vMsgs)) {
			victim, vTier, vSince, vMsgs = ic, tier, since, msgs
		}
	}
	return victim
}

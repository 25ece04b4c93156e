package nsmtest_test

import (
	"bytes"
	"context"
	"crypto/sha512"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/fxamacker/cbor/v2"
	"github.com/hf/nsm"
	"github.com/hf/nsm/request"
	"github.com/hf/nsm/response"
)

func session(t *testing.T, opts nsmtest.Options) (*nsmtest.Emulator, *nsm.Session) {
	t.Helper()
	emu, err := nsmtest.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s, err := nsm.OpenSession(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return emu, s
}

// The raw hf/nsm session sees the device's error codes, including
// InvalidIndex, which hf/nsm has no constant for.
func TestErrorCodes(t *testing.T) {
	_, s := session(t, nsmtest.Options{})
	for _, tc := range []struct {
		name string
		req  request.Request
		want response.ErrorCode
	}{
		{"describe 32", &request.DescribePCR{Index: 32}, "InvalidIndex"},
		{"extend 1000", &request.ExtendPCR{Index: 1000, Data: []byte{1}}, "InvalidIndex"},
		{"extend locked", &request.ExtendPCR{Index: 0, Data: []byte{1}}, "ReadOnlyIndex"},
		{"lock 32", &request.LockPCR{Index: 32}, "InvalidIndex"},
		{"lockpcrs 33", &request.LockPCRs{Range: 33}, "InvalidIndex"},
		{"user_data 1025", &request.Attestation{UserData: make([]byte, 1025)}, "InputTooLarge"},
		{"ok", &request.DescribePCR{Index: 31}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := s.Send(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if res.Error != tc.want {
				t.Fatalf("error %q, want %q", res.Error, tc.want)
			}
			if got := attest.CodeError(string(res.Error)); (got == nil) != (tc.want == "") {
				t.Fatalf("CodeError(%q) = %v", res.Error, got)
			}
		})
	}
}

func TestPCRSemantics(t *testing.T) {
	emu, s := session(t, nsmtest.Options{LockedPCRs: -1, PCRs: map[int][]byte{5: bytes.Repeat([]byte{5}, 48)}})
	// Extend: SHA-384(old || data), chained.
	want := bytes.Repeat([]byte{5}, 48)
	for _, data := range [][]byte{[]byte("a"), {}, bytes.Repeat([]byte{9}, 3000)} {
		res, err := s.Send(&request.ExtendPCR{Index: 5, Data: data})
		if err != nil || res.ExtendPCR == nil {
			t.Fatalf("%v %+v", err, res)
		}
		h := sha512.Sum384(append(want, data...))
		want = h[:]
		if !bytes.Equal(res.ExtendPCR.Data, want) {
			t.Fatalf("extend = %x, want %x", res.ExtendPCR.Data, want)
		}
	}
	if v, locked := emu.PCR(5); !bytes.Equal(v, want) || locked {
		t.Fatalf("PCR(5) = %x %v", v, locked)
	}
	// LockPCRs(8) locks 0..7; locking is idempotent.
	for range 2 {
		if res, err := s.Send(&request.LockPCRs{Range: 8}); err != nil || res.LockPCRs == nil {
			t.Fatalf("%v %+v", err, res)
		}
	}
	if res, _ := s.Send(&request.ExtendPCR{Index: 7, Data: []byte{1}}); res.Error != "ReadOnlyIndex" {
		t.Fatalf("extend 7 after lock: %+v", res)
	}
	if res, _ := s.Send(&request.ExtendPCR{Index: 8, Data: []byte{1}}); res.ExtendPCR == nil {
		t.Fatalf("extend 8: %+v", res)
	}
	if res, _ := s.Send(&request.LockPCR{Index: 8}); res.LockPCR == nil {
		t.Fatalf("lock 8: %+v", res)
	}
	res, err := s.Send(&request.DescribeNSM{})
	if err != nil || res.DescribeNSM == nil {
		t.Fatal(err)
	}
	if d := res.DescribeNSM; len(d.LockedPCRs) != 9 || d.MaxPCRs != 32 || d.Digest != "SHA384" || d.ModuleID != emu.ModuleID() {
		t.Fatalf("%+v", d)
	}
	// SetPCR bypasses locks (it models the hypervisor's measurement).
	if err := emu.SetPCR(0, make([]byte, 48)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		i int
		v []byte
	}{{-1, make([]byte, 48)}, {32, make([]byte, 48)}, {0, make([]byte, 32)}} {
		if emu.SetPCR(bad.i, bad.v) == nil {
			t.Fatalf("SetPCR(%d, %d bytes) accepted", bad.i, len(bad.v))
		}
	}
	buf := make([]byte, 600)
	if n, err := s.Read(buf); err != nil || n != 600 {
		t.Fatalf("GetRandom: %d %v", n, err)
	}
}

// The document has the real shape: all nine keys in NSM order, null for
// absent optionals, PCRs 0..N-1, a millisecond timestamp.
func TestDocumentShape(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 123e6, time.UTC)
	clock := func() time.Time { return now }
	for _, indefinite := range []bool{false, true} {
		emu, s := session(t, nsmtest.Options{Now: clock, IndefinitePayload: indefinite, DocumentPCRs: 24})
		res, err := s.Send(&request.Attestation{Nonce: []byte("n")})
		if err != nil || res.Attestation == nil {
			t.Fatalf("%v %+v", err, res)
		}
		doc := res.Attestation.Document
		if !bytes.HasPrefix(doc, []byte{0x84, 0x44, 0xa1, 0x01, 0x38, 0x22, 0xa0, 0x59}) {
			t.Fatalf("prefix % x", doc[:8])
		}
		var msg [4]cbor.RawMessage
		if err := cbor.Unmarshal(doc, &msg); err != nil {
			t.Fatal(err)
		}
		var payload []byte
		cbor.Unmarshal(msg[2], &payload)
		if indefinite != (payload[0] == 0xbf) {
			t.Fatalf("payload starts %#x", payload[0])
		}
		var m map[string]any
		if err := cbor.Unmarshal(payload, &m); err != nil {
			t.Fatal(err)
		}
		if len(m) != 9 || m["user_data"] != nil || m["public_key"] != nil || m["timestamp"] != uint64(now.UnixMilli()) {
			t.Fatalf("payload %v", m)
		}
		// Key order and encodings, as the NSM writes them: the nine keys in
		// AttestationDoc order, null (0xf6) for absent optionals.
		if payload[0] != 0xa9 && payload[0] != 0xbf {
			t.Fatalf("payload head %#x", payload[0])
		}
		dec := cbor.NewDecoder(bytes.NewReader(payload[1:]))
		var order []string
		raw := map[string]cbor.RawMessage{}
		for range 9 {
			var k string
			var v cbor.RawMessage
			if err := dec.Decode(&k); err != nil {
				t.Fatal(err)
			}
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			order, raw[k] = append(order, k), v
		}
		if got := strings.Join(order, ","); got != "module_id,digest,timestamp,pcrs,certificate,cabundle,public_key,user_data,nonce" {
			t.Fatalf("key order %s", got)
		}
		if !bytes.Equal(raw["user_data"], []byte{0xf6}) || !bytes.Equal(raw["public_key"], []byte{0xf6}) || !bytes.Equal(raw["nonce"], []byte{0x41, 'n'}) {
			t.Fatalf("optionals % x / % x / % x", raw["user_data"], raw["public_key"], raw["nonce"])
		}
		if pcrs := m["pcrs"].(map[any]any); len(pcrs) != 24 {
			t.Fatalf("%d PCRs", len(pcrs))
		}
		d, err := attest.Verify(doc, attest.VerifyOptions{Roots: emu.Roots(), CurrentTime: now, MaxAge: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if !d.Timestamp.Equal(now) || len(d.CABundle) != 4 {
			t.Fatalf("%v %d", d.Timestamp, len(d.CABundle))
		}
	}
}

// When the clock passes the leaf's not-after, a new leaf is issued.
func TestLeafRotation(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	emu, err := nsmtest.New(nsmtest.Options{Now: clock, LeafValidity: time.Hour, Intermediates: 1})
	if err != nil {
		t.Fatal(err)
	}
	n, err := attest.OpenNSM(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx := context.Background()
	first, _ := n.Attest(ctx, attest.Request{})
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	second, _ := n.Attest(ctx, attest.Request{})
	d1, err1 := attest.Verify(first, attest.VerifyOptions{Roots: emu.Roots()})
	d2, err2 := attest.Verify(second, attest.VerifyOptions{Roots: emu.Roots(), CurrentTime: clock(), MaxAge: time.Minute})
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if d1.Certificate.Equal(d2.Certificate) {
		t.Fatal("leaf not rotated")
	}
	if _, err := attest.Verify(first, attest.VerifyOptions{Roots: emu.Roots(), CurrentTime: clock(), MaxAge: 24 * time.Hour}); err == nil {
		t.Fatal("old document still fresh after its leaf expired")
	}
}

func TestConcurrent(t *testing.T) {
	emu, err := nsmtest.New(nsmtest.Options{LockedPCRs: -1})
	if err != nil {
		t.Fatal(err)
	}
	n, err := attest.OpenNSM(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for range 5 {
				if _, err := n.ExtendPCR(context.Background(), 16+i, []byte{byte(i)}); err != nil {
					t.Error(err)
				}
				if _, err := n.Attest(context.Background(), attest.Request{Nonce: []byte{byte(i)}}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if emu.Calls() != 40 {
		t.Fatalf("%d calls", emu.Calls())
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []nsmtest.Options{
		{DocumentPCRs: 33}, {LockedPCRs: 40}, {Intermediates: 9}, {LeafValidity: -1},
		{PCRs: map[int][]byte{0: {1}}}, {PCRs: map[int][]byte{32: make([]byte, 48)}},
	} {
		if _, err := nsmtest.New(o); !errors.Is(err, nsmtest.ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", o, err)
		}
	}
}

// The emulator can be told its clock offset and debug mode, at start or
// later, so that tests can cover an enclave whose clock disagrees with the
// NSM's or that runs in debug mode.
func TestClockOffsetAndDebug(t *testing.T) {
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return base }
	dev := nsmtest.DevPCRs()
	for _, tc := range []struct {
		name      string
		opts      nsmtest.Options
		setOffset *time.Duration
		setDebug  *bool
		wantTime  time.Time
		wantZero  bool
	}{
		{name: "default", opts: nsmtest.Options{Now: clock, PCRs: dev}, wantTime: base},
		{name: "offset ahead", opts: nsmtest.Options{Now: clock, PCRs: dev, ClockOffset: 7 * time.Second}, wantTime: base.Add(7 * time.Second)},
		{name: "offset behind", opts: nsmtest.Options{Now: clock, PCRs: dev, ClockOffset: -90 * time.Minute}, wantTime: base.Add(-90 * time.Minute)},
		{name: "offset set later", opts: nsmtest.Options{Now: clock, PCRs: dev}, setOffset: ptr(-3 * time.Second), wantTime: base.Add(-3 * time.Second)},
		{name: "debug", opts: nsmtest.Options{Now: clock, PCRs: dev, Debug: true}, wantTime: base, wantZero: true},
		{name: "debug set later", opts: nsmtest.Options{Now: clock, PCRs: dev}, setDebug: ptr(true), wantTime: base, wantZero: true},
		{name: "debug cleared later", opts: nsmtest.Options{Now: clock, PCRs: dev, Debug: true}, setDebug: ptr(false), wantTime: base},
	} {
		t.Run(tc.name, func(t *testing.T) {
			emu, err := nsmtest.New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if tc.setOffset != nil {
				emu.SetClockOffset(*tc.setOffset)
			}
			if tc.setDebug != nil {
				emu.SetDebug(*tc.setDebug)
			}
			n, err := attest.OpenNSM(emu.Options())
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			raw, err := n.Attest(context.Background(), attest.Request{})
			if err != nil {
				t.Fatal(err)
			}
			// The document still verifies at its own timestamp: the chain
			// lives in the NSM's time.
			d, err := attest.Verify(raw, attest.VerifyOptions{Roots: emu.Roots()})
			if err != nil {
				t.Fatal(err)
			}
			if !d.Timestamp.Equal(tc.wantTime) {
				t.Errorf("timestamp %v, want %v", d.Timestamp, tc.wantTime)
			}
			for i := range 3 {
				want := dev[i]
				if tc.wantZero {
					want = make([]byte, nsmtest.PCRSize)
				}
				if !bytes.Equal(d.PCRs[i], want) {
					t.Errorf("PCR%d = %x, want %x", i, d.PCRs[i], want)
				}
			}
			// Debug mode hides the PCRs in documents only; the registers
			// keep their values.
			if v, _ := emu.PCR(0); !bytes.Equal(v, dev[0]) {
				t.Errorf("register PCR0 = %x, want %x", v, dev[0])
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// DevPCRs are fixed and not all zero, so a dev enclave is not in debug mode.
func TestDevPCRs(t *testing.T) {
	a, b := nsmtest.DevPCRs(), nsmtest.DevPCRs()
	for i := range 3 {
		if len(a[i]) != nsmtest.PCRSize || !bytes.Equal(a[i], b[i]) || bytes.Equal(a[i], make([]byte, nsmtest.PCRSize)) {
			t.Fatalf("PCR%d = %x", i, a[i])
		}
	}
	a[0][0] ^= 1
	if bytes.Equal(a[0], nsmtest.DevPCRs()[0]) {
		t.Fatal("DevPCRs returns shared slices")
	}
}

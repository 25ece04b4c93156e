package attest_test

import (
	"bytes"
	"context"
	"crypto/sha512"
	"errors"
	"strings"
	"testing"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
)

func newNSM(t testing.TB, opts nsmtest.Options) (*nsmtest.Emulator, *attest.NSM) {
	t.Helper()
	emu, err := nsmtest.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	n, err := attest.OpenNSM(emu.Options())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return emu, n
}

func TestNSMRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts nsmtest.Options
		req  attest.Request
	}{
		{"empty", nsmtest.Options{}, attest.Request{}},
		{"all fields", nsmtest.Options{}, attest.Request{Nonce: []byte("nonce"), UserData: []byte("user"), PublicKey: []byte("key")}},
		{"max fields", nsmtest.Options{}, attest.Request{Nonce: bytes.Repeat([]byte{1}, 1024), UserData: bytes.Repeat([]byte{2}, 1024), PublicKey: bytes.Repeat([]byte{3}, 1024)}},
		{"empty non-nil", nsmtest.Options{}, attest.Request{Nonce: []byte{}}},
		{"indefinite payload", nsmtest.Options{IndefinitePayload: true}, attest.Request{Nonce: []byte("n")}},
		{"32 PCRs one intermediate", nsmtest.Options{DocumentPCRs: 32, Intermediates: 1}, attest.Request{UserData: []byte("u")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			emu, n := newNSM(t, tc.opts)
			ctx := context.Background()
			doc, err := n.Attest(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			d, err := attest.Verify(doc, attest.VerifyOptions{Roots: emu.Roots(), MaxAge: 1 << 40, Nonce: tc.req.Nonce, UserData: tc.req.UserData, PublicKey: tc.req.PublicKey})
			if err != nil {
				t.Fatal(err)
			}
			if d.ModuleID != emu.ModuleID() || d.Digest != "SHA384" {
				t.Errorf("module %q digest %q", d.ModuleID, d.Digest)
			}
			want := tc.opts.DocumentPCRs
			if want == 0 {
				want = 16
			}
			if len(d.PCRs) != want {
				t.Errorf("%d PCRs, want %d", len(d.PCRs), want)
			}
			for name, pair := range map[string][2][]byte{"nonce": {tc.req.Nonce, d.Nonce}, "user_data": {tc.req.UserData, d.UserData}, "public_key": {tc.req.PublicKey, d.PublicKey}} {
				if (pair[0] == nil) != (pair[1] == nil) || !bytes.Equal(pair[0], pair[1]) {
					t.Errorf("%s = %x, want %x", name, pair[1], pair[0])
				}
			}
			// With the AWS root (default) the emulator's document is not trusted.
			if _, err := attest.Verify(doc, attest.VerifyOptions{}); !errors.Is(err, attest.ErrRootNotPinned) {
				t.Errorf("default roots: err = %v, want ErrRootNotPinned", err)
			}
		})
	}
}

func TestNSMPCRs(t *testing.T) {
	emu, n := newNSM(t, nsmtest.Options{})
	ctx := context.Background()
	pcr0 := bytes.Repeat([]byte{0xaa}, 48)
	if err := emu.SetPCR(0, pcr0); err != nil {
		t.Fatal(err)
	}
	p, err := n.DescribePCR(ctx, 0)
	if err != nil || !bytes.Equal(p.Value, pcr0) || !p.Locked {
		t.Fatalf("DescribePCR(0) = %+v, %v", p, err)
	}
	// Extend 16: new = SHA-384(old || data).
	got, err := n.ExtendPCR(ctx, 16, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	want := sha512.Sum384(append(make([]byte, 48), "hello"...))
	if !bytes.Equal(got, want[:]) {
		t.Fatalf("ExtendPCR = %x, want %x", got, want)
	}
	if err := n.LockPCR(ctx, 16); err != nil {
		t.Fatal(err)
	}
	if _, err := n.ExtendPCR(ctx, 16, []byte("x")); !errors.Is(err, attest.ErrNSMReadOnlyIndex) {
		t.Fatalf("extend locked: %v", err)
	}
	if _, err := n.ExtendPCR(ctx, 3, []byte("x")); !errors.Is(err, attest.ErrNSMReadOnlyIndex) {
		t.Fatalf("extend boot PCR: %v", err)
	}
	if err := n.LockPCRs(ctx, 20); err != nil {
		t.Fatal(err)
	}
	desc, err := n.DescribeNSM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if desc.MaxPCRs != 32 || desc.Digest != "SHA384" || desc.ModuleID != emu.ModuleID() || len(desc.LockedPCRs) != 20 || desc.VersionMajor != 1 {
		t.Fatalf("DescribeNSM = %+v", desc)
	}
	// The document carries the PCRs and verifies against an expected PCR0.
	doc, err := n.Attest(ctx, attest.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.Verify(doc, attest.VerifyOptions{Roots: emu.Roots(), PCRs: map[int][]byte{0: pcr0}}); err != nil {
		t.Fatal(err)
	}
	_, err = attest.Verify(doc, attest.VerifyOptions{Roots: emu.Roots(), PCRs: map[int][]byte{1: pcr0}})
	if !errors.Is(err, attest.ErrPCRMismatch) {
		t.Fatalf("PCR1 mismatch: %v", err)
	}
	buf := make([]byte, 1000)
	if c, err := n.Read(buf); err != nil || c != len(buf) || bytes.Equal(buf, make([]byte, 1000)) {
		t.Fatalf("Read = %d, %v", c, err)
	}
}

// Inputs over the NSM limits are rejected before the device is called.
func TestNSMLimits(t *testing.T) {
	emu, n := newNSM(t, nsmtest.Options{})
	ctx := context.Background()
	big := make([]byte, 1025)
	for _, tc := range []struct {
		name  string
		call  func() error
		want  error
		field string
	}{
		{"user_data", func() error { _, err := n.Attest(ctx, attest.Request{UserData: big}); return err }, attest.ErrNSMInputTooLarge, "user_data is 1025 bytes, limit 1024"},
		{"nonce", func() error { _, err := n.Attest(ctx, attest.Request{Nonce: big}); return err }, attest.ErrNSMInputTooLarge, "nonce is 1025 bytes, limit 1024"},
		{"public_key", func() error { _, err := n.Attest(ctx, attest.Request{PublicKey: big}); return err }, attest.ErrNSMInputTooLarge, "public_key is 1025 bytes, limit 1024"},
		{"describe 32", func() error { _, err := n.DescribePCR(ctx, 32); return err }, attest.ErrNSMInvalidIndex, "index 32 out of range 0..31"},
		{"describe -1", func() error { _, err := n.DescribePCR(ctx, -1); return err }, attest.ErrNSMInvalidIndex, "index -1"},
		{"extend 40", func() error { _, err := n.ExtendPCR(ctx, 40, nil); return err }, attest.ErrNSMInvalidIndex, "index 40"},
		{"extend data", func() error { _, err := n.ExtendPCR(ctx, 20, make([]byte, 5000)); return err }, attest.ErrNSMInputTooLarge, "data is 5000 bytes"},
		{"lock 32", func() error { return n.LockPCR(ctx, 32) }, attest.ErrNSMInvalidIndex, "index 32"},
		{"lockpcrs 33", func() error { return n.LockPCRs(ctx, 33) }, attest.ErrNSMInvalidIndex, "range 33"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := emu.Calls()
			err := tc.call()
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("err = %v, want %v naming %q", err, tc.want, tc.field)
			}
			if emu.Calls() != before {
				t.Fatalf("device was called")
			}
		})
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := n.Attest(cctx, attest.Request{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
	n.Close()
	if _, err := n.Attest(ctx, attest.Request{}); !errors.Is(err, attest.ErrNSMClosed) {
		t.Fatalf("closed: %v", err)
	}
}

func TestCodeError(t *testing.T) {
	for code, want := range map[string]error{
		"": nil, "Success": nil,
		"InvalidArgument": attest.ErrNSMInvalidArgument, "InvalidIndex": attest.ErrNSMInvalidIndex,
		"InvalidResponse": attest.ErrNSMInvalidResponse, "ReadOnlyIndex": attest.ErrNSMReadOnlyIndex,
		"InvalidOperation": attest.ErrNSMInvalidOperation, "BufferTooSmall": attest.ErrNSMBufferTooSmall,
		"InputTooLarge": attest.ErrNSMInputTooLarge, "InternalError": attest.ErrNSMInternal,
		"Bogus": attest.ErrNSMUnknownCode,
	} {
		if got := attest.CodeError(code); got != want {
			t.Errorf("CodeError(%q) = %v, want %v", code, got, want)
		}
	}
}

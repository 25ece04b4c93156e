package attest_test

import (
	"bufio"
	"bytes"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
)

// manifestRow is one document row of testdata/MANIFEST.md.
type manifestRow struct {
	file, timestamp, moduleID, sizes, payloadMap, notAfter, sha256 string
}

func readManifest(t *testing.T) map[string]manifestRow {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "MANIFEST.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows := map[string]manifestRow{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "| `valid/") && !strings.HasPrefix(line, "| `invalid/") {
			continue
		}
		cols := strings.Split(line, "|")
		for i := range cols {
			cols[i] = strings.Trim(strings.TrimSpace(cols[i]), "`")
		}
		// cols[0] is empty (leading '|').
		if len(cols) < 14 {
			t.Fatalf("manifest row with %d columns: %s", len(cols), line)
		}
		r := manifestRow{file: cols[1], timestamp: cols[5], moduleID: cols[6], sizes: cols[10],
			payloadMap: cols[11], notAfter: cols[12], sha256: cols[13]}
		if _, dup := rows[r.file]; dup {
			t.Fatalf("manifest lists %s twice", r.file)
		}
		rows[r.file] = r
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// The corpus on disk is exactly the manifest's, byte for byte, and every
// valid document verifies with the properties the manifest records; every
// invalid one fails. A missing, extra or altered file fails the test.
func TestCorpusMatchesManifest(t *testing.T) {
	rows := readManifest(t)
	nValid := 0
	for f := range rows {
		if strings.HasPrefix(f, "valid/") {
			nValid++
		}
	}
	if nValid != 36 || len(rows) != 37 {
		t.Fatalf("manifest lists %d valid and %d invalid documents, want 36 and 1", nValid, len(rows)-nValid)
	}
	onDisk := map[string]bool{}
	for _, dir := range []string{"valid", "invalid"} {
		for name := range corpus(t, dir) {
			onDisk[dir+"/"+name] = true
		}
		entries, err := os.ReadDir(filepath.Join("testdata", dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if _, ok := rows[dir+"/"+e.Name()]; !ok {
				t.Errorf("testdata/%s/%s is not in the manifest", dir, e.Name())
			}
		}
	}
	for f, r := range rows {
		t.Run(f, func(t *testing.T) {
			if !onDisk[f] {
				t.Fatalf("%s listed in the manifest but missing", f)
			}
			doc, err := os.ReadFile(filepath.Join("testdata", f))
			if err != nil {
				t.Fatal(err)
			}
			if sum := sha256.Sum256(doc); hex.EncodeToString(sum[:]) != r.sha256 {
				t.Fatalf("SHA-256 %x, manifest %s", sum, r.sha256)
			}
			d, err := verify(t, doc, attest.VerifyOptions{DisableChainCache: true})
			if strings.HasPrefix(f, "invalid/") {
				if err == nil {
					t.Fatal("invalid document verified")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ts, err := time.Parse(time.RFC3339Nano, r.timestamp)
			if err != nil {
				t.Fatal(err)
			}
			na, err := time.Parse(time.RFC3339, r.notAfter)
			if err != nil {
				t.Fatal(err)
			}
			if !d.Timestamp.Equal(ts) || d.ModuleID != r.moduleID || !d.Certificate.NotAfter.Equal(na) {
				t.Fatalf("got %s %s %s, manifest %s %s %s", d.Timestamp, d.ModuleID, d.Certificate.NotAfter, ts, r.moduleID, na)
			}
			sizes := strings.Split(r.sizes, " / ")
			for i, b := range [][]byte{d.UserData, d.Nonce, d.PublicKey} {
				want := sizes[i]
				got := "null"
				if b != nil {
					got = strconv.Itoa(len(b))
				}
				if got != want {
					t.Errorf("field %d (user_data, nonce, public_key): %s, manifest %s", i, got, want)
				}
			}
			_, payload, _ := coseParts(t, doc)
			if indef := payload[0] == 0xbf; indef != (r.payloadMap == "indefinite") {
				t.Errorf("payload map starts %#x, manifest %s", payload[0], r.payloadMap)
			}
		})
	}
}

// coseDocUnprotected is coseDoc with a given unprotected header encoding.
func coseDocUnprotected(protected, unprotected, payload, sig []byte) []byte {
	out := []byte{0x84}
	out = append(out, bstr(protected)...)
	out = append(out, unprotected...)
	out = append(out, bstr(payload)...)
	return append(out, bstr(sig)...)
}

// The unprotected header is not covered by the signature: it must be {}.
func TestVerifyUnprotectedHeader(t *testing.T) {
	emu, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	payload := encodeMap(t, fields(t, emu), false)
	good, err := emu.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	prot, _, sig := coseParts(t, good)
	for _, tc := range []struct {
		name string
		unp  []byte
		want error
	}{
		{"empty", []byte{0xa0}, nil},
		{"kid", mustCBOR(t, map[int]any{4: []byte("kid")}), attest.ErrMalformed},
		{"alg ES256", mustCBOR(t, map[int]any{1: -7}), attest.ErrMalformed},
		{"x5chain", mustCBOR(t, map[int]any{33: []byte{0x30}}), attest.ErrMalformed},
		{"text key", mustCBOR(t, map[string]any{"a": 1}), attest.ErrMalformed},
		{"empty map, 1-byte length", []byte{0xb8, 0x00}, attest.ErrMalformed},
		{"array", []byte{0x80}, attest.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := coseDocUnprotected(prot, tc.unp, payload, sig)
			_, err := verify(t, doc, attest.VerifyOptions{Roots: emu.Roots()})
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// The chain must be exactly cabundle[0] → cabundle[1] → … → certificate.
func TestVerifyChainOrder(t *testing.T) {
	emu, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, b := emu.Certificates()
	base := fields(t, emu)
	other, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, ob := other.Certificates()
	for _, tc := range []struct {
		name   string
		bundle [][]byte
		want   error
	}{
		{"in order", b, nil},
		{"intermediates reversed", [][]byte{b[0], b[3], b[2], b[1]}, attest.ErrChain},
		{"intermediates swapped", [][]byte{b[0], b[2], b[1], b[3]}, attest.ErrChain},
		{"intermediate repeated", [][]byte{b[0], b[1], b[2], b[3], b[2]}, attest.ErrChain},
		{"last repeated", [][]byte{b[0], b[1], b[2], b[3], b[3]}, attest.ErrChain},
		{"root repeated", [][]byte{b[0], b[0], b[1], b[2], b[3]}, attest.ErrChain},
		{"foreign CA appended", [][]byte{b[0], b[1], b[2], b[3], ob[3]}, attest.ErrChain},
		{"foreign CA inserted", [][]byte{b[0], b[1], ob[1], b[2], b[3]}, attest.ErrChain},
		{"intermediate missing", [][]byte{b[0], b[1], b[3]}, attest.ErrChain},
		{"root not first", [][]byte{b[1], b[0], b[2], b[3]}, attest.ErrRootNotPinned},
		{"root last", [][]byte{b[1], b[2], b[3], b[0]}, attest.ErrRootNotPinned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc, err := emu.Sign(encodeMap(t, set(base, "cabundle", tc.bundle), false))
			if err != nil {
				t.Fatal(err)
			}
			for _, cache := range []bool{false, true, true} {
				_, err := verify(t, doc, attest.VerifyOptions{Roots: emu.Roots(), DisableChainCache: !cache})
				if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
					t.Fatalf("cache %v: err = %v, want %v", cache, err, tc.want)
				}
			}
		})
	}
}

// Enclave PCR expectations are never met by an EC2 NitroTPM document (same
// AWS root; its PCR16 and PCR23 are resettable by the instance OS), and
// NitroTPM expectations never by an enclave document.
func TestVerifyNitroTPMNotEnclave(t *testing.T) {
	emu, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	base := fields(t, emu)
	tpm := map[int][]byte{}
	for i := range 24 {
		tpm[i] = make([]byte, 48)
	}
	tpmDoc, err := emu.Sign(encodeMap(t, append(without(base, "pcrs"), kv{"nitrotpm_pcrs", tpm}), false))
	if err != nil {
		t.Fatal(err)
	}
	encDoc, err := emu.Sign(encodeMap(t, base, false))
	if err != nil {
		t.Fatal(err)
	}
	want := map[int][]byte{16: make([]byte, 48)}
	want0 := map[int][]byte{0: make([]byte, 48)}
	for _, tc := range []struct {
		name string
		doc  []byte
		opts attest.VerifyOptions
		want error
	}{
		{"tpm doc, no PCR policy", tpmDoc, attest.VerifyOptions{}, nil},
		{"tpm doc, enclave policy", tpmDoc, attest.VerifyOptions{PCRs: want}, attest.ErrPCRMismatch},
		{"tpm doc, tpm policy", tpmDoc, attest.VerifyOptions{PCRs: want, NitroTPM: true}, nil},
		{"enclave doc, enclave policy", encDoc, attest.VerifyOptions{PCRs: want0}, nil},
		{"enclave doc, tpm policy", encDoc, attest.VerifyOptions{PCRs: want0, NitroTPM: true}, attest.ErrPCRMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Roots = emu.Roots()
			_, err := verify(t, tc.doc, tc.opts)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// r and s must be in [1, n-1]. High s (n - s) is accepted: ECDSA and COSE
// (RFC 8152 section 8.1) do not require low s and the NSM does not
// normalize, so rejecting it would reject about half of real documents.
// The consequence is that a signature is malleable: never identify a
// document (replay caches, cache keys) by its signature bytes.
func TestVerifySignatureScalars(t *testing.T) {
	emu, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	good, err := emu.Sign(encodeMap(t, fields(t, emu), false))
	if err != nil {
		t.Fatal(err)
	}
	prot, payload, sig := coseParts(t, good)
	n := elliptic.P384().Params().N
	r := new(big.Int).SetBytes(sig[:48])
	s := new(big.Int).SetBytes(sig[48:])
	enc := func(r, s *big.Int) []byte {
		if r.BitLen() > 384 || s.BitLen() > 384 {
			return nil // does not fit r||s
		}
		out := make([]byte, 96)
		r.FillBytes(out[:48])
		s.FillBytes(out[48:])
		return out
	}
	nPlus := func(x *big.Int) *big.Int { return new(big.Int).Add(x, n) }
	for _, tc := range []struct {
		name string
		sig  []byte
		want error
	}{
		{"good", sig, nil},
		{"high s", enc(r, new(big.Int).Sub(n, s)), nil},
		{"r zero", enc(new(big.Int), s), attest.ErrSignature},
		{"s zero", enc(r, new(big.Int)), attest.ErrSignature},
		{"both zero", make([]byte, 96), attest.ErrSignature},
		{"r = n", enc(n, s), attest.ErrSignature},
		{"s = n", enc(r, n), attest.ErrSignature},
		{"r + n", enc(nPlus(r), s), attest.ErrSignature},
		{"s + n", enc(r, nPlus(s)), attest.ErrSignature},
		{"all ones", bytes.Repeat([]byte{0xff}, 96), attest.ErrSignature},
		{"r and s swapped", enc(s, r), attest.ErrSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.sig == nil {
				t.Skip("value ≥ 2^384 has no 48-byte encoding")
			}
			_, err := verify(t, coseDoc(prot, payload, tc.sig), attest.VerifyOptions{Roots: emu.Roots()})
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// Freshness boundaries: exactly MaxAge old and exactly MaxClockSkew in the
// future pass; one millisecond more fails.
func TestVerifyFreshnessBoundaries(t *testing.T) {
	doc := readCorpus(t, sample)
	d, err := verify(t, doc, attest.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const maxAge = 10 * time.Minute
	for _, tc := range []struct {
		name string
		now  time.Time
		want error
	}{
		{"exactly max age", d.Timestamp.Add(maxAge), nil},
		{"max age + 1ms", d.Timestamp.Add(maxAge + time.Millisecond), attest.ErrStale},
		{"exactly max skew ahead", d.Timestamp.Add(-attest.MaxClockSkew), nil},
		{"max skew + 1ms ahead", d.Timestamp.Add(-attest.MaxClockSkew - time.Millisecond), attest.ErrStale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := verify(t, doc, attest.VerifyOptions{CurrentTime: tc.now, MaxAge: maxAge})
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyOptionsFieldLimits(t *testing.T) {
	doc := readCorpus(t, sample)
	big := make([]byte, attest.MaxFieldSize+1)
	for _, opts := range []attest.VerifyOptions{{Nonce: big}, {UserData: big}, {PublicKey: big}, {PCRs: map[int][]byte{0: make([]byte, 47)}}, {PCRs: map[int][]byte{-1: make([]byte, 48)}}} {
		if _, err := verify(t, doc, opts); !errors.Is(err, attest.ErrConfig) {
			t.Fatalf("%+v: %v, want ErrConfig", opts, err)
		}
	}
}

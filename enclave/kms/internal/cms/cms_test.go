package cms

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
)

// sample is the real KMS answer in testdata (see MANIFEST.md).
type sampleData struct {
	ct    []byte
	key   *rsa.PrivateKey
	plain []byte
}

var sample = sync.OnceValue(func() sampleData {
	ct, err := os.ReadFile("testdata/edgebit_ciphertext_for_recipient.ber")
	if err != nil {
		panic(err)
	}
	pemBytes, err := os.ReadFile("testdata/edgebit_recipient_key.pem")
	if err != nil {
		panic(err)
	}
	blk, _ := pem.Decode(pemBytes)
	key, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		panic(err)
	}
	h, err := os.ReadFile("testdata/edgebit_plaintext.hex")
	if err != nil {
		panic(err)
	}
	plain, err := hex.DecodeString(strings.TrimSpace(string(h)))
	if err != nil {
		panic(err)
	}
	return sampleData{ct, key, plain}
})

func TestRealSample(t *testing.T) {
	s := sample()
	got, err := Open(s.key, s.ct)
	if err != nil {
		t.Fatalf("Open(real KMS sample): %v", err)
	}
	if !bytes.Equal(got, s.plain) {
		t.Fatalf("plaintext = %x, want %x", got, s.plain)
	}
	id, err := RecipientKeyID(s.ct)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := KeyID(&s.key.PublicKey)
	if !bytes.Equal(id, want[:]) {
		t.Fatalf("recipient id %x, want SHA-256 of the key's SubjectPublicKeyInfo %x", id, want)
	}
}

// TestSealMatchesKMSShape: for the same key and plaintext length, Seal's
// output differs from the real KMS answer only inside the encrypted key,
// the IV and the ciphertext.
func TestSealMatchesKMSShape(t *testing.T) {
	s := sample()
	out, err := Seal(rand.Reader, &s.key.PublicKey, s.plain)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(s.ct) {
		t.Fatalf("Seal wrote %d bytes, KMS %d", len(out), len(s.ct))
	}
	real, _ := parse(s.ct)
	mine, _ := parse(out)
	random := [][2][]byte{{real.encryptedKey, mine.encryptedKey}, {real.iv, mine.iv}, {real.ciphertext, mine.ciphertext}}
	masked := func(b []byte, which int) []byte {
		b = bytes.Clone(b)
		for _, r := range random {
			i := bytes.Index(b, r[which])
			if i < 0 {
				t.Fatalf("field not found in %d", which)
			}
			clear(b[i : i+len(r[which])])
		}
		return b
	}
	if a, b := masked(s.ct, 0), masked(out, 1); !bytes.Equal(a, b) {
		t.Fatalf("shape differs from KMS's:\nKMS  %x\nSeal %x", a, b)
	}
	got, err := Open(s.key, out)
	if err != nil || !bytes.Equal(got, s.plain) {
		t.Fatalf("Open(Seal(p)) = %x, %v", got, err)
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	key := testKey(t)
	for _, n := range []int{0, 1, 15, 16, 17, 32, 1023, 1024, 1025, 4096} {
		p := make([]byte, n)
		rand.Read(p)
		ct, err := Seal(rand.Reader, &key.PublicKey, p)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		got, err := Open(key, ct)
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("%d bytes: Open = %x, %v", n, got, err)
		}
	}
}

var testKey = func() func(testing.TB) *rsa.PrivateKey {
	k := sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) })
	return func(t testing.TB) *rsa.PrivateKey {
		key, err := k()
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
}()

func TestOpenRefuses(t *testing.T) {
	s := sample()
	other := testKey(t)
	// der is the sample with definite lengths, which Open also reads.
	der, err := toDER(s.ct)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Open(s.key, der); err != nil || !bytes.Equal(got, s.plain) {
		t.Fatalf("DER form: %x, %v", got, err)
	}
	replace := func(old, new string) []byte {
		o, _ := hex.DecodeString(old)
		n, _ := hex.DecodeString(new)
		if bytes.Count(s.ct, o) != 1 {
			t.Fatalf("%s is not unique in the sample", old)
		}
		return bytes.Replace(s.ct, o, n, 1)
	}
	for _, tc := range []struct {
		name string
		key  *rsa.PrivateKey
		in   []byte
	}{
		{"another recipient key", other, s.ct},
		{"nil key", nil, s.ct},
		{"empty", s.key, nil},
		{"trailing byte", s.key, append(bytes.Clone(s.ct), 0)},
		{"trailing element", s.key, append(bytes.Clone(s.ct), 5, 0)},
		{"two ContentInfos", s.key, append(bytes.Clone(s.ct), s.ct...)},
		{"truncated", s.key, s.ct[:len(s.ct)-1]},
		{"EnvelopedData version 0", s.key, replace("30800201023182", "30800201003182")},
		{"KeyTransRecipientInfo version 0", s.key, replace("020102802096", "020100802096")},
		{"RSAES-PKCS1-v1_5", s.key, replace("2a864886f70d010107302f", "2a864886f70d010101302f")},
		{"OAEP with SHA-1", s.key, replace("a00f300d06096086480165030402010500", "a00f300d06096086480165030402020500")},
		{"AES-128-CBC", s.key, replace("60864801650304012a", "608648016503040102")},
		{"content type not data", s.key, replace("2a864886f70d010701", "2a864886f70d010702")},
		{"oversized", s.key, make([]byte, MaxSize+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Open(tc.key, tc.in)
			if !errors.Is(err, ErrOpen) || got != nil {
				t.Fatalf("Open = %x, %v; want ErrOpen", got, err)
			}
			if err.Error() != ErrOpen.Error() {
				t.Fatalf("error %q carries detail", err)
			}
		})
	}
}

// TestEverySingleByteChange changes each byte of the real sample and
// checks that Open never panics and refuses every change, except where
// CMS itself cannot tell: AES-CBC has no integrity, so a changed IV or
// ciphertext block before the last two decrypts to other bytes of the same
// length, and a change in the last two blocks can end in valid padding of
// another length (the TLS session with KMS protects those). Structural and
// recipient-id bytes are tried with all 255 other values; the encrypted
// key, IV and ciphertext bytes (each try costs an RSA decryption) with
// four, or all 255 with ENCLAVEKIT_EXHAUSTIVE=1 (make fuzz).
func TestEverySingleByteChange(t *testing.T) {
	s := sample()
	e, _ := parse(s.ct)
	offset := func(field []byte) int { return bytes.Index(s.ct, field) }
	keyAt, ivAt, ctAt := offset(e.encryptedKey), offset(e.iv), offset(e.ciphertext)
	inside := func(i, at, n int) bool { return i >= at && i < at+n }
	exhaustive := os.Getenv("ENCLAVEKIT_EXHAUSTIVE") == "1"
	mutated := bytes.Clone(s.ct)
	tries, accepted := 0, 0
	for i := range s.ct {
		crypto := inside(i, keyAt, len(e.encryptedKey)) || inside(i, ivAt, len(e.iv)) || inside(i, ctAt, len(e.ciphertext))
		values := []byte{s.ct[i] ^ 0x01, s.ct[i] ^ 0x80, s.ct[i] ^ 0xff, s.ct[i] + 1}
		if !crypto || exhaustive {
			values = values[:0]
			for v := range 256 {
				if byte(v) != s.ct[i] {
					values = append(values, byte(v))
				}
			}
		}
		// Where a change can go unnoticed: the IV and every ciphertext
		// block but the last two (the last holds only padding here).
		undetectable := inside(i, ivAt, len(e.iv)) || inside(i, ctAt, len(e.ciphertext)-32)
		// A change in the last two blocks can leave valid padding of
		// another length (the last block decrypts to random bytes; a byte
		// of the one before flips the same byte of the padding): a caller
		// that knows the length it asked for refuses those.
		lastBlock := inside(i, ctAt+len(e.ciphertext)-32, 32)
		for _, v := range values {
			mutated[i] = v
			tries++
			got, err := Open(s.key, mutated)
			switch {
			case err == nil && lastBlock && len(got) != len(s.plain):
				accepted++
			case err == nil && !undetectable:
				t.Fatalf("byte %d changed %#x -> %#x: accepted (%x)", i, s.ct[i], v, got)
			case err == nil:
				accepted++
				if bytes.Equal(got, s.plain) || len(got) != len(s.plain) {
					t.Fatalf("byte %d changed: plaintext %x", i, got)
				}
			case !errors.Is(err, ErrOpen) || err.Error() != ErrOpen.Error():
				t.Fatalf("byte %d: error %q is not the one generic error", i, err)
			}
		}
		mutated[i] = s.ct[i]
	}
	t.Logf("%d changes tried; %d in the IV or early ciphertext blocks decrypted to other bytes, as AES-CBC allows", tries, accepted)
}

func TestToDER(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string // hex; want "" means refused
	}{
		{"definite primitive", "040141", "040141"},
		{"indefinite sequence", "30800401410000", "3003040141"},
		{"nested indefinite", "3080a08004014100000000", "3005a003040141"},
		{"definite around indefinite", "3007a0800401410000", "3005a003040141"},
		{"long form 1 octet", "0481800" + strings.Repeat("0", 255), "048180" + strings.Repeat("00", 128)},
		{"empty constructed indefinite", "30800000", "3000"},
		{"long form not minimal", "04810141", ""},
		{"long form leading zero", "0482000141", ""},
		{"five length octets", "04850000000001", ""},
		{"indefinite primitive", "04800000", ""},
		{"high tag number", "1f0100", ""},
		{"end-of-contents alone", "0000", ""},
		{"unterminated indefinite", "3080040141", ""},
		{"eoc inside definite", "30020000", ""},
		{"length past end", "0405414141", ""},
		{"trailing", "04014100", ""},
		{"empty", "", ""},
		{"reserved length 0xff", "04ff", ""},
		{"too deep", strings.Repeat("3080", maxDepth+2) + strings.Repeat("0000", maxDepth+2), ""},
		{"deep enough", strings.Repeat("3080", maxDepth+1) + strings.Repeat("0000", maxDepth+1), strings.Repeat("30", 0) + nestedDER(maxDepth+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := hex.DecodeString(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := toDER(in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("toDER(%s) = %x, want an error", tc.in, got)
				}
				return
			}
			if err != nil || hex.EncodeToString(got) != tc.want {
				t.Fatalf("toDER(%s) = %x, %v; want %s", tc.in, got, err, tc.want)
			}
		})
	}
}

// nestedDER is n empty SEQUENCEs nested in DER.
func nestedDER(n int) string {
	s := ""
	for range n {
		s = "30" + hex.EncodeToString(appendLength(nil, len(s)/2)) + s
	}
	return s
}

func TestToDERTooManyElements(t *testing.T) {
	in := []byte{0x30, 0x80}
	for range maxElements {
		in = append(in, 0x05, 0x00)
	}
	in = append(in, 0, 0)
	if _, err := toDER(in); err == nil {
		t.Fatal("an input of more than maxElements elements was accepted")
	}
}

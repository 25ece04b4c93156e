package nsmtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/hf/nsm"
	"github.com/hf/nsm/request"
	"github.com/hf/nsm/response"
)

// Limits of the emulated NSM, those of the real one.
const (
	// MaxPCRs is the number of PCRs the NSM exposes (max_pcrs).
	MaxPCRs = 32
	// PCRSize is the length of a SHA-384 PCR.
	PCRSize = 48
	// MaxFieldSize is the limit on user_data, nonce and public_key.
	MaxFieldSize = 1024
)

// Defaults and limits of Options.
const (
	DefaultDocumentPCRs  = 16
	DefaultLockedPCRs    = 16
	DefaultIntermediates = 3
	DefaultLeafValidity  = 3 * time.Hour
	// MaxIntermediates bounds Options.Intermediates, MaxModuleID the
	// bytes of Options.ModuleID.
	MaxIntermediates = 8
	MaxModuleID      = 256
)

// ErrConfig is wrapped by every configuration error of the package: those
// of Options.Validate, and so of New.
var ErrConfig = errors.New("nsmtest: bad configuration")

// fieldErr reports a field whose value is not accepted, in the form the
// module's packages share: "nsmtest: bad configuration: Options.LockedPCRs
// is 40, outside -1..32 (0 means the default, 16)".
func fieldErr(field string, v any, why string, args ...any) error {
	return fmt.Errorf("%w: %s is %v, %s", ErrConfig, field, v, fmt.Sprintf(why, args...))
}

// Options configures an Emulator. The zero value is a usable default that
// looks like a production enclave: 16 PCRs in documents, PCRs 0..15 locked,
// three intermediates, a three-hour leaf.
type Options struct {
	// ModuleID is the NSM module ID, at most MaxModuleID bytes; "" means
	// a random "i-" + 17 hex digits + "-enc" + 16 hex digits, the shape of
	// real IDs.
	ModuleID string

	// DocumentPCRs is how many PCRs (0..DocumentPCRs-1) each document
	// carries, 1..MaxPCRs; 0 means DefaultDocumentPCRs (16), as real Nitro
	// Enclaves documents.
	DocumentPCRs int

	// LockedPCRs locks PCRs [0, LockedPCRs) at start, as the hypervisor
	// does for the boot measurements, -1..MaxPCRs; 0 means
	// DefaultLockedPCRs (16), -1 none.
	LockedPCRs int

	// PCRs are initial PCR values (index 0..31, 48 bytes each); the others
	// start as 48 zero bytes (a debug-mode enclave's PCR0..2). DevPCRs has
	// non-zero stand-ins for PCR0..2.
	PCRs map[int][]byte

	// Intermediates is the number of CA certificates between the root and
	// the signing certificate, 1..MaxIntermediates (8); 0 means
	// DefaultIntermediates (3), as AWS chains.
	Intermediates int

	// LeafValidity is the lifetime of a signing certificate; a new one is
	// issued when the clock leaves the old one's validity. 0 means
	// DefaultLeafValidity (3h).
	LeafValidity time.Duration

	// Now is the emulator's clock. nil means time.Now.
	Now func() time.Time

	// IndefinitePayload encodes the document payload as an indefinite-length
	// map, as 2025+ NSMs do.
	IndefinitePayload bool

	// ClockOffset is added to Now's time to give the emulated NSM's time: the
	// documents' timestamps and the validity of the certificates it issues.
	// A positive offset emulates an enclave whose system clock is behind the
	// NSM's by that much. Change it later with SetClockOffset.
	ClockOffset time.Duration

	// Debug emulates a debug-mode enclave: every document reports all-zero
	// PCRs, whatever the PCRs hold. Change it later with SetDebug.
	Debug bool
}

// Validate reports the first invalid field, naming it, its value and what
// is accepted; the error wraps ErrConfig. Zero fields are valid (they take
// defaults).
func (o *Options) Validate() error {
	switch {
	case o.DocumentPCRs < 0 || o.DocumentPCRs > MaxPCRs:
		return fieldErr("Options.DocumentPCRs", o.DocumentPCRs, "outside 1..%d (0 means the default, %d)", MaxPCRs, DefaultDocumentPCRs)
	case o.LockedPCRs < -1 || o.LockedPCRs > MaxPCRs:
		return fieldErr("Options.LockedPCRs", o.LockedPCRs, "outside -1..%d (0 means the default, %d)", MaxPCRs, DefaultLockedPCRs)
	case o.Intermediates < 0 || o.Intermediates > MaxIntermediates:
		return fieldErr("Options.Intermediates", o.Intermediates, "outside 1..%d (0 means the default, %d)", MaxIntermediates, DefaultIntermediates)
	case o.LeafValidity < 0:
		return fieldErr("Options.LeafValidity", o.LeafValidity, "negative (0 means the default, %v)", DefaultLeafValidity)
	case len(o.ModuleID) > MaxModuleID:
		return fieldErr("Options.ModuleID", fmt.Sprintf("%d bytes", len(o.ModuleID)), "above %d", MaxModuleID)
	}
	for i, v := range o.PCRs {
		if err := checkPCR(i, v); err != nil {
			return fmt.Errorf("%w: Options.PCRs: %w", ErrConfig, err)
		}
	}
	return nil
}

func checkPCR(i int, v []byte) error {
	if i < 0 || i >= MaxPCRs {
		return fmt.Errorf("nsmtest: PCR index %d out of range 0..%d", i, MaxPCRs-1)
	}
	if len(v) != PCRSize {
		return fmt.Errorf("nsmtest: PCR%d value is %d bytes, want %d", i, len(v), PCRSize)
	}
	return nil
}

// Emulator is an in-process Nitro Security Module. Plug it into hf/nsm with
// Options(); it decodes the same request CBOR and produces the same response
// CBOR as the device, and signs real COSE_Sign1 ES384 documents with a
// generated P-384 chain whose root is Roots(). It is safe for concurrent use.
type Emulator struct {
	opts   Options
	calls  atomic.Int64
	offset atomic.Int64 // ClockOffset, in nanoseconds
	debug  atomic.Bool

	mu     sync.Mutex
	pcrs   [MaxPCRs][]byte
	locked [MaxPCRs]bool

	root     *x509.Certificate
	cas      []*x509.Certificate // root first
	caKey    *ecdsa.PrivateKey   // key of the last CA, which issues leaves
	leaf     *x509.Certificate
	leafKey  *ecdsa.PrivateKey
	cabundle [][]byte
}

// New creates an emulator and its certificate chain.
func New(opts Options) (*Emulator, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.DocumentPCRs == 0 {
		opts.DocumentPCRs = DefaultDocumentPCRs
	}
	if opts.LockedPCRs == 0 {
		opts.LockedPCRs = DefaultLockedPCRs
	}
	if opts.Intermediates == 0 {
		opts.Intermediates = DefaultIntermediates
	}
	if opts.LeafValidity == 0 {
		opts.LeafValidity = DefaultLeafValidity
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ModuleID == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		h := hex.EncodeToString(b[:])
		opts.ModuleID = "i-0" + h[:16] + "-enc" + h[16:]
	}
	e := &Emulator{opts: opts}
	e.offset.Store(int64(opts.ClockOffset))
	e.debug.Store(opts.Debug)
	for i := range e.pcrs {
		e.pcrs[i] = make([]byte, PCRSize)
	}
	for i, v := range opts.PCRs {
		e.pcrs[i] = append([]byte(nil), v...)
	}
	for i := 0; i < opts.LockedPCRs; i++ {
		e.locked[i] = true
	}
	if err := e.newChain(); err != nil {
		return nil, err
	}
	return e, nil
}

// Options returns hf/nsm options that route the session to the emulator:
// pass them to attest.OpenNSM or nsm.OpenSession.
func (e *Emulator) Options() nsm.Options {
	return nsm.Options{
		Open: func() (nsm.FileDescriptor, error) {
			fd := nextFD.Add(1)
			fds.Store(fd, e)
			return &fakeFD{fd: fd}, nil
		},
		Syscall: syscallEntry,
	}
}

// Roots returns a pool holding the emulator's root certificate, for
// attest.VerifyOptions.Roots.
func (e *Emulator) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(e.root)
	return p
}

// RootPEM returns the emulator's root certificate in PEM, for files such as
// the CLI's --root.
func (e *Emulator) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.root.Raw})
}

// ModuleID returns the emulated module ID.
func (e *Emulator) ModuleID() string { return e.opts.ModuleID }

// Calls returns how many ioctls the emulator has served.
func (e *Emulator) Calls() int64 { return e.calls.Load() }

// SetPCR sets PCR index to value (48 bytes) regardless of its lock, as the
// hypervisor does when it measures the enclave image: use it to load
// PCR0..2 (and 8) from an EIF's measurements.
func (e *Emulator) SetPCR(index int, value []byte) error {
	if err := checkPCR(index, value); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pcrs[index] = append([]byte(nil), value...)
	return nil
}

// SetPCRs sets several PCRs at once, as SetPCR.
func (e *Emulator) SetPCRs(pcrs map[int][]byte) error {
	for i, v := range pcrs {
		if err := checkPCR(i, v); err != nil {
			return err
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, v := range pcrs {
		e.pcrs[i] = append([]byte(nil), v...)
	}
	return nil
}

// SetClockOffset sets the difference between the emulated NSM's time and
// Options.Clock (see Options.ClockOffset); later documents use it.
func (e *Emulator) SetClockOffset(d time.Duration) { e.offset.Store(int64(d)) }

// SetDebug switches debug mode (see Options.Debug) on or off for later
// documents.
func (e *Emulator) SetDebug(on bool) { e.debug.Store(on) }

// now is the emulated NSM's time.
func (e *Emulator) now() time.Time {
	return e.opts.Now().Add(time.Duration(e.offset.Load()))
}

// DevPCRs returns fixed, recognisable, non-zero values for PCR0..2 that
// stand in for an image's measurements in development (an emulator that
// keeps the default all-zero PCRs looks like a debug-mode enclave). Each is
// SHA-384 of "enclavekit dev emulated PCR<i>".
func DevPCRs() map[int][]byte {
	m := make(map[int][]byte, 3)
	for i := range 3 {
		h := sha512.Sum384(fmt.Appendf(nil, "enclavekit dev emulated PCR%d", i))
		m[i] = h[:]
	}
	return m
}

// PCR returns the current value of PCR index and whether it is locked.
func (e *Emulator) PCR(index int) (value []byte, locked bool) {
	if index < 0 || index >= MaxPCRs {
		return nil, false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]byte(nil), e.pcrs[index]...), e.locked[index]
}

// ---- certificates ----

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// issue is the emulator's one certificate issuer: it gives tmpl a random
// serial number and a fresh P-384 key, signs it with signerKey as signer
// (or with the new key itself, a self-signed root, when signer is nil),
// and returns the parsed certificate with its key.
func issue(tmpl, signer *x509.Certificate, signerKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = serial(); err != nil {
		return nil, nil, err
	}
	if signer == nil {
		signer, signerKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signerKey)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return c, key, nil
}

func (e *Emulator) newChain() error {
	now := e.now().UTC().Truncate(time.Second)
	n := e.opts.Intermediates
	root, key, err := issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: "nsmtest.enclavekit root", Organization: []string{"enclavekit nsmtest (NOT AWS)"}},
		NotBefore:             now.Add(-24 * time.Hour),
		NotAfter:              now.Add(30 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            n,
	}, nil, nil)
	if err != nil {
		return err
	}
	e.root, e.cas, e.caKey = root, []*x509.Certificate{root}, key
	for i := 1; i <= n; i++ {
		c, k, err := issue(&x509.Certificate{
			Subject:               pkix.Name{CommonName: fmt.Sprintf("nsmtest.enclavekit intermediate %d", i), Organization: []string{"enclavekit nsmtest (NOT AWS)"}},
			NotBefore:             now.Add(-24 * time.Hour),
			NotAfter:              now.Add(time.Duration(30-i) * 24 * time.Hour * 365),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLen:            n - i,
			MaxPathLenZero:        n-i == 0,
		}, e.cas[len(e.cas)-1], e.caKey)
		if err != nil {
			return err
		}
		e.cas, e.caKey = append(e.cas, c), k
	}
	e.cabundle = make([][]byte, len(e.cas))
	for i, c := range e.cas {
		e.cabundle[i] = c.Raw
	}
	return e.issueLeaf(now)
}

// issueLeaf issues a new signing certificate valid from now; e.mu held or
// not yet shared.
func (e *Emulator) issueLeaf(now time.Time) error {
	c, k, err := issue(&x509.Certificate{
		Subject:   pkix.Name{CommonName: e.opts.ModuleID, Organization: []string{"enclavekit nsmtest (NOT AWS)"}},
		NotBefore: now.Truncate(time.Second),
		NotAfter:  now.Truncate(time.Second).Add(e.opts.LeafValidity),
		KeyUsage:  x509.KeyUsageDigitalSignature,
	}, e.cas[len(e.cas)-1], e.caKey)
	if err != nil {
		return err
	}
	e.leaf, e.leafKey = c, k
	return nil
}

// Certificates returns the current signing certificate and the cabundle
// (root first), DER encoded, for building documents by hand in tests.
func (e *Emulator) Certificates() (leaf []byte, cabundle [][]byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.leaf.Raw, append([][]byte(nil), e.cabundle...)
}

// ---- request handling ----

var reqMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		MaxNestedLevels:   4,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// nsmError is an NSM error code, serialized as the Rust enum variant name
// (aws-nitro-enclaves-nsm-api src/api/mod.rs, Response::Error(ErrorCode)).
type nsmError string

func (e nsmError) Error() string { return string(e) }

const (
	ecInvalidArgument nsmError = "InvalidArgument"
	ecInvalidIndex    nsmError = "InvalidIndex"
	ecReadOnlyIndex   nsmError = "ReadOnlyIndex"
	ecInputTooLarge   nsmError = "InputTooLarge"
	ecInternalError   nsmError = "InternalError"
)

// handle serves one request. The wire format is serde_cbor's encoding of
// the Rust Request/Response enums: a unit variant is a text string
// ("DescribeNSM"), a struct variant a one-entry map {"Name": {fields}}.
func (e *Emulator) handle(req []byte) []byte {
	e.calls.Add(1)
	res, err := e.dispatch(req)
	if err != nil {
		var code nsmError
		if !errors.As(err, &code) {
			code = ecInternalError
		}
		res = map[string]string{"Error": string(code)}
	}
	out, err := cbor.Marshal(res)
	if err != nil {
		out, _ = cbor.Marshal(map[string]string{"Error": string(ecInternalError)})
	}
	return out
}

func (e *Emulator) dispatch(req []byte) (any, error) {
	var name string
	if err := reqMode.Unmarshal(req, &name); err == nil {
		switch name {
		case "DescribeNSM":
			return e.describeNSM(), nil
		case "GetRandom":
			b := make([]byte, 256)
			if _, err := rand.Read(b); err != nil {
				return nil, ecInternalError
			}
			return map[string]any{"GetRandom": response.GetRandom{Random: b}}, nil
		}
		return nil, ecInvalidArgument
	}
	var m map[string]cbor.RawMessage
	if err := reqMode.Unmarshal(req, &m); err != nil || len(m) != 1 {
		return nil, ecInvalidArgument
	}
	for name, body := range m {
		switch name {
		case "DescribePCR":
			var r request.DescribePCR
			if reqMode.Unmarshal(body, &r) != nil {
				return nil, ecInvalidArgument
			}
			return e.describePCR(int(r.Index))
		case "ExtendPCR":
			var r request.ExtendPCR
			if reqMode.Unmarshal(body, &r) != nil {
				return nil, ecInvalidArgument
			}
			return e.extendPCR(int(r.Index), r.Data)
		case "LockPCR":
			var r request.LockPCR
			if reqMode.Unmarshal(body, &r) != nil {
				return nil, ecInvalidArgument
			}
			return e.lockPCRs(int(r.Index), int(r.Index)+1, "LockPCR")
		case "LockPCRs":
			var r request.LockPCRs
			if reqMode.Unmarshal(body, &r) != nil {
				return nil, ecInvalidArgument
			}
			return e.lockPCRs(0, int(r.Range), "LockPCRs")
		case "Attestation":
			var r request.Attestation
			if reqMode.Unmarshal(body, &r) != nil {
				return nil, ecInvalidArgument
			}
			doc, err := e.attest(r.UserData, r.Nonce, r.PublicKey)
			if err != nil {
				return nil, err
			}
			return map[string]any{"Attestation": response.Attestation{Document: doc}}, nil
		}
	}
	return nil, ecInvalidArgument
}

func (e *Emulator) describeNSM() any {
	e.mu.Lock()
	defer e.mu.Unlock()
	locked := []uint16{}
	for i, l := range e.locked {
		if l {
			locked = append(locked, uint16(i))
		}
	}
	return map[string]any{"DescribeNSM": response.DescribeNSM{
		VersionMajor: 1, VersionMinor: 0, VersionPatch: 0,
		ModuleID: e.opts.ModuleID, MaxPCRs: MaxPCRs, LockedPCRs: locked,
		Digest: response.DigestSHA384,
	}}
}

func (e *Emulator) describePCR(i int) (any, error) {
	if i >= MaxPCRs {
		return nil, ecInvalidIndex
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return map[string]any{"DescribePCR": response.DescribePCR{Lock: e.locked[i], Data: append([]byte(nil), e.pcrs[i]...)}}, nil
}

func (e *Emulator) extendPCR(i int, data []byte) (any, error) {
	if i >= MaxPCRs {
		return nil, ecInvalidIndex
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.locked[i] {
		return nil, ecReadOnlyIndex
	}
	h := sha512.New384()
	h.Write(e.pcrs[i])
	h.Write(data)
	e.pcrs[i] = h.Sum(nil)
	return map[string]any{"ExtendPCR": response.ExtendPCR{Data: append([]byte(nil), e.pcrs[i]...)}}, nil
}

func (e *Emulator) lockPCRs(from, to int, name string) (any, error) {
	if to > MaxPCRs {
		return nil, ecInvalidIndex
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := from; i < to; i++ {
		e.locked[i] = true
	}
	return name, nil // unit variant: a bare text string
}

// ---- documents ----

func (e *Emulator) attest(userData, nonce, publicKey []byte) ([]byte, error) {
	if len(userData) > MaxFieldSize || len(nonce) > MaxFieldSize || len(publicKey) > MaxFieldSize {
		return nil, ecInputTooLarge
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now().UTC()
	if now.Before(e.leaf.NotBefore) || !now.Before(e.leaf.NotAfter) {
		if err := e.issueLeaf(now); err != nil {
			return nil, ecInternalError
		}
	}
	ms := now.UnixMilli()
	if ms <= 0 {
		return nil, ecInternalError
	}
	p := payload{
		moduleID: e.opts.ModuleID, timestamp: uint64(ms), cert: e.leaf.Raw, cabundle: e.cabundle,
		userData: userData, nonce: nonce, publicKey: publicKey,
	}
	debug := e.debug.Load()
	for i := 0; i < e.opts.DocumentPCRs; i++ {
		if debug {
			p.pcrs = append(p.pcrs, make([]byte, PCRSize))
		} else {
			p.pcrs = append(p.pcrs, e.pcrs[i])
		}
	}
	doc, err := signCOSE(e.leafKey, p.marshal(e.opts.IndefinitePayload))
	if err != nil {
		return nil, ecInternalError
	}
	return doc, nil
}

// Sign wraps an arbitrary payload in a COSE_Sign1 ES384 signed by the
// current signing certificate's key, for tests that need documents the
// emulator would never produce (wrong field types, unknown keys…).
func (e *Emulator) Sign(payload []byte) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return signCOSE(e.leafKey, payload)
}

// payload is an AttestationDoc (aws-nitro-enclaves-nsm-api src/api/mod.rs),
// encoded in the NSM's key order.
type payload struct {
	moduleID                   string
	timestamp                  uint64
	pcrs                       [][]byte
	cert                       []byte
	cabundle                   [][]byte
	publicKey, userData, nonce []byte
}

func (p *payload) marshal(indefinite bool) []byte {
	var b []byte
	if indefinite {
		b = append(b, 0xbf)
	} else {
		b = appendHead(b, 5, 9)
	}
	b = appendText(appendText(b, "module_id"), p.moduleID)
	b = appendText(appendText(b, "digest"), "SHA384")
	b = appendHead(appendText(b, "timestamp"), 0, p.timestamp)
	b = appendHead(appendText(b, "pcrs"), 5, uint64(len(p.pcrs)))
	for i, v := range p.pcrs {
		b = appendBytes(appendHead(b, 0, uint64(i)), v)
	}
	b = appendBytes(appendText(b, "certificate"), p.cert)
	b = appendHead(appendText(b, "cabundle"), 4, uint64(len(p.cabundle)))
	for _, c := range p.cabundle {
		b = appendBytes(b, c)
	}
	b = appendOptional(appendText(b, "public_key"), p.publicKey)
	b = appendOptional(appendText(b, "user_data"), p.userData)
	b = appendOptional(appendText(b, "nonce"), p.nonce)
	if indefinite {
		b = append(b, 0xff)
	}
	return b
}

// signCOSE builds COSE_Sign1 = [h'a10138 22' ({1: -35}, ES384), {}, payload,
// r‖s] over Sig_structure ["Signature1", protected, h”, payload]
// (RFC 8152 sections 4.2, 4.4 and 8.1).
func signCOSE(key *ecdsa.PrivateKey, payload []byte) ([]byte, error) {
	protected := []byte{0xa1, 0x01, 0x38, 0x22}
	var sig []byte
	sig = append(sig, 0x84)
	sig = appendText(sig, "Signature1")
	sig = appendBytes(sig, protected)
	sig = appendBytes(sig, nil)
	sig = appendBytes(sig, payload)
	digest := sha512.Sum384(sig)
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return nil, err
	}
	rs := make([]byte, 96)
	r.FillBytes(rs[:48])
	s.FillBytes(rs[48:])
	out := []byte{0x84}
	out = appendBytes(out, protected)
	out = append(out, 0xa0)
	out = appendBytes(out, payload)
	out = appendBytes(out, rs)
	return out, nil
}

// appendHead appends a CBOR head of major type mt with argument n in the
// shortest form (RFC 8949 section 3.1).
func appendHead(b []byte, mt byte, n uint64) []byte {
	mt <<= 5
	switch {
	case n < 24:
		return append(b, mt|byte(n))
	case n <= 0xff:
		return append(b, mt|24, byte(n))
	case n <= 0xffff:
		return append(b, mt|25, byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return append(b, mt|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, mt|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

func appendText(b []byte, s string) []byte { return append(appendHead(b, 3, uint64(len(s))), s...) }

func appendBytes(b, v []byte) []byte { return append(appendHead(b, 2, uint64(len(v))), v...) }

func appendOptional(b, v []byte) []byte {
	if v == nil {
		return append(b, 0xf6) // null: the Rust Option is None
	}
	return appendBytes(b, v)
}

package attest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/hf/nsm"
	"github.com/hf/nsm/request"
	"github.com/hf/nsm/response"
)

// Limits of the NSM API, enforced before a request reaches the device.
const (
	// MaxExtendData bounds ExtendPCR data so that the encoded request fits
	// the driver's 4 KiB request buffer (NSM_REQUEST_MAX_SIZE).
	MaxExtendData = 4000
)

// nsmErrors maps each ErrorCode of aws-nitro-enclaves-nsm-api
// (src/api/mod.rs, enum ErrorCode; serialized by name) to its sentinel.
// hf/nsm's response package lacks InvalidIndex, hence the literal strings.
var nsmErrors = map[response.ErrorCode]error{
	"InvalidArgument":  ErrNSMInvalidArgument,
	"InvalidIndex":     ErrNSMInvalidIndex,
	"InvalidResponse":  ErrNSMInvalidResponse,
	"ReadOnlyIndex":    ErrNSMReadOnlyIndex,
	"InvalidOperation": ErrNSMInvalidOperation,
	"BufferTooSmall":   ErrNSMBufferTooSmall,
	"InputTooLarge":    ErrNSMInputTooLarge,
	"InternalError":    ErrNSMInternal,
}

// CodeError converts an NSM error code to its sentinel error (nil for
// "Success" and the empty code, ErrNSMUnknownCode for codes it does not know).
func CodeError(code string) error {
	if code == "" || code == "Success" {
		return nil
	}
	if err, ok := nsmErrors[response.ErrorCode(code)]; ok {
		return err
	}
	return ErrNSMUnknownCode
}

// NSM is a client of the Nitro Security Module, over github.com/hf/nsm.
// It is safe for concurrent use; Close waits for calls in flight.
type NSM struct {
	mu   sync.RWMutex // held shared by calls, exclusively by Close
	sess *nsm.Session
}

var _ Attester = (*NSM)(nil)

// OpenNSM opens an NSM session with opts: nsm.DefaultOptions for /dev/nsm,
// or an emulator's (nsmtest.Emulator.Options) in tests.
func OpenNSM(opts nsm.Options) (*NSM, error) {
	if opts.Open == nil || opts.Syscall == nil {
		return nil, errors.New("attest: nsm.Options needs both Open and Syscall")
	}
	sess, err := nsm.OpenSession(opts)
	if err != nil {
		return nil, fmt.Errorf("attest: open nsm: %w", err)
	}
	return &NSM{sess: sess}, nil
}

// OpenDefaultNSM opens /dev/nsm; it works only inside a Nitro Enclave.
func OpenDefaultNSM() (*NSM, error) { return OpenNSM(nsm.DefaultOptions) }

// Close ends the session. Calls after Close return ErrNSMClosed.
func (n *NSM) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sess == nil {
		return nil
	}
	err := n.sess.Close()
	n.sess = nil
	return err
}

// send performs one request. The ioctl cannot be interrupted, so ctx is
// checked before it is issued.
func (n *NSM) send(ctx context.Context, op string, req request.Request) (response.Response, error) {
	if err := ctx.Err(); err != nil {
		return response.Response{}, fmt.Errorf("attest: nsm %s: %w", op, err)
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.sess == nil {
		return response.Response{}, fmt.Errorf("attest: nsm %s: %w", op, ErrNSMClosed)
	}
	res, err := n.sess.Send(req)
	if err != nil {
		return response.Response{}, fmt.Errorf("attest: nsm %s: %w", op, err)
	}
	if err := CodeError(string(res.Error)); err != nil {
		return response.Response{}, fmt.Errorf("attest: nsm %s: device returned %s: %w", op, res.Error, err)
	}
	return res, nil
}

func invalidResponse(op string) error {
	return fmt.Errorf("attest: nsm %s: response of the wrong kind: %w", op, ErrNSMInvalidResponse)
}

func checkIndex(op string, index int) error {
	if index < 0 || index >= MaxPCRs {
		return fmt.Errorf("attest: nsm %s: PCR index %d out of range 0..%d: %w", op, index, MaxPCRs-1, ErrNSMInvalidIndex)
	}
	return nil
}

// Attest asks the NSM for an attestation document binding req's fields,
// each at most MaxFieldSize (1024) bytes; a nil field is absent (null) in
// the document.
func (n *NSM) Attest(ctx context.Context, req Request) ([]byte, error) {
	for _, f := range []struct {
		name string
		b    []byte
	}{{"user_data", req.UserData}, {"nonce", req.Nonce}, {"public_key", req.PublicKey}} {
		if len(f.b) > MaxFieldSize {
			return nil, fmt.Errorf("attest: nsm Attestation: %s is %d bytes, limit %d: %w", f.name, len(f.b), MaxFieldSize, ErrNSMInputTooLarge)
		}
	}
	res, err := n.send(ctx, "Attestation", &request.Attestation{UserData: req.UserData, Nonce: req.Nonce, PublicKey: req.PublicKey})
	if err != nil {
		return nil, err
	}
	if res.Attestation == nil || len(res.Attestation.Document) == 0 {
		return nil, invalidResponse("Attestation")
	}
	return res.Attestation.Document, nil
}

// PCR is the state of one platform configuration register.
type PCR struct {
	Index  int
	Value  []byte
	Locked bool
}

// DescribePCR returns the value of PCR index (0..31) and whether it is locked.
func (n *NSM) DescribePCR(ctx context.Context, index int) (PCR, error) {
	if err := checkIndex("DescribePCR", index); err != nil {
		return PCR{}, err
	}
	res, err := n.send(ctx, "DescribePCR", &request.DescribePCR{Index: uint16(index)})
	if err != nil {
		return PCR{}, err
	}
	if res.DescribePCR == nil {
		return PCR{}, invalidResponse("DescribePCR")
	}
	return PCR{Index: index, Value: res.DescribePCR.Data, Locked: res.DescribePCR.Lock}, nil
}

// ExtendPCR extends PCR index with data (new = SHA-384(old ‖ data)) and
// returns the new value. A locked PCR yields ErrNSMReadOnlyIndex.
func (n *NSM) ExtendPCR(ctx context.Context, index int, data []byte) ([]byte, error) {
	if err := checkIndex("ExtendPCR", index); err != nil {
		return nil, err
	}
	if len(data) > MaxExtendData {
		return nil, fmt.Errorf("attest: nsm ExtendPCR: data is %d bytes, limit %d: %w", len(data), MaxExtendData, ErrNSMInputTooLarge)
	}
	if data == nil {
		data = []byte{}
	}
	res, err := n.send(ctx, "ExtendPCR", &request.ExtendPCR{Index: uint16(index), Data: data})
	if err != nil {
		return nil, err
	}
	if res.ExtendPCR == nil {
		return nil, invalidResponse("ExtendPCR")
	}
	return res.ExtendPCR.Data, nil
}

// LockPCR makes PCR index read-only until the enclave terminates.
func (n *NSM) LockPCR(ctx context.Context, index int) error {
	if err := checkIndex("LockPCR", index); err != nil {
		return err
	}
	res, err := n.send(ctx, "LockPCR", &request.LockPCR{Index: uint16(index)})
	if err != nil {
		return err
	}
	if res.LockPCR == nil {
		return invalidResponse("LockPCR")
	}
	return nil
}

// LockPCRs locks PCRs [0, count); count is 0..32.
func (n *NSM) LockPCRs(ctx context.Context, count int) error {
	if count < 0 || count > MaxPCRs {
		return fmt.Errorf("attest: nsm LockPCRs: range %d out of range 0..%d: %w", count, MaxPCRs, ErrNSMInvalidIndex)
	}
	res, err := n.send(ctx, "LockPCRs", &request.LockPCRs{Range: uint16(count)})
	if err != nil {
		return err
	}
	if res.LockPCRs == nil {
		return invalidResponse("LockPCRs")
	}
	return nil
}

// Description is the NSM's DescribeNSM answer.
type Description struct {
	VersionMajor, VersionMinor, VersionPatch int
	ModuleID                                 string
	MaxPCRs                                  int
	LockedPCRs                               []int // ascending
	Digest                                   string
}

// DescribeNSM returns the NSM's version, module ID and PCR configuration.
func (n *NSM) DescribeNSM(ctx context.Context) (Description, error) {
	res, err := n.send(ctx, "DescribeNSM", &request.DescribeNSM{})
	if err != nil {
		return Description{}, err
	}
	r := res.DescribeNSM
	if r == nil {
		return Description{}, invalidResponse("DescribeNSM")
	}
	d := Description{
		VersionMajor: int(r.VersionMajor), VersionMinor: int(r.VersionMinor), VersionPatch: int(r.VersionPatch),
		ModuleID: r.ModuleID, MaxPCRs: int(r.MaxPCRs), Digest: string(r.Digest),
	}
	for _, i := range r.LockedPCRs {
		d.LockedPCRs = append(d.LockedPCRs, int(i))
	}
	sort.Ints(d.LockedPCRs)
	return d, nil
}

// Read fills p with entropy from the NSM (GetRandom), so an *NSM can serve
// as an io.Reader of randomness inside the enclave.
func (n *NSM) Read(p []byte) (int, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.sess == nil {
		return 0, fmt.Errorf("attest: nsm GetRandom: %w", ErrNSMClosed)
	}
	c, err := n.sess.Read(p)
	if err != nil {
		return c, fmt.Errorf("attest: nsm GetRandom: %w", err)
	}
	return c, nil
}

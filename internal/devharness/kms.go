package devharness

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/enclavekit/enclavekit/enclave/kms"
	"github.com/enclavekit/enclavekit/enclave/kms/kmstest"
	"github.com/enclavekit/enclavekit/internal/enclaved"
	"github.com/enclavekit/enclavekit/internal/testutil"
	"github.com/enclavekit/enclavekit/parent"
	"github.com/enclavekit/enclavekit/parent/imdstest"
	"github.com/enclavekit/enclavekit/protocol"
)

// kmsEnv is the KMS side of the development system: an IMDSv2 emulator
// that serves the role credentials, a KMS emulator that accepts only those
// credentials and verifies Recipient documents against the NSM emulator's
// root, and a recorder between the parent's KMS route and the emulator
// that keeps every byte that crossed the proxy.
type kmsEnv struct {
	imds      *imdstest.Server
	kms       *kmstest.Server
	recorder  *testutil.Recorder
	good      string // key whose policy names the dev enclave's PCR0
	wrong     string // key whose policy names another PCR0
	rootsFile string
	creds     aws.Credentials // what the parent pushed (for the scan)
}

// startKMS starts the emulators and the recorder; the proxy's KMS route
// forwards to the recorder's address.
func (e *env) startKMS(tmpDir string) error {
	var err error
	k := &e.k
	if k.imds, err = imdstest.New(imdstest.Options{}); err != nil {
		return fmt.Errorf("IMDS emulator: %w", err)
	}
	c := k.imds.Credentials()
	k.kms, err = kmstest.New(kmstest.Options{
		AttestationRoots: e.emu.Roots(),
		Credentials:      aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.Token},
	})
	if err != nil {
		return fmt.Errorf("KMS emulator: %w", err)
	}
	if k.good, err = k.kms.CreateKey(kmstest.KeyOptions{Policy: kmstest.PolicyRequiringPCRs(map[int][]byte{0: e.pcrs[0]})}); err != nil {
		return fmt.Errorf("KMS emulator: %w", err)
	}
	otherPCR0 := bytes.Repeat([]byte{0xee}, 48)
	if k.wrong, err = k.kms.CreateKey(kmstest.KeyOptions{Policy: kmstest.PolicyRequiringPCRs(map[int][]byte{0: otherPCR0})}); err != nil {
		return fmt.Errorf("KMS emulator: %w", err)
	}
	k.rootsFile = filepath.Join(tmpDir, "kms-emulator-root.pem")
	if err := os.WriteFile(k.rootsFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.kms.Certificate().Raw}), 0o600); err != nil {
		return fmt.Errorf("KMS emulator: %w", err)
	}
	if k.recorder, err = testutil.NewRecorder(k.kms.Addr()); err != nil {
		return fmt.Errorf("KMS route recorder: %w", err)
	}
	return nil
}

func (k *kmsEnv) stop() {
	if k.recorder != nil {
		k.recorder.Close()
	}
	if k.kms != nil {
		k.kms.Close()
	}
	if k.imds != nil {
		k.imds.Close()
	}
}

// enclaveArgs pins the two keys in the enclave's configuration.
func (k *kmsEnv) enclaveArgs(routeAddr string) []string {
	return []string{"--kms-key", k.good, "--kms-key", k.wrong, "--kms-proxy", routeAddr, "--kms-roots", k.rootsFile}
}

// stepCredentials: the parent reads the role's credentials with the SDK's
// IMDSv2 client and pushes them into the enclave.
func (e *env) stepCredentials(ctx context.Context) (string, error) {
	// No retries here: a stopped IMDS (--kill imds) fails the step at once.
	src := &parent.IMDSCredentials{Client: imds.New(imds.Options{Endpoint: e.k.imds.URL(), Retryer: aws.NopRetryer{}})}
	creds, err := src.Retrieve(ctx)
	if err != nil {
		return "", err
	}
	if err := e.client.PushCredentials(ctx, creds); err != nil {
		return "", err
	}
	e.k.creds = creds
	tokens := 0
	for _, r := range e.k.imds.Requests() {
		if r.Method == "PUT" {
			tokens++
		}
	}
	if tokens == 0 {
		return "", errors.New("the credentials were read without an IMDSv2 session token")
	}
	return fmt.Sprintf("role %s: %s (expires %s) read with the SDK's IMDSv2 client (session token), pushed into the enclave",
		e.k.imds.Role(), creds.AccessKeyID, creds.Expires.UTC().Format(time.RFC3339)), nil
}

// stepKMS seals state in the enclave (GenerateDataKey with Recipient),
// opens it again (Decrypt of the stored CiphertextBlob), shows a key whose
// policy names another PCR0 refused, and scans everything that crossed
// the proxy and every log line for the data key and the credentials.
func (e *env) stepKMS(ctx context.Context) (string, error) {
	state := make([]byte, 48)
	rand.Read(state)
	var sealed []byte
	if err := e.client.Call(ctx, enclaved.MethodSeal, enclaved.SealRequest{App: "dev", Data: state}, &sealed); err != nil {
		return "", fmt.Errorf("sealing in the enclave (GenerateDataKey with Recipient): %w", err)
	}
	var digest []byte
	if err := e.client.Call(ctx, enclaved.MethodOpenDigest, enclaved.OpenRequest{App: "dev", Sealed: sealed}, &digest); err != nil {
		return "", fmt.Errorf("opening the sealed state in the enclave (Decrypt with Recipient): %w", err)
	}
	if want := sha256.Sum256(state); !bytes.Equal(digest, want[:]) {
		return "", errors.New("the enclave opened the sealed state to other bytes")
	}

	// A key whose policy names another PCR0.
	err := e.client.Call(ctx, enclaved.MethodSeal, enclaved.SealRequest{App: "dev", Data: state, Key: e.k.wrong}, nil)
	if !errors.Is(err, protocol.ErrUnauthenticated) {
		return "", fmt.Errorf("a key whose policy names another PCR0: %v, want a refusal", err)
	}
	if err := e.sinkLogs.wait(ctx, func(r capturedRecord) bool {
		return r.msg == "kms: call failed" && r.attrs["attrs.key"] == e.k.wrong && strings.Contains(r.attrs["attrs.err"], "access denied")
	}); err != nil {
		return "", fmt.Errorf("the enclave's log does not say why KMS refused the key for another PCR0: %w", err)
	}

	// The data key, which only the enclave and KMS may know: learn it from
	// the emulator and look for it everywhere the parent can see.
	blob, err := sealedBlob(sealed)
	if err != nil {
		return "", err
	}
	dataKey, err := e.k.kms.RevealPlaintext(blob, map[string]string{kms.EncryptionContextKey: enclaved.ExampleAppPrefix + "dev"})
	if err != nil {
		return "", fmt.Errorf("the KMS emulator cannot open the sealed blob's data key: %w", err)
	}
	crossed := e.k.recorder.Bytes()
	secrets := map[string][]byte{
		"the data key":          dataKey,
		"the sealed state":      state,
		"the secret access key": []byte(e.k.creds.SecretAccessKey),
		"the session token":     []byte(e.k.creds.SessionToken),
	}
	places := map[string]string{
		"the enclave's console": e.enclaveOut.String(),
		"the log sink":          e.sinkLogs.dump(),
		"the proxy's log":       e.proxyLogs.dump(),
	}
	for what, s := range secrets {
		for _, form := range [][]byte{s, []byte(hex.EncodeToString(s)), []byte(base64.StdEncoding.EncodeToString(s))} {
			if bytes.Contains(crossed, form) {
				return "", fmt.Errorf("%s crossed the parent's proxy", what)
			}
			for where, text := range places {
				if strings.Contains(text, string(form)) {
					return "", fmt.Errorf("%s reached %s", what, where)
				}
			}
		}
	}
	for _, x := range e.k.kms.Exchanges() {
		if bytes.Contains(x.Response, []byte(`"Plaintext"`)) {
			return "", fmt.Errorf("KMS answered %s with a Plaintext field", x.Operation)
		}
	}
	return fmt.Sprintf("GenerateDataKey with Recipient sealed %d bytes; Decrypt of the stored CiphertextBlob opened them (SHA-256 matches)\n"+
		"      a key whose policy names another PCR0: refused by KMS, and the enclave's log says access denied\n"+
		"      %d bytes crossed the proxy to KMS: no data key, state or credential in them, nor in any log line",
		len(state), len(crossed)), nil
}

// sealedBlob returns the KMS CiphertextBlob from a blob kms.Client.Seal
// wrote ("EKSEAL\x00\x01", then three u16-length-prefixed fields: the
// application, the key ARN, the CiphertextBlob).
func sealedBlob(sealed []byte) ([]byte, error) {
	b, ok := bytes.CutPrefix(sealed, []byte("EKSEAL\x00\x01"))
	var field []byte
	for i := 0; ok && i < 3; i++ {
		if len(b) < 2 || int(binary.BigEndian.Uint16(b)) > len(b)-2 {
			ok = false
			break
		}
		n := int(binary.BigEndian.Uint16(b))
		field, b = b[2:2+n], b[2+n:]
	}
	if !ok {
		return nil, errors.New("the enclave's sealed blob is not in the documented format")
	}
	return field, nil
}

// dump returns every record as text, for scanning.
func (h *logStore) dump() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var b strings.Builder
	for _, r := range h.records {
		b.WriteString(r.msg)
		for k, v := range r.attrs {
			b.WriteString(" " + k + "=" + v)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

package kms

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/enclave/kms/internal/awsid"
	"github.com/enclavekit/enclavekit/transport"
)

// ErrConfig is wrapped by every configuration error of the package: those
// of Config.Validate, and so of New.
var ErrConfig = errors.New("kms: bad configuration")

// Defaults and limits of Config.
const (
	// DefaultProxyAddr is the parent's egress route to KMS, as AWS's
	// vsock-proxy convention numbers it.
	DefaultProxyAddr = "vsock://3:8000"
	// DefaultCallTimeout bounds one call, retries included.
	DefaultCallTimeout = 30 * time.Second
	// DefaultMaxAttempts is the SDK's attempts per call.
	DefaultMaxAttempts = 3
	// MaxAttemptsLimit bounds MaxAttempts.
	MaxAttemptsLimit = 10
	// DefaultRecipientKeyLifetime is how long one recipient key serves
	// before a fresh one is generated.
	DefaultRecipientKeyLifetime = 5 * time.Minute
	// MaxRecipientKeyLifetime bounds RecipientKeyLifetime.
	MaxRecipientKeyLifetime = time.Hour
	// RecipientKeyBits is the size of the RSA recipient key; KMS accepts
	// RSA-2048 for RSAES_OAEP_SHA_256.
	RecipientKeyBits = 2048
	// MaxKeys bounds the pinned keys.
	MaxKeys = 64
)

// Config configures a Client. Keys, Credentials and Attester are
// required; every other zero field takes the default documented on it.
// What the enclave trusts (the keys, and so
// the account and region) belongs in the enclave's measured image: set
// Keys from flags or a file inside the image, never from anything the
// parent sends.
type Config struct {
	// Keys are the ARNs of the only KMS keys the client uses
	// (arn:aws:kms:REGION:ACCOUNT:key/ID), at least one, at most MaxKeys,
	// all in one region. A request naming another key is refused before it
	// is sent, and an answer naming another key is refused: without this,
	// a parent that supplies credentials of its own account could answer
	// with a key it can decrypt with. The region of the keys selects the
	// endpoint kms.REGION.amazonaws.com, the TLS server name verified and
	// the SigV4 scope. Aliases are not accepted: an alias is resolved in
	// the account of the credentials, which the parent controls.
	Keys []string

	// ProxyAddr is the transport address of the parent's egress route to
	// KMS; every connection dials it, whatever host the request names.
	// The route must forward to kms.REGION.amazonaws.com:443. TLS runs
	// through it, end to end between the enclave and KMS. "" means
	// DefaultProxyAddr ("vsock://3:8000"); "tcp://127.0.0.1:PORT" in tests.
	ProxyAddr string

	// RootCAs verifies KMS's TLS certificate inside the enclave. nil means
	// the Mozilla roots compiled into the binary from
	// golang.org/x/crypto/x509roots/fallback (an enclave has no CA store).
	// Tests set the emulator's pool.
	RootCAs *x509.CertPool

	// Credentials sign requests (required): a *CredentialStore filled by
	// the parent's credential push, or a static provider in tests. They
	// are never logged.
	Credentials aws.CredentialsProvider

	// Attester produces the attestation documents that carry the recipient
	// public key (required): the NSM in an enclave, the emulator in tests.
	Attester attest.Attester

	// Logger receives one line per call (operation, key, sizes, duration,
	// error); never key material, plaintext, credentials or documents.
	// nil means slog.Default().
	Logger *slog.Logger

	// CallTimeout bounds each call, retries included, when the caller's
	// context has no earlier deadline. 0 means DefaultCallTimeout (30s).
	CallTimeout time.Duration

	// MaxAttempts is the SDK's attempts per call, 1..MaxAttemptsLimit (1
	// means no retries). 0 means DefaultMaxAttempts (3).
	MaxAttempts int

	// RecipientKeyLifetime is how long one RSA recipient key (and so the
	// public key in the attestation documents) is reused; each call still
	// gets a fresh document. At most MaxRecipientKeyLifetime (1h); 0 means
	// DefaultRecipientKeyLifetime (5m). The private key never leaves memory.
	RecipientKeyLifetime time.Duration
}

// keyARN is a parsed key ARN.
type keyARN struct {
	partition, region, account, id string
}

// parseKeyARN accepts arn:PARTITION:kms:REGION:ACCOUNT:key/ID.
func parseKeyARN(s string) (keyARN, bool) {
	p := strings.Split(s, ":")
	if len(p) != 6 || p[0] != "arn" || p[2] != "kms" {
		return keyARN{}, false
	}
	id, ok := strings.CutPrefix(p[5], "key/")
	k := keyARN{partition: p[1], region: p[3], account: p[4], id: id}
	if !ok || !validPartition(k.partition) || !awsid.Region(k.region) || !awsid.Account(k.account) || !validKeyID(k.id) {
		return keyARN{}, false
	}
	return k, true
}

func validPartition(s string) bool {
	return s == "aws" || s == "aws-cn" || s == "aws-us-gov"
}

// validKeyID accepts a key ID: a UUID in lower-case hex, or "mrk-" and 32
// hex digits for a multi-Region key.
func validKeyID(s string) bool {
	if h, ok := strings.CutPrefix(s, "mrk-"); ok {
		return len(h) == 32 && isHex(h)
	}
	if len(s) != 36 {
		return false
	}
	for i, part := range strings.Split(s, "-") {
		if len(part) != []int{8, 4, 4, 4, 12}[min(i, 4)] || i > 4 || !isHex(part) {
			return false
		}
	}
	return true
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'f' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// endpointHost is the KMS endpoint of region in partition: the host the
// TLS certificate must name.
func endpointHost(partition, region string) string {
	if partition == "aws-cn" {
		return "kms." + region + ".amazonaws.com.cn"
	}
	return "kms." + region + ".amazonaws.com"
}

// Validate reports the first invalid field, naming it, its value and what
// is accepted; the error wraps ErrConfig. The errors about the key list
// name a key by its value ("KMS key ... is an alias"), as enclaved's
// --kms-key shows them.
func (c Config) Validate() error {
	_, _, err := c.region()
	return err
}

// region checks c and returns the partition and region of its keys.
func (c Config) region() (partition, region string, err error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	// field reports a field whose value is not accepted, in the form the
	// module's packages share: "Config.F is V, why".
	field := func(name string, v any, why string, args ...any) error {
		return bad("%s is %v, %s", name, v, fmt.Sprintf(why, args...))
	}
	if len(c.Keys) == 0 {
		return "", "", bad("Config.Keys is empty, no KMS key: pin at least one key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID) in the enclave image")
	}
	if len(c.Keys) > MaxKeys {
		return "", "", bad("Config.Keys holds %d KMS keys, above MaxKeys: want at most %d", len(c.Keys), MaxKeys)
	}
	for _, s := range c.Keys {
		k, ok := parseKeyARN(s)
		if !ok {
			if strings.HasPrefix(s, "alias/") || strings.Contains(s, ":alias/") {
				return "", "", bad("KMS key %q is an alias; pin the key ARN (aliases resolve in the account of the credentials, which the parent controls)", s)
			}
			return "", "", bad("KMS key %q is not a key ARN; want arn:aws:kms:REGION:ACCOUNT:key/ID", s)
		}
		if region == "" {
			region, partition = k.region, k.partition
		} else if k.region != region || k.partition != partition {
			return "", "", bad("KMS keys %q and %q are in different regions; one client serves one region", c.Keys[0], s)
		}
	}
	if c.ProxyAddr != "" {
		if _, err := transport.ParseAddr(c.ProxyAddr); err != nil {
			return "", "", bad("Config.ProxyAddr, the KMS proxy address: %v", err)
		}
	}
	if c.Credentials == nil {
		return "", "", bad("Config.Credentials is nil, no credentials provider (the parent pushes credentials into a CredentialStore)")
	}
	if c.Attester == nil {
		return "", "", bad("Config.Attester is nil, no attester (the NSM in an enclave)")
	}
	if c.CallTimeout < 0 {
		return "", "", field("Config.CallTimeout", c.CallTimeout, "negative (0 means the default, %v)", DefaultCallTimeout)
	}
	if c.MaxAttempts < 0 || c.MaxAttempts > MaxAttemptsLimit {
		return "", "", field("Config.MaxAttempts", c.MaxAttempts, "outside 1..%d (0 means the default, %d)", MaxAttemptsLimit, DefaultMaxAttempts)
	}
	if c.RecipientKeyLifetime < 0 || c.RecipientKeyLifetime > MaxRecipientKeyLifetime {
		return "", "", field("Config.RecipientKeyLifetime", c.RecipientKeyLifetime, "outside 0..%v (0 means the default, %v)", MaxRecipientKeyLifetime, DefaultRecipientKeyLifetime)
	}
	return partition, region, nil
}

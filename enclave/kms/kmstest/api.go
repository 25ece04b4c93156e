package kmstest

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"testing"
)

// NewServer starts an emulator for the test t and closes it when the test
// ends; it fails the test if opts are not valid.
func NewServer(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// KeyOptions describe a key for Server.CreateKey.
type KeyOptions struct {
	// KeySpec is "SYMMETRIC_DEFAULT" (the default) or, for key agreement,
	// "ECC_NIST_P256", "ECC_NIST_P384" or "ECC_NIST_P521".
	KeySpec string

	// KeyUsage is "ENCRYPT_DECRYPT" (the default, for SYMMETRIC_DEFAULT)
	// or "KEY_AGREEMENT" (required for the ECC key specs).
	KeyUsage string

	// Policy is the key policy document (JSON). Empty means KMS's default
	// key policy, which allows everything. See PolicyRequiringPCRs.
	Policy string

	// Description is free text.
	Description string
}

// CreateKey creates a key directly, without a request over the wire, and
// returns its ARN. It applies the same checks as the CreateKey operation.
func (s *Server) CreateKey(o KeyOptions) (string, error) {
	k, e := s.createKey(createKeyRequest{KeySpec: o.KeySpec, KeyUsage: o.KeyUsage, Policy: o.Policy, Description: o.Description})
	if e != nil {
		return "", fmt.Errorf("kmstest: creating a key: %s", e.Message)
	}
	return k.arn, nil
}

// SetKeyPolicy replaces the policy of the key keyID (key ID or ARN);
// an empty policy restores the default key policy (everything allowed).
func (s *Server) SetKeyPolicy(keyID, policyJSON string) error {
	k, e := s.lookup(keyID)
	if e != nil {
		return fmt.Errorf("kmstest: %s", e.Message)
	}
	var p *policy
	if policyJSON != "" {
		var err error
		if p, err = parsePolicy(policyJSON); err != nil {
			return fmt.Errorf("kmstest: %w", err)
		}
	}
	s.mu.Lock()
	k.policy = p
	s.mu.Unlock()
	return nil
}

// CheckPolicy reports whether the emulator can evaluate the key policy
// document (for example one a tool generated): the same check CreateKey
// applies.
func CheckPolicy(policyJSON string) error {
	if _, err := parsePolicy(policyJSON); err != nil {
		return fmt.Errorf("kmstest: %w", err)
	}
	return nil
}

// PolicyRequiringPCRs returns a key policy that allows, without
// conditions, Encrypt, GetPublicKey, DescribeKey and the key
// administration actions (for test fixtures), and allows Decrypt,
// GenerateDataKey, GenerateDataKeyPair and DeriveSharedSecret only to a
// request whose Recipient attestation document carries every PCR in pcrs
// (index → value; PCR0 is written as kms:RecipientAttestation:ImageSha384,
// the others as kms:RecipientAttestation:PCR<n>, compared without case). A
// request without a Recipient is refused those actions, as a parent
// holding the instance role's credentials would be.
//
// It panics if pcrs is empty or holds an index outside 0..31: a policy
// that requires nothing would make a test pass for the wrong reason.
func PolicyRequiringPCRs(pcrs map[int][]byte) string {
	if len(pcrs) == 0 {
		panic("kmstest: PolicyRequiringPCRs needs at least one PCR")
	}
	idx := make([]int, 0, len(pcrs))
	for i := range pcrs {
		if i < 0 || i > 31 {
			panic("kmstest: PolicyRequiringPCRs: PCR index " + strconv.Itoa(i) + " is outside 0..31")
		}
		idx = append(idx, i)
	}
	slices.Sort(idx)
	cond := map[string]string{}
	for _, i := range idx {
		k := CondPCRPrefix + strconv.Itoa(i)
		if i == 0 {
			k = CondImageSha384
		}
		cond[k] = hex.EncodeToString(pcrs[i])
	}
	type statement struct {
		Sid       string                       `json:"Sid"`
		Effect    string                       `json:"Effect"`
		Principal map[string]string            `json:"Principal"`
		Action    []string                     `json:"Action"`
		Resource  string                       `json:"Resource"`
		Condition map[string]map[string]string `json:"Condition,omitempty"`
	}
	doc := struct {
		Version   string      `json:"Version"`
		Statement []statement `json:"Statement"`
	}{
		Version: "2012-10-17",
		Statement: []statement{
			{
				Sid: "Key administration and fixtures", Effect: "Allow",
				Principal: map[string]string{"AWS": "arn:aws:iam::" + DefaultAccount + ":root"},
				Action:    []string{"kms:Create*", "kms:Describe*", "kms:Put*", "kms:Encrypt", "kms:GetPublicKey"},
				Resource:  "*",
			},
			{
				Sid: "Measured enclave only", Effect: "Allow",
				Principal: map[string]string{"AWS": "arn:aws:iam::" + DefaultAccount + ":role/enclave-instance"},
				Action:    []string{"kms:Decrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyPair", "kms:DeriveSharedSecret"},
				Resource:  "*",
				Condition: map[string]map[string]string{"StringEqualsIgnoreCase": cond},
			},
		},
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		panic(err)
	}
	return string(b)
}

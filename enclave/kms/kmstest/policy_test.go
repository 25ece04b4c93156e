package kmstest

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestPolicy(t *testing.T) {
	const pcr0 = "aa"
	doc := `{"Version":"2012-10-17","Statement":[
	  {"Sid":"all","Effect":"Allow","Action":"kms:Encrypt"},
	  {"Sid":"enclave","Effect":"Allow","Action":["kms:Decrypt","kms:Generate*"],
	   "Condition":{"StringEqualsIgnoreCase":{"kms:RecipientAttestation:ImageSha384":["AA","bb"],"kms:RecipientAttestation:PCR8":"cc"}}},
	  {"Sid":"nope","Effect":"Deny","Action":"kms:GenerateRandom"}]}`
	p, err := parsePolicy(doc)
	if err != nil {
		t.Fatal(err)
	}
	good := map[string]string{"kms:recipientattestation:imagesha384": pcr0, "kms:recipientattestation:pcr8": "cc"}
	tests := []struct {
		name   string
		action string
		ctx    map[string]string
		want   bool
	}{
		{"encrypt needs nothing", "kms:Encrypt", nil, true},
		{"decrypt with matching document", "kms:Decrypt", good, true},
		{"action match is case-insensitive", "KMS:decrypt", good, true},
		{"wildcard action", "kms:GenerateDataKey", good, true},
		{"explicit deny wins", "kms:GenerateRandom", good, false},
		{"no document", "kms:Decrypt", nil, false},
		{"wrong PCR0", "kms:Decrypt", map[string]string{"kms:recipientattestation:imagesha384": "ab", "kms:recipientattestation:pcr8": "cc"}, false},
		{"missing PCR8", "kms:Decrypt", map[string]string{"kms:recipientattestation:imagesha384": pcr0}, false},
		{"unlisted action", "kms:CreateKey", good, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, why := p.allows(tt.action, tt.ctx); got != tt.want {
				t.Fatalf("Allows(%s) = %v (%s), want %v", tt.action, got, why, tt.want)
			}
		})
	}
	var none *policy
	if ok, _ := none.allows("kms:Decrypt", nil); !ok {
		t.Fatal("the default policy must allow")
	}
}

func TestParsePolicyRefuses(t *testing.T) {
	tests := map[string]string{
		"not json":                `{`,
		"old version":             `{"Version":"2008-10-17","Statement":{"Effect":"Allow","Action":"kms:*"}}`,
		"no statement":            `{"Version":"2012-10-17"}`,
		"bad effect":              `{"Version":"2012-10-17","Statement":{"Effect":"Maybe","Action":"kms:*"}}`,
		"NotAction":               `{"Version":"2012-10-17","Statement":{"Effect":"Allow","NotAction":"kms:*"}}`,
		"other service":           `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*"}}`,
		"operator":                `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Condition":{"StringLike":{"kms:RecipientAttestation:PCR0":"a*"}}}}`,
		"unknown key":             `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Condition":{"StringEquals":{"kms:EncryptionContext:a":"b"}}}}`,
		"PCR out of range":        `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Condition":{"StringEquals":{"kms:RecipientAttestation:PCR32":"b"}}}}`,
		"NotResource":             `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","NotResource":"*"}}`,
		"IfExists":                `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Condition":{"StringEqualsIfExists":{"kms:RecipientAttestation:PCR0":"aa"}}}}`,
		"ForAnyValue":             `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Condition":{"ForAnyValue:StringEquals":{"kms:RecipientAttestation:PCR0":"aa"}}}}`,
		"empty operator":          `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Condition":{"StringEquals":{}}}}`,
		"duplicate Condition":     `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Condition":{"StringEquals":{"kms:RecipientAttestation:PCR0":"aa"}},"Condition":{}}}`,
		"Condition twice by case": `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Condition":{"StringEquals":{"kms:RecipientAttestation:PCR0":"aa"}},"condition":{}}}`,
		"duplicate operator":      `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Condition":{"StringEquals":{"kms:RecipientAttestation:PCR0":"aa"},"StringEquals":{"kms:RecipientAttestation:PCR1":"bb"}}}}`,
		"number value":            `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Condition":{"StringEquals":{"kms:RecipientAttestation:PCR0":1}}}}`,
		"trailing data":           `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*"}} {}`,
		"too deep":                `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Principal":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}}`,
		"too large":               `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Sid":"` + strings.Repeat("a", MaxPolicyBytes) + `"}}`,
		"PCR leading zero":        `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Condition":{"StringEquals":{"kms:RecipientAttestation:PCR01":"b"}}}}`,
		"empty values":            `{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"kms:*","Condition":{"StringEquals":{"kms:RecipientAttestation:PCR1":[]}}}}`,
	}
	for name, doc := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := parsePolicy(doc)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, goName := range []string{"Go ", "json:", "statementJSON", "policyJSON", "map[", "RawMessage"} {
				if strings.Contains(err.Error(), goName) {
					t.Fatalf("message names a Go type: %v", err)
				}
			}
		})
	}
}

func TestParseAuthorization(t *testing.T) {
	sig := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		name string
		h    string
		ok   bool
	}{
		{"valid", "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + sig, true},
		{"other algorithm", "AWS4-ECDSA-P256-SHA256 Credential=AKID/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=" + sig, false},
		{"short scope", "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/kms, SignedHeaders=host, Signature=" + sig, false},
		{"duplicate", "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, SignedHeaders=host, Signature=" + sig, false},
		{"short signature", "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=abcd", false},
		{"missing signature", "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/kms/aws4_request, SignedHeaders=host", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseAuthorization(tt.h); (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// PolicyRequiringPCRs writes a policy the emulator evaluates: Encrypt for
// anyone, Decrypt only with every given PCR, compared without case.
func TestPolicyRequiringPCRs(t *testing.T) {
	pcr0, pcr8 := make([]byte, 48), make([]byte, 48)
	pcr0[0], pcr8[0] = 0xab, 0xcd
	doc := PolicyRequiringPCRs(map[int][]byte{0: pcr0, 8: pcr8})
	if !json.Valid([]byte(doc)) || !strings.Contains(doc, CondImageSha384) || !strings.Contains(doc, CondPCRPrefix+"8") {
		t.Fatalf("policy %s", doc)
	}
	p, err := parsePolicy(doc)
	if err != nil {
		t.Fatal(err)
	}
	hex0, hex8 := "ab"+strings.Repeat("00", 47), "cd"+strings.Repeat("00", 47)
	tests := []struct {
		name   string
		action string
		ctx    map[string]string
		want   bool
	}{
		{"encrypt", "kms:Encrypt", nil, true},
		{"decrypt with both", "kms:Decrypt", map[string]string{"kms:recipientattestation:imagesha384": hex0, "kms:recipientattestation:pcr8": hex8}, true},
		{"upper-case hex", "kms:GenerateDataKey", map[string]string{"kms:recipientattestation:imagesha384": strings.ToUpper(hex0), "kms:recipientattestation:pcr8": hex8}, true},
		{"PCR8 missing", "kms:Decrypt", map[string]string{"kms:recipientattestation:imagesha384": hex0}, false},
		{"no document", "kms:DeriveSharedSecret", nil, false},
		{"other action", "kms:ScheduleKeyDeletion", map[string]string{"kms:recipientattestation:imagesha384": hex0, "kms:recipientattestation:pcr8": hex8}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, why := p.allows(tt.action, tt.ctx); got != tt.want {
				t.Fatalf("allows(%s) = %v (%s), want %v", tt.action, got, why, tt.want)
			}
		})
	}
}

// Request decoding errors are for people: no Go type names.
func TestDecodeRequestMessages(t *testing.T) {
	tests := []struct {
		body, want string
	}{
		{`{"NumberOfBytes":"x"}`, "member NumberOfBytes has the wrong type"},
		{`{"Recipient":{"AttestationDocument":5}}`, "member Recipient.AttestationDocument has the wrong type"},
		{`{"Recipient":{"AttestationDocument":"!!"}}`, "not valid base64"},
		{`{"KeyId":`, "ends too early"},
		{`{"KeyId":x}`, "not valid JSON"},
		{`[]`, "not a JSON object"},
		{``, "empty body"},
		{`{"KeyId":"a","keyid":"b"}`, "appears twice"},
		{`{} {}`, "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			var req generateRandomRequest
			var req2 decryptRequest
			err := decodeRequest([]byte(tt.body), &req)
			if e2 := decodeRequest([]byte(tt.body), &req2); err == nil {
				err = e2
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

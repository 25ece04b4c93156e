package kms

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/enclavekit/enclavekit/attest"
)

type fakeAttester struct{}

func (fakeAttester) Attest(context.Context, attest.Request) ([]byte, error) { return nil, nil }

var staticCreds = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: "AKIDEXAMPLE00000", SecretAccessKey: "x"}, nil
})

const (
	arnA = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	arnB = "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"
)

func TestConfigValidate(t *testing.T) {
	good := Config{Keys: []string{arnA}, Credentials: staticCreds, Attester: fakeAttester{}}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string // substring of the error; "" means valid
	}{
		{"minimal", func(*Config) {}, ""},
		{"two keys one region", func(c *Config) { c.Keys = []string{arnA, arnB} }, ""},
		{"china partition", func(c *Config) {
			c.Keys = []string{"arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}
		}, ""},
		{"tcp proxy", func(c *Config) { c.ProxyAddr = "tcp://127.0.0.1:8000" }, ""},
		{"no keys", func(c *Config) { c.Keys = nil }, "pin at least one key ARN"},
		{"alias", func(c *Config) { c.Keys = []string{"alias/app"} }, "is an alias"},
		{"alias ARN", func(c *Config) { c.Keys = []string{"arn:aws:kms:eu-west-1:111122223333:alias/app"} }, "is an alias"},
		{"bare key id", func(c *Config) { c.Keys = []string{"1234abcd-12ab-34cd-56ef-1234567890ab"} }, "is not a key ARN"},
		{"upper-case key id", func(c *Config) { c.Keys = []string{strings.ToUpper(arnA[len(arnA)-36:])} }, "is not a key ARN"},
		{"short account", func(c *Config) { c.Keys = []string{strings.Replace(arnA, "111122223333", "1111", 1)} }, "is not a key ARN"},
		{"other service", func(c *Config) { c.Keys = []string{strings.Replace(arnA, ":kms:", ":s3:", 1)} }, "is not a key ARN"},
		{"two regions", func(c *Config) { c.Keys = []string{arnA, strings.Replace(arnA, "eu-west-1", "us-east-1", 1)} }, "different regions"},
		{"too many", func(c *Config) { c.Keys = make([]string, MaxKeys+1) }, "at most 64"},
		{"bad proxy", func(c *Config) { c.ProxyAddr = "http://x" }, "proxy address"},
		{"no credentials", func(c *Config) { c.Credentials = nil }, "no credentials"},
		{"no attester", func(c *Config) { c.Attester = nil }, "no attester"},
		{"negative timeout", func(c *Config) { c.CallTimeout = -1 }, "negative"},
		{"attempts", func(c *Config) { c.MaxAttempts = 11 }, "outside 1..10"},
		{"lifetime", func(c *Config) { c.RecipientKeyLifetime = 2 * MaxRecipientKeyLifetime }, "outside 0..1h0m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.mutate(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want ErrConfig containing %q", err, tc.want)
			}
		})
	}
}

func TestEndpointFromPinnedRegion(t *testing.T) {
	for arn, want := range map[string]string{
		arnA: "kms.eu-west-1.amazonaws.com",
		"arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab": "kms.cn-north-1.amazonaws.com.cn",
	} {
		c, err := New(Config{Keys: []string{arn}, Credentials: staticCreds, Attester: fakeAttester{}})
		if err != nil {
			t.Fatal(err)
		}
		if c.Endpoint() != want || c.tr.TLSClientConfig.ServerName != want {
			t.Errorf("%s: endpoint %q, TLS name %q; want %q", arn, c.Endpoint(), c.tr.TLSClientConfig.ServerName, want)
		}
	}
}

func TestArgumentChecks(t *testing.T) {
	c, err := New(Config{Keys: []string{arnA}, Credentials: staticCreds, Attester: fakeAttester{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	other := strings.Replace(arnA, "1234abcd-", "9999abcd-", 1)
	for _, tc := range []struct {
		name string
		call func() error
		want error
	}{
		{"decrypt empty", func() error { _, err := c.Decrypt(ctx, DecryptInput{KeyID: arnA}); return err }, ErrInput},
		{"decrypt unpinned", func() error {
			_, err := c.Decrypt(ctx, DecryptInput{KeyID: other, CiphertextBlob: []byte{1}})
			return err
		}, ErrKeyNotPinned},
		{"decrypt without key", func() error { _, err := c.Decrypt(ctx, DecryptInput{CiphertextBlob: []byte{1}}); return err }, ErrKeyNotPinned},
		{"data key size", func() error {
			_, err := c.GenerateDataKey(ctx, GenerateDataKeyInput{KeyID: arnA, NumberOfBytes: 1025})
			return err
		}, ErrInput},
		{"data key unpinned", func() error { _, err := c.GenerateDataKey(ctx, GenerateDataKeyInput{KeyID: other}); return err }, ErrKeyNotPinned},
		{"key pair spec", func() error {
			_, err := c.GenerateDataKeyPair(ctx, GenerateDataKeyPairInput{KeyID: arnA, Spec: "RSA_1024"})
			return err
		}, ErrInput},
		{"random 0", func() error { _, err := c.GenerateRandom(ctx, 0); return err }, ErrInput},
		{"random 1025", func() error { _, err := c.GenerateRandom(ctx, 1025); return err }, ErrInput},
		{"shared secret no key", func() error {
			_, err := c.DeriveSharedSecret(ctx, DeriveSharedSecretInput{KeyID: arnA})
			return err
		}, ErrInput},
		{"seal no app", func() error { _, err := c.Seal(ctx, arnA, "", nil); return err }, ErrInput},
		{"open garbage", func() error { _, err := c.Open(ctx, "app", []byte("garbage")); return err }, ErrSealed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

package imdstest_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/enclavekit/enclavekit/parent/imdstest"
)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// client is the real SDK IMDS client, IMDSv2 only (no fallback).
func client(s *imdstest.Server) *imds.Client {
	return imds.New(imds.Options{Endpoint: s.URL(), EnableFallback: aws.FalseTernary})
}

// credsDoc is the role credentials document as a consumer reads it.
type credsDoc struct {
	Code, LastUpdated, Type, AccessKeyId, SecretAccessKey, Token, Expiration string
}

func getCreds(t *testing.T, c *imds.Client, role string) credsDoc {
	t.Helper()
	out, err := c.GetMetadata(context.Background(), &imds.GetMetadataInput{Path: "iam/security-credentials/" + role})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Content.Close()
	var d credsDoc
	dec := json.NewDecoder(out.Content)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

func getText(t *testing.T, c *imds.Client, path string) string {
	t.Helper()
	out, err := c.GetMetadata(context.Background(), &imds.GetMetadataInput{Path: path})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The SDK's client reads the role, its credentials (in the documented
// shape, times in RFC 3339), the region and the identity document; a
// rotation and a new expiration show on the next read.
func TestSDKClient(t *testing.T) {
	clk := &clock{now: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	s := imdstest.NewServer(t, imdstest.Options{Region: "eu-central-1", Now: clk.Now})
	c := client(s)
	ctx := context.Background()

	if role := getText(t, c, "iam/security-credentials/"); role != imdstest.DefaultRole {
		t.Fatalf("role %q", role)
	}
	d := getCreds(t, c, s.Role())
	want := s.Credentials()
	exp, err := time.Parse(time.RFC3339, d.Expiration)
	if err != nil {
		t.Fatal(err)
	}
	upd, err := time.Parse(time.RFC3339, d.LastUpdated)
	if err != nil {
		t.Fatal(err)
	}
	if d.Code != "Success" || d.Type != "AWS-HMAC" || d.AccessKeyId != want.AccessKeyID || d.SecretAccessKey != want.SecretAccessKey ||
		d.Token != want.Token || !exp.Equal(want.Expiration) || !exp.Equal(clk.Now().Add(imdstest.DefaultCredentialLifetime)) || !upd.Equal(clk.Now()) ||
		!strings.HasPrefix(d.AccessKeyId, "ASIA") || len(d.AccessKeyId) != 20 || len(d.SecretAccessKey) != 40 {
		t.Fatalf("credentials document %+v", d)
	}
	if strings.Contains(want.String(), want.SecretAccessKey) || strings.Contains(want.String(), want.Token) {
		t.Fatal("Credentials.String shows a secret")
	}

	region, err := c.GetRegion(ctx, &imds.GetRegionInput{})
	if err != nil || region.Region != "eu-central-1" {
		t.Fatalf("GetRegion: %v %v", region, err)
	}
	iid, err := c.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
	if err != nil || iid.Region != "eu-central-1" || iid.AccountID != imdstest.DefaultAccountID || iid.AvailabilityZone != "eu-central-1a" ||
		iid.InstanceID != imdstest.DefaultInstanceID {
		t.Fatalf("identity document: %+v %v", iid, err)
	}
	info, err := c.GetIAMInfo(ctx, &imds.GetIAMInfoInput{})
	if err != nil || info.Code != "Success" || !strings.HasSuffix(info.InstanceProfileArn, ":instance-profile/"+imdstest.DefaultRole) {
		t.Fatalf("GetIAMInfo: %+v %v", info, err)
	}
	if got := getText(t, c, "placement/availability-zone"); got != "eu-central-1a" {
		t.Fatalf("zone %q", got)
	}

	clk.Add(time.Hour)
	rotated := s.Rotate()
	d2 := getCreds(t, c, s.Role())
	if rotated == want || d2.AccessKeyId != rotated.AccessKeyID || d2.SecretAccessKey != rotated.SecretAccessKey || d2.Token != rotated.Token {
		t.Fatalf("after Rotate: %+v", d2)
	}
	if d2.LastUpdated != clk.Now().Format(time.RFC3339) {
		t.Fatalf("LastUpdated %s after Rotate at %s", d2.LastUpdated, clk.Now())
	}
	past := clk.Now().Add(-time.Minute)
	s.SetExpiration(past)
	if d3 := getCreds(t, c, s.Role()); d3.Expiration != past.Format(time.RFC3339) || d3.AccessKeyId != rotated.AccessKeyID {
		t.Fatalf("after SetExpiration: %+v", d3)
	}
	fixed := imdstest.Credentials{AccessKeyID: "ASIAFIXED00000000000", SecretAccessKey: "s", Token: "t", Expiration: clk.Now().Add(time.Hour)}
	s.SetCredentials(fixed)
	if d4 := getCreds(t, c, s.Role()); d4.AccessKeyId != fixed.AccessKeyID || d4.Token != "t" {
		t.Fatalf("after SetCredentials: %+v", d4)
	}
}

// Tokens expire at their TTL and with ExpireTokens; the SDK client fetches
// a new one after a 401 and carries on.
func TestTokenExpiry(t *testing.T) {
	clk := &clock{now: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)}
	s := imdstest.NewServer(t, imdstest.Options{Now: clk.Now})
	c := client(s)
	getText(t, c, "instance-id")
	s.ExpireTokens()
	if got := getText(t, c, "instance-id"); got != imdstest.DefaultInstanceID {
		t.Fatalf("instance-id %q", got)
	}
	puts, unauthorized := 0, 0
	for _, r := range s.Requests() {
		if r.Method == http.MethodPut {
			puts++
		}
		if r.Status == http.StatusUnauthorized {
			unauthorized++
		}
	}
	if puts != 2 || unauthorized != 1 {
		t.Fatalf("%d token requests, %d refusals; log %+v", puts, unauthorized, s.Requests())
	}

	// A raw token dies at its TTL.
	tok := putToken(t, s, "60", nil)
	if st := get(t, s, "/latest/meta-data/instance-id", tok); st != http.StatusOK {
		t.Fatalf("fresh token: %d", st)
	}
	clk.Add(61 * time.Second)
	if st := get(t, s, "/latest/meta-data/instance-id", tok); st != http.StatusUnauthorized {
		t.Fatalf("expired token: %d", st)
	}
}

func putToken(t *testing.T, s *imdstest.Server, ttl string, extra http.Header) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, s.URL()+"/latest/api/token", nil)
	req.Header.Set(imdstest.HeaderTokenTTL, ttl)
	for k, v := range extra {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get(imdstest.HeaderTokenTTL) != ttl {
		t.Fatalf("token: %d %q", resp.StatusCode, b)
	}
	return string(b)
}

func do(t *testing.T, s *imdstest.Server, method, path string, h http.Header) int {
	t.Helper()
	req, _ := http.NewRequest(method, s.URL()+path, nil)
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func get(t *testing.T, s *imdstest.Server, path, tok string) int {
	h := http.Header{}
	if tok != "" {
		h.Set(imdstest.HeaderToken, tok)
	}
	return do(t, s, http.MethodGet, path, h)
}

// Raw requests: the token protocol's statuses.
func TestProtocol(t *testing.T) {
	s := imdstest.NewServer(t, imdstest.Options{Role: "app-role"})
	tok := putToken(t, s, "21600", nil)
	ttl := func(vs ...string) http.Header {
		return http.Header{http.CanonicalHeaderKey(imdstest.HeaderTokenTTL): vs}
	}
	tests := []struct {
		name   string
		method string
		path   string
		h      http.Header
		want   int
	}{
		{"token ttl 1", http.MethodPut, "/latest/api/token", ttl("1"), 200},
		{"token ttl 21600", http.MethodPut, "/latest/api/token", ttl("21600"), 200},
		{"token ttl 0", http.MethodPut, "/latest/api/token", ttl("0"), 400},
		{"token ttl 21601", http.MethodPut, "/latest/api/token", ttl("21601"), 400},
		{"token ttl negative", http.MethodPut, "/latest/api/token", ttl("-5"), 400},
		{"token ttl not a number", http.MethodPut, "/latest/api/token", ttl("abc"), 400},
		{"token ttl with a plus", http.MethodPut, "/latest/api/token", ttl("+5"), 400},
		{"token ttl leading zero", http.MethodPut, "/latest/api/token", ttl("05"), 400},
		{"token ttl twice", http.MethodPut, "/latest/api/token", ttl("5", "6"), 400},
		{"token without ttl", http.MethodPut, "/latest/api/token", nil, 400},
		{"token through a proxy", http.MethodPut, "/latest/api/token", http.Header{"X-Forwarded-For": {"10.0.0.1"}, http.CanonicalHeaderKey(imdstest.HeaderTokenTTL): {"60"}}, 403},
		{"GET token", http.MethodGet, "/latest/api/token", nil, 405},
		{"no token", http.MethodGet, "/latest/meta-data/iam/security-credentials/", nil, 401},
		{"bogus token", http.MethodGet, "/latest/meta-data/iam/security-credentials/", http.Header{"X-Aws-Ec2-Metadata-Token": {"bogus"}}, 401},
		{"role listing", http.MethodGet, "/latest/meta-data/iam/security-credentials/", http.Header{"X-Aws-Ec2-Metadata-Token": {tok}}, 200},
		{"role credentials", http.MethodGet, "/latest/meta-data/iam/security-credentials/app-role", http.Header{"X-Aws-Ec2-Metadata-Token": {tok}}, 200},
		{"other role", http.MethodGet, "/latest/meta-data/iam/security-credentials/other", http.Header{"X-Aws-Ec2-Metadata-Token": {tok}}, 404},
		{"unknown path", http.MethodGet, "/latest/meta-data/nothing", http.Header{"X-Aws-Ec2-Metadata-Token": {tok}}, 404},
		{"identity document", http.MethodGet, "/latest/dynamic/instance-identity/document", http.Header{"X-Aws-Ec2-Metadata-Token": {tok}}, 200},
		{"POST", http.MethodPost, "/latest/meta-data/instance-id", http.Header{"X-Aws-Ec2-Metadata-Token": {tok}}, 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := do(t, s, tt.method, tt.path, tt.h); got != tt.want {
				t.Fatalf("status %d, want %d", got, tt.want)
			}
		})
	}
	// The log has every request and no token.
	log := s.Requests()
	if len(log) != len(tests)+1 {
		t.Fatalf("%d log entries, want %d", len(log), len(tests)+1)
	}
	for _, r := range log {
		if strings.Contains(r.Path, tok) {
			t.Fatal("a token in the log")
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		o    imdstest.Options
		ok   bool
	}{
		{"zero", imdstest.Options{}, true},
		{"all set", imdstest.Options{Role: "r", Region: "eu-west-1", AvailabilityZone: "eu-west-1b", AccountID: "123456789012",
			Credentials: imdstest.Credentials{AccessKeyID: "A", SecretAccessKey: "S", Expiration: time.Now().Add(time.Hour)}}, true},
		{"role with slash", imdstest.Options{Role: "a/b"}, false},
		{"bad region", imdstest.Options{Region: "EU"}, false},
		{"bad account", imdstest.Options{AccountID: "12345"}, false},
		{"credentials without expiration", imdstest.Options{Credentials: imdstest.Credentials{AccessKeyID: "A", SecretAccessKey: "S"}}, false},
		{"negative lifetime", imdstest.Options{CredentialLifetime: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.Validate()
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, imdstest.ErrConfig)) {
				t.Fatalf("Validate() = %v, want ok=%v (or ErrConfig)", err, tt.ok)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "imdstest: ") {
				t.Fatalf("message %q", err)
			}
			s, err := imdstest.New(tt.o)
			if (err == nil) != tt.ok {
				t.Fatalf("New() = %v, want ok=%v", err, tt.ok)
			}
			if err == nil {
				s.Close()
			}
		})
	}
}

// Readers and a rotating writer at once are race-free and always see a
// whole set of credentials.
func TestConcurrent(t *testing.T) {
	s := imdstest.NewServer(t, imdstest.Options{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client(s)
			for range 10 {
				out, err := c.GetMetadata(context.Background(), &imds.GetMetadataInput{Path: "iam/security-credentials/" + s.Role()})
				if err != nil {
					t.Error(err)
					return
				}
				var d credsDoc
				err = json.NewDecoder(out.Content).Decode(&d)
				out.Content.Close()
				if err != nil || d.AccessKeyId == "" || d.Token == "" {
					t.Errorf("document %+v: %v", d, err)
					return
				}
			}
		}()
	}
	for range 10 {
		s.Rotate()
		_ = s.Requests()
	}
	wg.Wait()
}

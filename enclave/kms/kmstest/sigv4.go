package kmstest

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const (
	sigAlgorithm  = "AWS4-HMAC-SHA256"
	amzDateFormat = "20060102T150405Z"
	signingName   = "kms"
)

// sigV4Auth is a parsed Authorization header.
type sigV4Auth struct {
	AccessKeyID   string
	Date          string // yyyymmdd of the credential scope
	Region        string
	Service       string
	SignedHeaders string
	Signature     string
}

// parseAuthorization parses a SigV4 Authorization header:
//
//	AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request, SignedHeaders=h1;h2, Signature=HEX
//
// Each component must appear exactly once.
func parseAuthorization(h string) (sigV4Auth, error) {
	var a sigV4Auth
	rest, ok := strings.CutPrefix(h, sigAlgorithm+" ")
	if !ok {
		return a, errors.New("not an " + sigAlgorithm + " Authorization header")
	}
	var cred, signed, sig bool
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || v == "" {
			return a, errors.New("malformed Authorization component")
		}
		switch k {
		case "Credential":
			if cred {
				return a, errors.New("duplicate Credential")
			}
			cred = true
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" || f[0] == "" {
				return a, errors.New("malformed Credential scope")
			}
			a.AccessKeyID, a.Date, a.Region, a.Service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			if signed {
				return a, errors.New("duplicate SignedHeaders")
			}
			signed = true
			a.SignedHeaders = v
		case "Signature":
			if sig {
				return a, errors.New("duplicate Signature")
			}
			sig = true
			if len(v) != 64 {
				return a, errors.New("malformed Signature")
			}
			if _, err := hex.DecodeString(v); err != nil {
				return a, errors.New("malformed Signature")
			}
			a.Signature = v
		default:
			return a, errors.New("unknown Authorization component")
		}
	}
	if !cred || !signed || !sig {
		return a, errors.New("incomplete Authorization header")
	}
	return a, nil
}

// authenticate verifies the request's SigV4 signature by recomputing it
// with the SDK's own signer over the same method, path, query, signed
// headers and body, with the emulator's credentials, and comparing in
// constant time.
func (s *Server) authenticate(r *http.Request, body []byte) *apiError {
	h := r.Header.Get("Authorization")
	if h == "" {
		return errf(errMissingAuth, "Missing Authentication Token")
	}
	a, err := parseAuthorization(h)
	if err != nil {
		return errf(errInvalidSignature, "Authorization header: %v", err)
	}
	creds := s.credentials()
	if subtle.ConstantTimeCompare([]byte(a.AccessKeyID), []byte(creds.AccessKeyID)) != 1 {
		return errf(errUnrecognizedClient, "The security token included in the request is invalid.")
	}
	if creds.SessionToken != "" &&
		subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Amz-Security-Token")), []byte(creds.SessionToken)) != 1 {
		return errf(errUnrecognizedClient, "The security token included in the request is invalid.")
	}
	if creds.CanExpire && !s.clock().Before(creds.Expires) {
		return errf(errExpiredToken, "The security token included in the request is expired")
	}
	when, err := time.Parse(amzDateFormat, r.Header.Get("X-Amz-Date"))
	if err != nil {
		return errf(errInvalidSignature, "X-Amz-Date missing or malformed")
	}
	now := s.clock()
	if d := now.Sub(when); d > MaxRequestSkew || d < -MaxRequestSkew {
		return errf(errInvalidSignature, "Signature expired: %s is now earlier than %s (%s - 15 min.)",
			when.Format(amzDateFormat), now.Add(-MaxRequestSkew).Format(amzDateFormat), now.Format(amzDateFormat))
	}
	if a.Date != when.Format("20060102") {
		return errf(errInvalidSignature, "Credential scope date does not match X-Amz-Date")
	}
	if a.Region != s.opts.Region {
		return errf(errInvalidSignature, "Credential should be scoped to a valid region, not '%s'.", a.Region)
	}
	if a.Service != signingName {
		return errf(errInvalidSignature, "Credential should be scoped to correct service: '%s'.", signingName)
	}

	// Rebuild the request from what the client says it signed.
	names := strings.Split(a.SignedHeaders, ";")
	hasHost, hasLength := false, false
	re := &http.Request{
		Method: r.Method,
		URL:    &url.URL{Scheme: "https", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery},
		Host:   r.Host,
		Header: http.Header{},
	}
	for i, n := range names {
		if n == "" || n != strings.ToLower(n) || (i > 0 && names[i-1] >= n) {
			return errf(errInvalidSignature, "SignedHeaders must be lower case, sorted and unique")
		}
		switch n {
		case "host":
			hasHost = true
		case "content-length":
			hasLength = true
		default:
			vs := r.Header.Values(n)
			if len(vs) == 0 {
				return errf(errInvalidSignature, "signed header %q is missing", n)
			}
			re.Header[http.CanonicalHeaderKey(n)] = vs
		}
	}
	if !hasHost {
		return errf(errInvalidSignature, "the host header must be signed")
	}
	if hasLength {
		re.ContentLength = int64(len(body))
	}
	sum := sha256.Sum256(body)
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = false })
	if err := signer.SignHTTP(context.Background(), creds, re, hex.EncodeToString(sum[:]), a.Service, a.Region, when); err != nil {
		return errf(errInternal, "recomputing the signature: %v", err)
	}
	want, err := parseAuthorization(re.Header.Get("Authorization"))
	if err != nil {
		return errf(errInternal, "recomputed Authorization unparsable: %v", err)
	}
	if want.SignedHeaders != a.SignedHeaders ||
		subtle.ConstantTimeCompare([]byte(want.Signature), []byte(a.Signature)) != 1 {
		return errf(errInvalidSignature, "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
	}
	return nil
}

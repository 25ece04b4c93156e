package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// TestCredentialsRequestRedacts: the push body holds the secret access key
// and session token as bytes; no fmt verb, JSON or slog handler prints
// them, in any of the forms those print bytes in.
func TestCredentialsRequestRedacts(t *testing.T) {
	const secret, token = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "IQoJb3JpZ2luX2VjEXAMPLETOKEN"
	r := CredentialsRequest{AccessKeyID: "AKIAIOSFODNN7EXAMPLE", SecretAccessKey: []byte(secret), SessionToken: []byte(token), ExpiresUnix: 1}
	outputs := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%o", "%b", "%c", "%U"} {
		outputs[verb] = fmt.Sprintf(verb, r)
		outputs["ptr "+verb] = fmt.Sprintf(verb, &r)
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	outputs["json"] = string(js)
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"slog text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"slog json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var buf bytes.Buffer
		slog.New(h(&buf)).Info("push", "req", r, "ptr", &r)
		outputs[name] = buf.String()
	}
	var leaks []string
	for _, s := range []string{secret, token} {
		b := []byte(s)
		leaks = append(leaks, s, fmt.Sprintf("%x", b), fmt.Sprintf("%X", b), base64.StdEncoding.EncodeToString(b),
			strings.Trim(fmt.Sprintf("%d", b[:8]), "[]"), strings.Trim(fmt.Sprintf("%o", b[:8]), "[]"), strings.Trim(fmt.Sprintf("%b", b[:4]), "[]"))
	}
	for name, out := range outputs {
		for _, l := range leaks {
			if strings.Contains(out, l) {
				t.Errorf("%s prints a secret field (%s): %s", name, l, out)
				break
			}
		}
	}
	// The wire encoding still carries them.
	var back CredentialsRequest
	b, err := Marshal(&r)
	if err != nil || Unmarshal(b, &back) != nil || !bytes.Equal(back.SecretAccessKey, r.SecretAccessKey) || !bytes.Equal(back.SessionToken, r.SessionToken) {
		t.Fatalf("CBOR round trip: %v", err)
	}
}

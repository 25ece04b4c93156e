package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/big"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/enclavekit/enclavekit/parent"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

const callUsage = `usage: enclavekit call --addr ADDR [--timeout D] METHOD [JSON|@FILE]

Calls METHOD on the enclave server at ADDR (vsock://CID:PORT or
tcp://HOST:PORT). The request is JSON, given inline or read from FILE, and
sent as CBOR: a JSON object whose keys are all unsigned integers ("1", "2")
becomes a CBOR map with integer keys, as enclavekit bodies use, and
{"$bytes": "BASE64"} becomes a byte string. Without JSON the request body is
empty. The CBOR response is printed as JSON, byte strings as base64
(enclavekit.health is printed with field names).

Exit status: 0 ok, 1 the call failed (remote error or connection), 2 usage.

flags:
`

func runCall(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("enclavekit call", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, callUsage); fs.PrintDefaults() }
	addr := fs.String("addr", "", "enclave server address, e.g. vsock://16:5000 or tcp://127.0.0.1:5000 (required)")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on the whole call, connection included")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return flagExit(err)
	}
	switch {
	case *addr == "":
		return usageFail(fs, stderr, "enclavekit call: --addr is required: the enclave's address, such as vsock://16:5000 or tcp://127.0.0.1:5000")
	case len(pos) == 0:
		return usageFail(fs, stderr, "enclavekit call: want METHOD [JSON|@FILE], such as: enclavekit call --addr ADDR echo '\"hi\"'")
	case len(pos) > 2:
		return usageFail(fs, stderr, "enclavekit call: %d arguments after the method; want at most one request (quote the JSON)", len(pos)-1)
	case *timeout <= 0:
		return usageFail(fs, stderr, "enclavekit call: --timeout %v: want a positive duration such as 10s", *timeout)
	}
	method := pos[0]
	var body []byte
	if len(pos) == 2 {
		in := []byte(pos[1])
		if name, ok := strings.CutPrefix(pos[1], "@"); ok {
			in, err = os.ReadFile(name)
			if err != nil {
				fmt.Fprintf(stderr, "enclavekit call: %v\n", err)
				return exitUsage
			}
		}
		body, err = callJSONToCBOR(in)
		if err != nil {
			fmt.Fprintf(stderr, "enclavekit call: request: %v\n", err)
			return exitUsage
		}
	}
	out, code := callOnce(ctx, stderr, "call", *addr, *timeout, method, body)
	if code != exitOK {
		return code
	}
	js, err := callResponseJSON(method, out)
	if err != nil {
		fmt.Fprintf(stderr, "enclavekit call: response: %v\n", err)
		return exitFailure
	}
	stdout.Write(js)
	return exitOK
}

// callOnce dials addr, makes one call and reports failures on stderr. A
// malformed address is a usage error; one that cannot be reached is not.
func callOnce(ctx context.Context, stderr io.Writer, cmd, addr string, timeout time.Duration, method string, body []byte) ([]byte, int) {
	if _, err := transport.ParseAddr(addr); err != nil {
		fmt.Fprintf(stderr, "enclavekit %s: --addr: %v\n", cmd, err)
		return nil, exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := parent.Dial(ctx, addr, parent.Options{PoolSize: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Fprintf(stderr, "enclavekit %s: %s\n", cmd, withHint(err))
		return nil, exitFailure
	}
	defer c.Close()
	out, err := c.CallRaw(ctx, method, body)
	if err != nil {
		// The message of a remote error comes from the enclave: untrusted.
		fmt.Fprintf(stderr, "enclavekit %s: %s: %s\n", cmd, method, parent.Sanitize(err.Error(), 1024))
		return nil, exitFailure
	}
	return out, exitOK
}

// callResponseJSON renders a response body as indented JSON, with a newline.
func callResponseJSON(method string, body []byte) ([]byte, error) {
	var v any
	if method == protocol.MethodHealth {
		var h protocol.HealthResponse
		if err := protocol.Unmarshal(body, &h); err != nil {
			return nil, err
		}
		v = h
	} else {
		var err error
		if v, err = callCBORToJSON(body); err != nil {
			return nil, err
		}
	}
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(js, '\n'), nil
}

// callJSONToCBOR converts one JSON value to canonical CBOR (see callUsage).
func callJSONToCBOR(js []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("invalid JSON: trailing data after the value")
	}
	cv, err := callFromJSON(v)
	if err != nil {
		return nil, err
	}
	return protocol.Marshal(cv)
}

func callFromJSON(v any) (any, error) {
	switch v := v.(type) {
	case json.Number:
		s := v.String()
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return u, nil
		}
		if !strings.ContainsAny(s, ".eE") {
			// An integer literal is sent as a CBOR integer or refused,
			// never rounded to a float.
			n, ok := new(big.Int).SetString(s, 10)
			if !ok || n.Sign() >= 0 || n.Cmp(callMinCBORInt) < 0 {
				return nil, fmt.Errorf("integer %s out of range: CBOR integers are -2^64..2^64-1", s)
			}
			return n, nil // below -2^63: CBOR major type 1
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("number %s out of range", s)
		}
		return f, nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			c, err := callFromJSON(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[string]any:
		if b64, ok := v["$bytes"]; ok && len(v) == 1 {
			s, ok := b64.(string)
			if !ok {
				return nil, errors.New(`"$bytes" needs a base64 string`)
			}
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return nil, fmt.Errorf(`"$bytes": %w`, err)
			}
			return b, nil
		}
		intKeys := len(v) > 0
		for k := range v {
			if _, ok := callUintKey(k); !ok {
				intKeys = false
				break
			}
		}
		if intKeys {
			out := make(map[uint64]any, len(v))
			for k, e := range v {
				n, _ := callUintKey(k)
				c, err := callFromJSON(e)
				if err != nil {
					return nil, err
				}
				out[n] = c
			}
			return out, nil
		}
		out := make(map[string]any, len(v))
		for k, e := range v {
			c, err := callFromJSON(e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	}
	return v, nil // string, bool, nil
}

// callMinCBORInt is -2^64, the smallest CBOR integer.
var callMinCBORInt = new(big.Int).Neg(new(big.Int).Lsh(big.NewInt(1), 64))

// callUintKey parses a canonical unsigned decimal ("0", "17"; not "01", "+1").
func callUintKey(k string) (uint64, bool) {
	if k == "" || (len(k) > 1 && k[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseUint(k, 10, 64)
	return n, err == nil
}

// callCBORToJSON decodes an untrusted CBOR body (strictly, with the
// protocol's limits) into a value encoding/json can print: maps get string
// keys, byte strings become base64 text, non-finite floats become null.
func callCBORToJSON(body []byte) (any, error) {
	if len(body) == 0 {
		return nil, nil
	}
	var v any
	if err := protocol.Unmarshal(body, &v); err != nil {
		return nil, err
	}
	return callToJSON(v)
}

// callToJSON converts a decoded CBOR value. Two map keys that print as the
// same JSON key (1 and "1", 1 and 1.0) are an error rather than one value
// silently dropped.
func callToJSON(v any) (any, error) {
	switch v := v.(type) {
	case []byte:
		return base64.StdEncoding.EncodeToString(v), nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			c, err := callToJSON(e)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			c, err := callToJSON(e)
			if err != nil {
				return nil, err
			}
			jk := callJSONKey(k)
			if _, dup := out[jk]; dup {
				return nil, fmt.Errorf("two map keys print as the JSON key %q", jk)
			}
			out[jk] = c
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			c, err := callToJSON(e)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case float32:
		return callToJSON(float64(v))
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, nil
		}
		return v, nil
	case *big.Int:
		return json.Number(v.String()), nil
	case big.Int:
		return json.Number(v.String()), nil
	case string, bool, nil, int64, uint64, int, uint:
		return v, nil
	}
	return fmt.Sprint(v), nil
}

// callJSONKey prints a map key: text as is, byte strings (which the
// decoder gives as cbor.ByteString when they are map keys) as base64.
func callJSONKey(k any) string {
	switch k := k.(type) {
	case string:
		return k
	case []byte:
		return base64.StdEncoding.EncodeToString(k)
	case cbor.ByteString:
		return base64.StdEncoding.EncodeToString([]byte(k))
	}
	return fmt.Sprint(k)
}

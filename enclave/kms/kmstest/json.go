package kmstest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxJSONDepth bounds the nesting of request bodies and key policies.
const maxJSONDepth = 32

// decodeRequest decodes a KMS JSON 1.1 request body into v: one JSON
// object, no trailing data, no member name twice (compared without case,
// since the decoder matches names without case). Unknown members are
// ignored (newer SDKs send members the emulator does not model).
func decodeRequest(body []byte, v any) error {
	if err := checkJSON(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return jsonProblem(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// strictJSON is decodeRequest that also refuses unknown members, for key
// policies.
func strictJSON(b []byte, v any) error {
	if err := checkJSON(b); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonProblem(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// checkJSON walks b once: one top-level object, nesting at most
// maxJSONDepth, and no object with two member names equal without case
// (the decoder would silently keep the last).
func checkJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type frame struct {
		object  bool
		keys    map[string]bool
		wantKey bool
	}
	var stack []*frame
	first := true
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if first {
				return errors.New("empty body, want a JSON object")
			}
			return nil
		}
		if err != nil {
			return jsonProblem(err)
		}
		if first {
			if d, ok := tok.(json.Delim); !ok || d != '{' {
				return errors.New("not a JSON object")
			}
			first = false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.wantKey {
			if k, ok := tok.(string); ok {
				lk := strings.ToLower(k)
				if top.keys[lk] {
					return fmt.Errorf("member %q appears twice", k)
				}
				top.keys[lk] = true
				top.wantKey = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) >= maxJSONDepth {
				return fmt.Errorf("nested deeper than %d levels", maxJSONDepth)
			}
			stack = append(stack, &frame{object: tok == json.Delim('{'), keys: map[string]bool{}, wantKey: true})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			if len(stack) == 0 && dec.More() {
				return errors.New("trailing data after the JSON object")
			}
		}
		// A value completed: an object's next token is a key again.
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].wantKey = true
		}
	}
}

// jsonProblem turns a decoding error into a message for people, without
// Go type names.
func jsonProblem(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var b64 base64.CorruptInputError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("not valid JSON (at byte %d)", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return errors.New("not a JSON object")
		}
		return fmt.Errorf("member %s has the wrong type (a JSON %s)", typ.Field, typ.Value)
	case errors.As(err, &b64):
		return errors.New("a binary member is not valid base64")
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return errors.New("the JSON ends too early")
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Errorf("unknown member %s", name)
	}
	return errors.New("not a valid JSON object")
}

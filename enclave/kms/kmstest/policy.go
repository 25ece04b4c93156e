package kmstest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Condition keys the emulator evaluates (IAM keys are case-insensitive).
const (
	CondImageSha384 = "kms:RecipientAttestation:ImageSha384"
	CondPCRPrefix   = "kms:RecipientAttestation:PCR"
)

// MaxPolicyBytes is KMS's key policy size limit.
const MaxPolicyBytes = 32 << 10

// policy is a compiled key policy: the subset of the IAM policy language
// the emulator evaluates. Statements have Effect, Action (string or list,
// with * and ? wildcards) and Condition with the StringEquals and
// StringEqualsIgnoreCase operators over the RecipientAttestation keys.
// Principal and Resource are accepted and not evaluated (the emulator has
// one caller and each policy belongs to one key). Anything else (NotAction,
// other operators or keys) is refused when the policy is set, so a test
// never passes because the emulator silently ignored a condition.
type policy struct {
	stmts []statement
}

type statement struct {
	sid     string
	allow   bool
	actions []string // lower case patterns
	conds   []condition
}

type condition struct {
	op         string
	key        string // lower case
	values     []string
	ignoreCase bool
}

type policyJSON struct {
	Version   string          `json:"Version"`
	ID        string          `json:"Id"`
	Statement json.RawMessage `json:"Statement"`
}

type statementJSON struct {
	Sid       string                                `json:"Sid"`
	Effect    string                                `json:"Effect"`
	Principal json.RawMessage                       `json:"Principal"`
	Action    json.RawMessage                       `json:"Action"`
	Resource  json.RawMessage                       `json:"Resource"`
	Condition map[string]map[string]json.RawMessage `json:"Condition"`
}

// parsePolicy compiles a key policy document.
func parsePolicy(doc string) (*policy, error) {
	if len(doc) > MaxPolicyBytes {
		return nil, fmt.Errorf("policy is %d bytes, over %d", len(doc), MaxPolicyBytes)
	}
	var pj policyJSON
	if err := strictJSON([]byte(doc), &pj); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if pj.Version != "2012-10-17" {
		return nil, fmt.Errorf("policy Version %q, want 2012-10-17", pj.Version)
	}
	var raws []json.RawMessage
	trimmed := bytes.TrimSpace(pj.Statement)
	switch {
	case len(trimmed) > 0 && trimmed[0] == '[':
		if err := json.Unmarshal(trimmed, &raws); err != nil {
			return nil, fmt.Errorf("policy Statement: %w", jsonProblem(err))
		}
	case len(trimmed) > 0 && trimmed[0] == '{':
		raws = []json.RawMessage{trimmed}
	default:
		return nil, errors.New("policy has no Statement")
	}
	if len(raws) == 0 {
		return nil, errors.New("policy has no Statement")
	}
	p := &policy{}
	for i, raw := range raws {
		st, err := parseStatement(raw)
		if err != nil {
			return nil, fmt.Errorf("policy Statement[%d]: %w", i, err)
		}
		p.stmts = append(p.stmts, st)
	}
	return p, nil
}

func parseStatement(raw json.RawMessage) (statement, error) {
	var sj statementJSON
	if err := strictJSON(raw, &sj); err != nil {
		return statement{}, err
	}
	st := statement{sid: sj.Sid}
	switch sj.Effect {
	case "Allow":
		st.allow = true
	case "Deny":
	default:
		//lint:ignore ST1005 the message begins with the policy field's name, capitalized as IAM writes it
		return st, fmt.Errorf("Effect %q, want \"Allow\" or \"Deny\"", sj.Effect)
	}
	actions, err := stringOrList(sj.Action)
	if err != nil || len(actions) == 0 {
		//lint:ignore ST1005 the message begins with the policy field's name, capitalized as IAM writes it
		return st, errors.New("Action must be a string or a non-empty list of strings")
	}
	for _, a := range actions {
		if a != "*" && !strings.HasPrefix(strings.ToLower(a), "kms:") {
			//lint:ignore ST1005 the message begins with the policy field's name, capitalized as IAM writes it
			return st, fmt.Errorf("Action %q is not a kms: action", a)
		}
		st.actions = append(st.actions, strings.ToLower(a))
	}
	for op, kv := range sj.Condition {
		var ignoreCase bool
		switch op {
		case "StringEquals":
		case "StringEqualsIgnoreCase":
			ignoreCase = true
		default:
			return st, fmt.Errorf("condition operator %q is not emulated (StringEquals, StringEqualsIgnoreCase)", op)
		}
		if len(kv) == 0 {
			return st, fmt.Errorf("condition operator %s has no condition keys", op)
		}
		for k, rv := range kv {
			if !supportedConditionKey(k) {
				return st, fmt.Errorf("condition key %q is not emulated (%s, %s<0..31>)", k, CondImageSha384, CondPCRPrefix)
			}
			vals, err := stringOrList(rv)
			if err != nil || len(vals) == 0 {
				return st, fmt.Errorf("condition %s %s: values must be a string or a non-empty list of strings", op, k)
			}
			st.conds = append(st.conds, condition{op: op, key: strings.ToLower(k), values: vals, ignoreCase: ignoreCase})
		}
	}
	return st, nil
}

func supportedConditionKey(k string) bool {
	if strings.EqualFold(k, CondImageSha384) {
		return true
	}
	if len(k) <= len(CondPCRPrefix) || !strings.EqualFold(k[:len(CondPCRPrefix)], CondPCRPrefix) {
		return false
	}
	n, err := strconv.Atoi(k[len(CondPCRPrefix):])
	return err == nil && n >= 0 && n <= 31 && strconv.Itoa(n) == k[len(CondPCRPrefix):]
}

func stringOrList(raw json.RawMessage) ([]string, error) {
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, err
	}
	return many, nil
}

// allows reports whether the policy allows action ("kms:Decrypt") given the
// request's condition values (lower-case keys → value; absent when the
// request carries no verified attestation document). An explicit Deny
// wins; without a matching Allow the answer is no. A nil policy is KMS's
// default key policy: everything is allowed.
func (p *policy) allows(action string, ctx map[string]string) (bool, string) {
	if p == nil {
		return true, "default key policy"
	}
	action = strings.ToLower(action)
	allowed, why := false, "no statement allows "+action
	for _, st := range p.stmts {
		if !st.matches(action, ctx) {
			continue
		}
		if !st.allow {
			return false, "denied by statement " + strconv.Quote(st.sid)
		}
		allowed, why = true, "allowed by statement "+strconv.Quote(st.sid)
	}
	return allowed, why
}

func (st statement) matches(action string, ctx map[string]string) bool {
	ok := false
	for _, a := range st.actions {
		if glob(a, action) {
			ok = true
			break
		}
	}
	if !ok {
		return false
	}
	for _, c := range st.conds {
		v, present := ctx[c.key]
		if !present {
			return false
		}
		hit := false
		for _, want := range c.values {
			if want == v || (c.ignoreCase && strings.EqualFold(want, v)) {
				hit = true
				break
			}
		}
		if !hit {
			return false
		}
	}
	return true
}

// glob matches s against pattern with * (any run) and ? (one byte).
func glob(pattern, s string) bool {
	px, sx := 0, 0
	nextP, nextS := -1, -1
	for px < len(pattern) || sx < len(s) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				nextP, nextS = px, sx+1
				px++
				continue
			case '?':
				if sx < len(s) {
					px++
					sx++
					continue
				}
			default:
				if sx < len(s) && s[sx] == c {
					px++
					sx++
					continue
				}
			}
		}
		if nextS > 0 && nextS <= len(s) {
			px, sx = nextP, nextS
			continue
		}
		return false
	}
	return true
}

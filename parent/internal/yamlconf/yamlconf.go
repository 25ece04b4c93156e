// Package yamlconf turns the YAML library's decoding errors into one-line
// reasons without Go type names, and finds the line of a field path, for
// the configuration files of the parent's commands (the egress proxy's
// routes and the supervisor's run.yaml).
package yamlconf

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

var (
	lineRE      = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
	unknownRE   = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	wrongTypeRE = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (\\S+)$")
	pathPartRE  = regexp.MustCompile(`([a-z_]+)|\[(\d+)\]`)
	kinds       = map[string]string{"map": "a mapping", "seq": "a list", "str": "text", "int": "a number", "bool": "a boolean", "float": "a number", "null": "nothing"}
	wantByType  = map[string]string{
		"int": "a whole number", "int64": "a whole number", "uint32": "a whole number", "uint16": "a whole number",
		"bool": "true or false", "time.Duration": "a duration such as 5s or 2m", "string": "text",
		"[]string": "a list of text",
	}
)

// Hints adds to the reasons: Want maps a Go type as the YAML library names
// it ("[]supervisor.Enclave") to what to write; Unknown maps a misspelt or
// foreign key ("whitelist") to advice.
type Hints struct {
	Want    map[string]string
	Unknown map[string]string
	// Fields names where the valid keys are listed, for unknown keys.
	Fields string
}

// Reason returns the line (0 if unknown) and a one-line reason for a
// decoding error, with no Go type names. More than one problem is counted.
func Reason(err error, h Hints) (int, string) {
	msgs := []string{err.Error()}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msgs = te.Errors
	}
	m := lineRE.FindStringSubmatch(msgs[0])
	if m == nil {
		return 0, strings.TrimPrefix(msgs[0], "yaml: ") + " (not valid YAML: check the indentation, quotes and brackets)"
	}
	line, _ := strconv.Atoi(m[1])
	reason := m[2]
	if u := unknownRE.FindStringSubmatch(reason); u != nil {
		reason = fmt.Sprintf("unknown field %q: fix its spelling or remove it", u[1])
		if adv, ok := h.Unknown[u[1]]; ok {
			reason = fmt.Sprintf("unknown field %q: %s", u[1], adv)
		} else if h.Fields != "" {
			reason += " (" + h.Fields + " lists the fields)"
		}
	} else if w := wrongTypeRE.FindStringSubmatch(reason); w != nil {
		want, ok := h.Want[w[3]]
		if !ok {
			want, ok = wantByType[w[3]]
		}
		switch {
		case ok:
		case strings.HasPrefix(w[3], "[]"):
			want = "a list (- …)"
		case strings.Contains(w[3], "."):
			want = "a mapping of fields (key: value)"
		default:
			want = "a value of another kind"
		}
		found := fmt.Sprintf("value %q", w[2])
		if w[2] == "" {
			if found = kinds[w[1]]; found == "" {
				found = "this value"
			}
		}
		reason = fmt.Sprintf("%s is not valid here: write %s", found, want)
	} else {
		reason += " (not valid YAML: check the indentation, quotes and brackets)"
	}
	if len(msgs) > 1 {
		reason += fmt.Sprintf(" (and %d more problems)", len(msgs)-1)
	}
	return line, reason
}

// LineOf returns the line of a field path such as "routes[1].to" in a
// decoded YAML tree, or of its nearest ancestor present in the file.
func LineOf(root *yaml.Node, path string) int {
	if root == nil {
		return 0
	}
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, m := range pathPartRE.FindAllStringSubmatch(path, -1) {
		var next *yaml.Node
		switch {
		case m[1] != "" && n.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == m[1] {
					line, next = n.Content[i].Line, n.Content[i+1]
				}
			}
		case m[2] != "" && n.Kind == yaml.SequenceNode:
			if i, _ := strconv.Atoi(m[2]); i < len(n.Content) {
				next = n.Content[i]
				line = next.Line
			}
		}
		if next == nil {
			break
		}
		n = next
	}
	return line
}

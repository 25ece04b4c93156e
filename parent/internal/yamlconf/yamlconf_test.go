package yamlconf

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

type conf struct {
	Timeout time.Duration `yaml:"timeout"`
	Port    int           `yaml:"port"`
	Names   []string      `yaml:"names"`
}

func TestReason(t *testing.T) {
	h := Hints{Unknown: map[string]string{"whitelist": "the key is allowlist"}, Fields: "the docs"}
	for _, tc := range []struct {
		doc, want string
		line      int
	}{
		{"timeout: 10\n", `value "10" is not valid here: write a duration such as 5s or 2m`, 1},
		{"port: many\n", `value "many" is not valid here: write a whole number`, 1},
		{"names: x\n", `value "x" is not valid here: write a list of text`, 1},
		{"port: 1\nwhitelist: []\n", `unknown field "whitelist": the key is allowlist`, 2},
		{"other: 1\n", `unknown field "other": fix its spelling or remove it (the docs lists the fields)`, 1},
		{"port: [\n", "not valid YAML", 1},
	} {
		dec := yaml.NewDecoder(strings.NewReader(tc.doc))
		dec.KnownFields(true)
		var c conf
		err := dec.Decode(&c)
		if err == nil {
			t.Fatalf("%q decoded", tc.doc)
		}
		line, reason := Reason(err, h)
		if !strings.Contains(reason, tc.want) || line != tc.line || strings.Contains(reason, "time.Duration") || strings.Contains(reason, "yamlconf.conf") {
			t.Errorf("%q: line %d, %q; want line %d, %q", tc.doc, line, reason, tc.line, tc.want)
		}
	}
}

func TestLineOf(t *testing.T) {
	var root yaml.Node
	if err := yaml.Unmarshal([]byte("a: 1\nroutes:\n  - to: x\n  - to: y\n"), &root); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{"routes[1].to": 4, "routes[0]": 3, "a": 1, "routes[9].to": 2, "nope": 1} {
		if got := LineOf(&root, path); got != want {
			t.Errorf("LineOf(%q) = %d, want %d", path, got, want)
		}
	}
}

package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/enclavekit/enclavekit/parent"
	"github.com/enclavekit/enclavekit/parent/ingress"
	"github.com/enclavekit/enclavekit/parent/internal/yamlconf"
	"github.com/enclavekit/enclavekit/parent/proxy"
	"github.com/enclavekit/enclavekit/transport"
)

// Limits and defaults of Config.
const (
	// MaxEnclaves is the most enclaves one parent instance runs (a Nitro
	// limit).
	MaxEnclaves = 4
	// MaxSlot bounds Config.Slot.
	MaxSlot = 15
	// FirstCID is the default CID of the first enclave; CIDs 0..3 are
	// reserved (3 is the parent).
	FirstCID = 16
	// DefaultEnclavePort is the enclave server's vsock port.
	DefaultEnclavePort = 5000
	// DefaultLogSinkPort is the parent vsock port of the first enclave's
	// log sink; enclave i gets DefaultLogSinkPort+i.
	DefaultLogSinkPort = 5001
	// SlotCIDStride and SlotPortStride are how far one slot moves CIDs and
	// parent vsock ports.
	SlotCIDStride  = MaxEnclaves
	SlotPortStride = 100
	// DefaultHTTPListen serves /healthz, /readyz and /metrics.
	DefaultHTTPListen = "tcp://127.0.0.1:9400"

	DefaultProbeInterval = 5 * time.Second
	DefaultProbeTimeout  = 2 * time.Second
	DefaultProbeFailures = 3
	DefaultStartTimeout  = 2 * time.Minute
	DefaultMinBackoff    = time.Second
	DefaultMaxBackoff    = time.Minute
	DefaultDrainTimeout  = 30 * time.Second
	DefaultLogRecords    = 50
	DefaultRunLogsKeep   = 20
	DefaultCPUs          = 2
	// MaxLogRecords bounds Config.LogRecords, MaxRunLogsKeep
	// Config.RunLogsKeep.
	MaxLogRecords  = 10000
	MaxRunLogsKeep = 10000
	// MinMemoryMiB is the least Enclave.MemoryMiB.
	MinMemoryMiB   = 64
	maxConfigBytes = 1 << 20
	maxCID         = 1<<32 - 2
)

// ErrConfig is wrapped by every configuration error of the package: those
// of Config.Validate, LoadConfig and ParseConfig, and so of New. They are
// *ConfigErrors, which name the field by its YAML path
// ("enclaves[1].cid"), as the file's author wrote it.
var ErrConfig = errors.New("supervisor: bad configuration")

// Config is the file `enclavekit run --config` reads. The YAML keys are the
// snake_case names in the field tags; unknown keys are errors. Enclaves is
// required; every other zero field takes the default documented on it,
// which Validate fills in.
type Config struct {
	// NitroCLI is the nitro-cli command and any leading arguments; empty
	// means ["nitro-cli"]. Tests point it at a fake.
	NitroCLI []string `yaml:"nitro_cli"`
	// HTTP is the transport address of /healthz, /readyz and /metrics;
	// "" means DefaultHTTPListen.
	HTTP string `yaml:"http"`
	// Slot (0..MaxSlot) separates supervisors sharing one instance (pods
	// on one node): every CID moves by SlotCIDStride×Slot and every parent
	// vsock port (log sinks, egress routes) by SlotPortStride×Slot.
	Slot int `yaml:"slot"`
	// Health configures the health probes of each enclave.
	Health Health `yaml:"health"`
	// Restart bounds the wait before restarting a failed enclave.
	Restart Restart `yaml:"restart"`
	// DrainTimeout is how long, on SIGTERM, open ingress connections get
	// to finish before the enclaves are terminated; 0 means
	// DefaultDrainTimeout (30s).
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// LogRecords is how many of an enclave run's last log records are
	// kept and logged again when the run ends, at most MaxLogRecords; 0
	// means DefaultLogRecords (50).
	LogRecords int `yaml:"log_records"`
	// RunLogs, when set, is a directory where each ended run also gets a
	// file of its own (ENCLAVE_STARTTIME_runN.log) holding the run-ended
	// record and its last log records; the newest RunLogsKeep per enclave
	// are kept.
	RunLogs string `yaml:"run_logs"`
	// RunLogsKeep is how many run files per enclave RunLogs keeps, at
	// most MaxRunLogsKeep; 0 means DefaultRunLogsKeep (20).
	RunLogsKeep int `yaml:"run_logs_keep"`
	// Egress are the egress routes, allowlist and limits, as in
	// `enclavekit proxy --config`. Optional; shared by all enclaves.
	Egress *proxy.Config `yaml:"egress"`
	// Credentials, when set, pushes the instance role's AWS credentials
	// (read with IMDSv2) into every enclave at start and every interval,
	// for the enclave's own KMS calls: what `enclavekit credentials push`
	// does, built in. The enclave must serve enclavekit.credentials
	// (enclaved does when a KMS key is pinned).
	Credentials *Credentials `yaml:"credentials"`
	// Enclaves are the enclaves to run: 1..MaxEnclaves.
	Enclaves []Enclave `yaml:"enclaves"`

	// file is the name errors use; root locates fields' lines.
	file string
	root *yaml.Node
	// validated is set by a successful Validate, which assigns CIDs and
	// ports once: later calls return nil without changing anything.
	validated bool
}

// Health configures health probing.
type Health struct {
	// Interval between probes (enclavekit.health and describe-enclaves);
	// 0 means DefaultProbeInterval (5s).
	Interval time.Duration `yaml:"interval"`
	// Timeout of one probe; 0 means DefaultProbeTimeout (2s).
	Timeout time.Duration `yaml:"timeout"`
	// Failures is the number of consecutive failed probes after which a
	// running enclave is restarted; 0 means DefaultProbeFailures (3).
	Failures int `yaml:"failures"`
	// StartTimeout is how long a new enclave has to answer its first
	// probe; 0 means DefaultStartTimeout (2m).
	StartTimeout time.Duration `yaml:"start_timeout"`
}

// Restart bounds the restart backoff: it starts at MinBackoff, doubles on
// each failure up to MaxBackoff, and starts over once a run stayed healthy
// for MaxBackoff. 0 means DefaultMinBackoff (1s) and DefaultMaxBackoff
// (1m); MaxBackoff must not be less than MinBackoff.
type Restart struct {
	MinBackoff time.Duration `yaml:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// Credentials configures the credential push (see Config.Credentials).
type Credentials struct {
	// Role is the instance profile role; "" means the one IMDS lists.
	Role string `yaml:"role"`
	// IMDSEndpoint overrides the IMDS endpoint URL ("" means the SDK's,
	// http://169.254.169.254); for tests.
	IMDSEndpoint string `yaml:"imds_endpoint"`
	// Interval between pushes; 0 means parent.DefaultPushInterval (1m).
	Interval time.Duration `yaml:"interval"`
}

// Enclave is one enclave to run.
type Enclave struct {
	// Name labels the enclave in logs and metrics (lower-case letters,
	// digits and '-'); it is passed to nitro-cli as --enclave-name.
	Name string `yaml:"name"`
	// EIF is the path of the enclave image.
	EIF string `yaml:"eif"`
	// CPUs is --cpu-count; 0 means DefaultCPUs (2).
	CPUs int `yaml:"cpus"`
	// MemoryMiB is --memory (required): at least MinMemoryMiB (64) and at
	// least what the EIF needs (`enclavekit eif describe` prints it).
	MemoryMiB int `yaml:"memory_mib"`
	// CID is --enclave-cid, 4 or more; 0 means FirstCID+index (then
	// moved by Slot).
	CID uint32 `yaml:"cid"`
	// Debug starts the enclave with --debug-mode: its PCRs read as zeros,
	// its console is readable from the parent, and no KMS key policy that
	// pins PCRs will open for it. Never in production.
	Debug bool `yaml:"debug"`
	// Port is the enclave server's vsock port; 0 means
	// DefaultEnclavePort (5000).
	Port uint32 `yaml:"port"`
	// Address overrides where the supervisor reaches the enclave server
	// (default vsock://CID:Port); for development on loopback.
	Address string `yaml:"address"`
	// LogSink is where the parent receives this enclave's logs; "" means
	// vsock://any:(DefaultLogSinkPort+index), moved by Slot.
	LogSink string `yaml:"log_sink"`
	// Ingress forwards parent TCP ports into this enclave.
	Ingress []Ingress `yaml:"ingress"`
}

// Ingress is one forwarded port.
type Ingress struct {
	// Listen is the parent address clients connect to, e.g.
	// tcp://0.0.0.0:443.
	Listen string `yaml:"listen"`
	// Port is the enclave's vsock port the connections go to.
	Port uint32 `yaml:"port"`
	// Target overrides the destination (default vsock://CID:Port); for
	// development on loopback.
	Target string `yaml:"target"`
	// ProxyProtocol sends a PROXY v2 header with the client's address.
	ProxyProtocol bool `yaml:"proxy_protocol"`
	// MaxConns caps open connections; 0 means ingress.DefaultMaxConns
	// (1024).
	MaxConns int `yaml:"max_conns"`
}

// ConfigError is a configuration error. Its message names the file, the
// line, the field, what is wrong and how to fix it.
type ConfigError struct {
	File   string
	Line   int
	Field  string // e.g. "enclaves[1].cid"
	Reason string
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	}
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap makes errors.Is(err, ErrConfig) true.
func (e *ConfigError) Unwrap() error { return ErrConfig }

func (c *Config) errf(field, format string, args ...any) error {
	return &ConfigError{File: c.file, Line: lineOf(c.root, field), Field: field, Reason: fmt.Sprintf(format, args...)}
}

// LoadOptions adjust a configuration as it is loaded.
type LoadOptions struct {
	// Slot, when not nil, replaces the file's slot (the --slot flag).
	Slot *int
}

// LoadConfig reads, decodes strictly and validates a configuration file.
func LoadConfig(path string) (*Config, error) { return LoadConfigWith(path, LoadOptions{}) }

// LoadConfigWith is LoadConfig with options.
func LoadConfigWith(path string, o LoadOptions) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &ConfigError{File: path, Reason: fmt.Sprintf("cannot read the configuration: %v", errors.Unwrap(err))}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, &ConfigError{File: path, Reason: fmt.Sprintf("cannot read the configuration: %v", err)}
	}
	if len(data) > maxConfigBytes {
		return nil, &ConfigError{File: path, Reason: "file larger than 1 MiB; is this the right file?"}
	}
	return parseConfig(path, data, o)
}

// ParseConfig is LoadConfig on bytes; name is the file name errors use.
func ParseConfig(name string, data []byte) (*Config, error) {
	return parseConfig(name, data, LoadOptions{})
}

func parseConfig(name string, data []byte, o LoadOptions) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlErr(name, err)
	}
	if root.Kind == 0 {
		return nil, &ConfigError{File: name, Reason: "empty configuration; at least an enclaves: list is needed"}
	}
	cfg := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return nil, yamlErr(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, &ConfigError{File: name, Line: extra.Line, Reason: "more than one YAML document; keep one (remove the extra ---)"}
	}
	cfg.file, cfg.root = name, &root
	if o.Slot != nil {
		cfg.Slot = *o.Slot
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// yamlErr turns the YAML library's errors into ConfigErrors without Go
// type names.
func yamlErr(name string, err error) error {
	line, reason := yamlconf.Reason(err, yamlconf.Hints{
		Want: map[string]string{
			"[]string":             "a list of text such as [nitro-cli]",
			"[]supervisor.Enclave": "a list of enclaves (- name: …)",
			"[]supervisor.Ingress": "a list of ingress entries (- listen: …)",
		},
		Fields: "docs/operations.md",
	})
	return &ConfigError{File: name, Line: line, Reason: reason}
}

// lineOf is the line of a field path like "enclaves[1].cid", or of its
// nearest ancestor present in the file.
func lineOf(root *yaml.Node, path string) int { return yamlconf.LineOf(root, path) }

// Validate applies the defaults and checks the configuration; the CIDs and
// parent vsock ports are assigned here (moved by Slot). The error is a
// *ConfigError. After a successful Validate the Config is final: further
// calls return nil and change nothing.
func (c *Config) Validate() error {
	if c.validated {
		return nil
	}
	if err := c.validate(); err != nil {
		return err
	}
	c.validated = true
	return nil
}

func (c *Config) validate() error {
	if len(c.NitroCLI) == 0 {
		c.NitroCLI = []string{"nitro-cli"}
	}
	if c.NitroCLI[0] == "" {
		return c.errf("nitro_cli", "the command is empty; write the nitro-cli path, e.g. [nitro-cli]")
	}
	if c.HTTP == "" {
		c.HTTP = DefaultHTTPListen
	}
	if _, err := transport.ParseAddr(c.HTTP); err != nil {
		return c.errf("http", "%q is not an address: %v; write e.g. tcp://0.0.0.0:9400", c.HTTP, err)
	}
	if c.Slot < 0 || c.Slot > MaxSlot {
		return c.errf("slot", "%d is out of range; write a number in 0..%d", c.Slot, MaxSlot)
	}
	durs := []struct {
		field string
		v     *time.Duration
		def   time.Duration
	}{
		{"health.interval", &c.Health.Interval, DefaultProbeInterval},
		{"health.timeout", &c.Health.Timeout, DefaultProbeTimeout},
		{"health.start_timeout", &c.Health.StartTimeout, DefaultStartTimeout},
		{"restart.min_backoff", &c.Restart.MinBackoff, DefaultMinBackoff},
		{"restart.max_backoff", &c.Restart.MaxBackoff, DefaultMaxBackoff},
		{"drain_timeout", &c.DrainTimeout, DefaultDrainTimeout},
	}
	if c.Credentials != nil {
		durs = append(durs, struct {
			field string
			v     *time.Duration
			def   time.Duration
		}{"credentials.interval", &c.Credentials.Interval, parent.DefaultPushInterval})
	}
	for _, d := range durs {
		if *d.v < 0 {
			return c.errf(d.field, "%v is negative; write a duration such as %v, or leave it out for that default", *d.v, d.def)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.Restart.MaxBackoff < c.Restart.MinBackoff {
		return c.errf("restart.max_backoff", "%v is less than min_backoff %v; raise it", c.Restart.MaxBackoff, c.Restart.MinBackoff)
	}
	if c.Health.Failures < 0 {
		return c.errf("health.failures", "%d is negative; write a count such as %d", c.Health.Failures, DefaultProbeFailures)
	}
	if c.Health.Failures == 0 {
		c.Health.Failures = DefaultProbeFailures
	}
	if c.LogRecords < 0 || c.LogRecords > MaxLogRecords {
		return c.errf("log_records", "%d is out of range; write a number in 0..%d", c.LogRecords, MaxLogRecords)
	}
	if c.LogRecords == 0 {
		c.LogRecords = DefaultLogRecords
	}
	if c.RunLogsKeep < 0 || c.RunLogsKeep > MaxRunLogsKeep {
		return c.errf("run_logs_keep", "%d is out of range; write a number in 0..%d", c.RunLogsKeep, MaxRunLogsKeep)
	}
	if c.RunLogsKeep == 0 {
		c.RunLogsKeep = DefaultRunLogsKeep
	}
	if c.RunLogs != "" {
		if fi, err := os.Stat(c.RunLogs); err != nil || !fi.IsDir() {
			return c.errf("run_logs", "%q is not a directory; create it (mkdir -p) or leave run_logs out", c.RunLogs)
		}
	}
	switch n := len(c.Enclaves); {
	case n == 0:
		return c.errf("enclaves", "no enclaves; list at least one (name, eif, cpus, memory_mib)")
	case n > MaxEnclaves:
		return c.errf("enclaves", "%d enclaves listed; an instance runs at most %d: move the others to another instance", n, MaxEnclaves)
	}

	// vsock ports the parent listens on, with the field that claims each.
	ports := map[uint32]string{}
	claim := func(field string, port uint32) error {
		if other, dup := ports[port]; dup {
			return c.errf(field, "parent vsock port %d is also used by %s; give each its own port", port, other)
		}
		ports[port] = field
		return nil
	}
	slotPort := uint32(c.Slot * SlotPortStride)
	if c.Egress != nil {
		if err := c.Egress.Validate(); err != nil {
			var fe *proxy.FieldError
			if errors.As(err, &fe) {
				return c.errf("egress."+fe.Path, "%s", fe.Reason)
			}
			return c.errf("egress", "%v", err)
		}
		for i := range c.Egress.Routes {
			r := &c.Egress.Routes[i]
			field := fmt.Sprintf("egress.routes[%d].listen", i)
			a, _ := transport.ParseAddr(r.Listen) // checked by Validate
			if a.Network == transport.NetworkVsock {
				a.Port += slotPort
				r.Listen = a.String()
				if err := claim(field, a.Port); err != nil {
					return err
				}
			}
		}
	}

	names := map[string]int{}
	cids := map[uint32]int{}
	tcpListens := map[string]string{}
	for i := range c.Enclaves {
		e := &c.Enclaves[i]
		p := fmt.Sprintf("enclaves[%d]", i)
		if !nameRE.MatchString(e.Name) {
			return c.errf(p+".name", "%q is not a usable name; write 1..32 lower-case letters, digits or '-', e.g. signer", e.Name)
		}
		if j, dup := names[e.Name]; dup {
			return c.errf(p+".name", "%q is also the name of enclaves[%d]; names must be unique", e.Name, j)
		}
		names[e.Name] = i
		if e.EIF == "" {
			return c.errf(p+".eif", "missing; write the path of the enclave image (.eif)")
		}
		if e.CPUs < 0 {
			return c.errf(p+".cpus", "%d is negative; write the vCPU count, e.g. %d", e.CPUs, DefaultCPUs)
		}
		if e.CPUs == 0 {
			e.CPUs = DefaultCPUs
		}
		if e.MemoryMiB < MinMemoryMiB {
			return c.errf(p+".memory_mib", "%d is too small; write at least %d (enclavekit eif describe prints what the image needs)", e.MemoryMiB, MinMemoryMiB)
		}
		if e.CID == 0 {
			e.CID = FirstCID + uint32(i)
		} else if e.CID < 4 || e.CID > maxCID {
			return c.errf(p+".cid", "%d is reserved; write a CID of 4 or more, or leave cid out to get %d", e.CID, FirstCID+i)
		}
		e.CID += uint32(c.Slot * SlotCIDStride)
		if j, dup := cids[e.CID]; dup {
			return c.errf(p+".cid", "CID %d is also the CID of enclaves[%d]; give each enclave its own CID, or leave cid out", e.CID, j)
		}
		cids[e.CID] = i
		if e.Port == 0 {
			e.Port = DefaultEnclavePort
		}
		if e.Address == "" {
			e.Address = fmt.Sprintf("vsock://%d:%d", e.CID, e.Port)
		} else if _, err := transport.ParseAddr(e.Address); err != nil {
			return c.errf(p+".address", "%q: %v; write e.g. tcp://127.0.0.1:5000, or leave it out", e.Address, err)
		}
		if e.LogSink == "" {
			e.LogSink = fmt.Sprintf("vsock://any:%d", DefaultLogSinkPort+i)
		}
		a, err := transport.ParseAddr(e.LogSink)
		if err != nil {
			return c.errf(p+".log_sink", "%q: %v; write e.g. vsock://any:5001, or leave it out", e.LogSink, err)
		}
		if a.Network == transport.NetworkVsock {
			a.Port += slotPort
			e.LogSink = a.String()
			if err := claim(p+".log_sink", a.Port); err != nil {
				return err
			}
		}
		for k := range e.Ingress {
			in := &e.Ingress[k]
			q := fmt.Sprintf("%s.ingress[%d]", p, k)
			if in.Listen == "" {
				return c.errf(q+".listen", "missing; write the parent address clients connect to, e.g. tcp://0.0.0.0:443")
			}
			la, err := transport.ParseAddr(in.Listen)
			if err != nil {
				return c.errf(q+".listen", "%q: %v; write e.g. tcp://0.0.0.0:443", in.Listen, err)
			}
			if !strings.HasSuffix(la.String(), ":0") {
				if other, dup := tcpListens[la.String()]; dup {
					return c.errf(q+".listen", "%s is also where %s listens; give each its own port", in.Listen, other)
				}
				tcpListens[la.String()] = q
			}
			if in.Target == "" {
				if in.Port == 0 {
					return c.errf(q+".port", "missing; write the enclave's vsock port the connections go to, e.g. 443")
				}
				in.Target = fmt.Sprintf("vsock://%d:%d", e.CID, in.Port)
			} else if _, err := transport.ParseAddr(in.Target); err != nil {
				return c.errf(q+".target", "%q: %v; leave it out to use vsock://CID:port", in.Target, err)
			}
			if in.MaxConns < 0 {
				return c.errf(q+".max_conns", "%d is negative; write a positive cap, or leave it out for the default %d", in.MaxConns, ingress.DefaultMaxConns)
			}
		}
	}
	return nil
}

// Assignment is where one enclave was placed.
type Assignment struct {
	Name    string `json:"name"`
	CID     uint32 `json:"cid"`
	Address string `json:"address"`  // the enclave server, as the supervisor reaches it
	LogSink string `json:"log_sink"` // the parent's log sink for it
	Debug   bool   `json:"debug"`
}

// Assignments reports the CIDs and parent addresses of every enclave after
// Validate.
func (c *Config) Assignments() []Assignment {
	var out []Assignment
	for _, e := range c.Enclaves {
		out = append(out, Assignment{Name: e.Name, CID: e.CID, Address: e.Address, LogSink: e.LogSink, Debug: e.Debug})
	}
	return out
}

// EgressListens are the egress route addresses after Validate (moved by
// Slot).
func (c *Config) EgressListens() []string {
	if c.Egress == nil {
		return nil
	}
	var out []string
	for _, r := range c.Egress.Routes {
		out = append(out, r.Listen)
	}
	return out
}

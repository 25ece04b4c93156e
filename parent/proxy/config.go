package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/enclavekit/enclavekit/parent/internal/yamlconf"
	"github.com/enclavekit/enclavekit/transport"
)

// DefaultAllowlistFile is where AWS vsock-proxy keeps its allowlist; the
// vsock-proxy command reads it when --config is not given.
const DefaultAllowlistFile = "/etc/nitro_enclaves/vsock-proxy.yaml"

// Defaults applied by Config.withDefaults for zero-valued limits, and the
// limits' bounds.
const (
	DefaultMaxConns         = 4096
	DefaultDialTimeout      = 10 * time.Second
	DefaultIdleTimeout      = 5 * time.Minute
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultDrainTimeout     = 30 * time.Second
	DefaultMaxHeaderBytes   = 8 << 10
	// MaxHeaderBytesLimit bounds Limits.MaxHeaderBytes.
	MaxHeaderBytesLimit = 1 << 20
)

// maxConfigBytes bounds the size of a configuration file.
const maxConfigBytes = 4 << 20

// ErrConfig is wrapped by every configuration error of the package: those
// of Config.Validate, LoadConfig, ParseConfig and NewAllowlist, and so of
// New. They are *FieldErrors, which name the field by its YAML path
// ("limits.max_conns"), as the file's author wrote it.
var ErrConfig = errors.New("proxy: bad configuration")

// Config is the proxy's configuration. The YAML form (see LoadConfig) uses
// the snake_case names given in each field's tag. A file holding only AWS
// vsock-proxy's "allowlist:" key is a valid Config with no routes; New
// needs at least one route. Every zero limit takes the default documented
// on it.
type Config struct {
	// Routes are the listening endpoints. Each forwards either to one fixed
	// destination (To) or, with Connect, to the destination named in an HTTP
	// CONNECT request. At least one route is needed to run a proxy.
	Routes []Route `yaml:"routes"`

	// Allowlist holds the only destinations the proxy will connect to, in
	// AWS vsock-proxy's format ({address, port}). Address is a DNS name
	// (matched case-insensitively, without a trailing dot) or an IP address;
	// CIDR ranges are not accepted. Every IP a name resolves to must also
	// pass the denylist (see Allowlist.Check).
	Allowlist []AllowEntry `yaml:"allowlist"`

	// Limits bound resource use; zero values take the Default* constants.
	Limits Limits `yaml:"limits"`

	// Metrics is the transport address ("tcp://127.0.0.1:9100") on which
	// /metrics is served in the Prometheus text format. Empty: not served
	// (the metrics are still registered in Options.Registry).
	Metrics string `yaml:"metrics"`

	// Network restricts the address families used towards destinations:
	// "tcp" (both; "" means it), "tcp4" (IPv4 only, like vsock-proxy -4)
	// or "tcp6" (IPv6 only, like vsock-proxy -6).
	Network string `yaml:"network"`
}

// Route is one listening endpoint.
type Route struct {
	// Name labels the route in logs and metrics; default: Listen.
	Name string `yaml:"name"`
	// Listen is the transport address to accept on: "vsock://any:8000" in
	// production, "tcp://127.0.0.1:0" in tests.
	Listen string `yaml:"listen"`
	// To is the fixed destination "host:port" (IPv6 in brackets). Bytes
	// pass through untouched, so TLS is end to end. It must be allowlisted.
	// Exactly one of To and Connect is set.
	To string `yaml:"to"`
	// Connect makes the route an HTTP CONNECT proxy (usable as HTTPS_PROXY):
	// each connection starts with "CONNECT host:port HTTP/1.1", and the
	// destination must be allowlisted.
	Connect bool `yaml:"connect"`
}

// AllowEntry is one allowlisted destination, as in AWS vsock-proxy's file.
type AllowEntry struct {
	// Address is a DNS name or an IP address (no CIDR).
	Address string `yaml:"address"`
	// Port is the TCP port, 1..65535.
	Port int `yaml:"port"`
}

// Limits bound the proxy's resource use. The zero value is valid: every
// zero field takes the default documented on it; negative values are
// errors.
type Limits struct {
	// MaxConns caps the connections open at once over all routes; beyond
	// it, new connections are refused at once. 0 means DefaultMaxConns
	// (4096).
	MaxConns int `yaml:"max_conns"`
	// DialTimeout bounds name resolution plus connecting to a destination
	// (all its addresses together). 0 means DefaultDialTimeout (10s).
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// IdleTimeout closes a connection after no byte moved in either
	// direction for this long, or when a write to one side was blocked
	// this long (a peer that stops reading). A busy one-way stream is
	// never idle. 0 means DefaultIdleTimeout (5m).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// HandshakeTimeout bounds reading a CONNECT request. 0 means
	// DefaultHandshakeTimeout (10s).
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// DrainTimeout is how long Serve waits for open connections to finish
	// after its context is cancelled before closing them. 0 means
	// DefaultDrainTimeout (30s).
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// MaxHeaderBytes bounds a CONNECT request (request line and headers);
	// a longer one gets 431. At most MaxHeaderBytesLimit (1 MiB); 0 means
	// DefaultMaxHeaderBytes (8 KiB).
	MaxHeaderBytes int `yaml:"max_header_bytes"`
}

// FieldError is a configuration error about one field, named by its path
// ("routes[1].to"). LoadConfig turns it into "FILE:LINE: ..." form.
type FieldError struct {
	Path   string // e.g. "routes[1].to"; empty for the whole config
	Reason string
	File   string // set by LoadConfig
	Line   int    // set by LoadConfig when known
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			b.WriteString(":" + strconv.Itoa(e.Line))
		}
		b.WriteString(": ")
	} else if e.Line > 0 {
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap makes errors.Is(err, ErrConfig) true.
func (e *FieldError) Unwrap() error { return ErrConfig }

func fieldErr(path, format string, args ...any) *FieldError {
	return &FieldError{Path: path, Reason: fmt.Sprintf(format, args...)}
}

// withDefaults returns c with zero limits replaced by the defaults.
func (c Config) withDefaults() Config {
	l := &c.Limits
	if l.MaxConns == 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.DialTimeout == 0 {
		l.DialTimeout = DefaultDialTimeout
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if l.HandshakeTimeout == 0 {
		l.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if l.DrainTimeout == 0 {
		l.DrainTimeout = DefaultDrainTimeout
	}
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.Network == "" {
		c.Network = "tcp"
	}
	routes := make([]Route, len(c.Routes))
	for i, r := range c.Routes {
		r.Name = routeName(i, r)
		routes[i] = r
	}
	c.Routes = routes
	return c
}

// routeName is r.Name or, by default, r.Listen — with "#i" appended when
// the port is 0 (tests), so that names stay unique.
func routeName(i int, r Route) string {
	switch {
	case r.Name != "":
		return r.Name
	case strings.HasSuffix(r.Listen, ":0"):
		return r.Listen + "#" + strconv.Itoa(i)
	}
	return r.Listen
}

// Validate checks the whole configuration, including that there is at
// least one route and that every fixed destination is allowlisted. The
// error is a *FieldError wrapping ErrConfig.
func (c Config) Validate() error {
	if err := c.validate(); err != nil {
		return err
	}
	if len(c.Routes) == 0 {
		if len(c.Allowlist) > 0 {
			return fieldErr("routes", "no routes: this file has only an allowlist, as AWS vsock-proxy's does; "+
				"run it with enclavekit vsock-proxy --config FILE LOCAL_PORT HOST PORT, or add routes (deploy/config/proxy.yaml shows both)")
		}
		return fieldErr("routes", "no routes: at least one is needed")
	}
	return nil
}

// validate is Validate without the "at least one route" rule.
func (c Config) validate() error {
	al, err := NewAllowlist(c.Allowlist)
	if err != nil {
		return err
	}
	switch c.Network {
	case "", "tcp", "tcp4", "tcp6":
	default:
		return fieldErr("network", "%q is not tcp, tcp4 or tcp6", c.Network)
	}
	names := map[string]int{}
	listens := map[string]int{}
	for i, r := range c.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		if r.Listen == "" {
			return fieldErr(p+".listen", "missing")
		}
		a, err := transport.ParseAddr(r.Listen)
		if err != nil {
			return fieldErr(p+".listen", "%v", err)
		}
		if j, dup := listens[a.String()]; dup && !strings.HasSuffix(a.String(), ":0") {
			return fieldErr(p+".listen", "same address as routes[%d]", j)
		}
		listens[a.String()] = i
		name := routeName(i, r)
		if j, dup := names[name]; dup {
			return fieldErr(p+".name", "%q is also the name of routes[%d]; names label metrics and must be unique", name, j)
		}
		names[name] = i
		switch {
		case r.Connect && r.To != "":
			return fieldErr(p, "set either to or connect: true, not both")
		case !r.Connect && r.To == "":
			return fieldErr(p, "missing to (a fixed host:port) or connect: true")
		case r.To != "":
			host, port, err := SplitHostPort(r.To)
			if err != nil {
				return fieldErr(p+".to", "%v", err)
			}
			if !al.Permits(host, port) {
				return fieldErr(p+".to", "%s is not on the allowlist; add {address: %s, port: %d}", r.To, host, port)
			}
		}
	}
	l := c.Limits
	switch {
	case l.MaxConns < 0:
		return fieldErr("limits.max_conns", "%d is negative; write a count, or leave it out for the default %d", l.MaxConns, DefaultMaxConns)
	case l.MaxHeaderBytes < 0 || l.MaxHeaderBytes > MaxHeaderBytesLimit:
		return fieldErr("limits.max_header_bytes", "%d is out of range; write a number in 1..%d, or leave it out for the default %d", l.MaxHeaderBytes, MaxHeaderBytesLimit, DefaultMaxHeaderBytes)
	}
	for _, d := range []struct {
		path     string
		v, deflt time.Duration
	}{
		{"limits.dial_timeout", l.DialTimeout, DefaultDialTimeout},
		{"limits.idle_timeout", l.IdleTimeout, DefaultIdleTimeout},
		{"limits.handshake_timeout", l.HandshakeTimeout, DefaultHandshakeTimeout},
		{"limits.drain_timeout", l.DrainTimeout, DefaultDrainTimeout},
	} {
		if d.v < 0 {
			return fieldErr(d.path, "%v is negative; write a duration such as %v, or leave it out for that default", d.v, d.deflt)
		}
	}
	if c.Metrics != "" {
		if _, err := transport.ParseAddr(c.Metrics); err != nil {
			return fieldErr("metrics", "%v", err)
		}
	}
	return nil
}

// SplitHostPort splits "host:port" into a normalized host (lower case, no
// trailing dot, IPv6 without brackets) and a port in 1..65535.
func SplitHostPort(hp string) (string, int, error) {
	h, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port (IPv6 in brackets)", hp)
	}
	port, err := parsePort(ps)
	if err != nil {
		return "", 0, err
	}
	host, err := normalizeHost(h)
	if err != nil {
		return "", 0, err
	}
	return host, port, nil
}

func parsePort(s string) (int, error) {
	if s == "" || len(s) > 5 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("port %q is not a number in 1..65535", s)
	}
	n, _ := strconv.Atoi(s)
	if n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q is not a number in 1..65535", s)
	}
	return n, nil
}

// hostnameRE is a permissive DNS name (letters, digits, '-', '_', dots).
var hostnameRE = regexp.MustCompile(`^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$`)

// normalizeHost lower-cases a DNS name and strips one trailing dot, or
// canonicalizes an IP address. Zones, CIDRs and odd characters are errors,
// and so is a name whose last label is a number ("2130706433", "127.1",
// "0x7f.1", "0177.0.0.1"): no such top-level domain exists, while
// inet_aton-style resolvers (glibc's getaddrinfo, used by cgo builds) read
// those as IPv4 literals, so such a "name" could never be matched to the
// IP it stands for.
func normalizeHost(h string) (string, error) {
	if h == "" {
		return "", errors.New("empty host")
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		if ip.Zone() != "" {
			return "", fmt.Errorf("host %q: IPv6 zones are not allowed", h)
		}
		return ip.Unmap().String(), nil
	}
	if strings.Contains(h, "/") {
		return "", fmt.Errorf("host %q: CIDR ranges are not supported; list each IP", h)
	}
	for i := 0; i < len(h); i++ {
		// Checked before lower-casing: strings.ToLower maps some
		// non-ASCII letters (U+212A KELVIN SIGN) to ASCII ones.
		if h[i] >= 0x80 {
			return "", fmt.Errorf("host %q is not an ASCII DNS name (use the xn-- form) or an IP address", h)
		}
	}
	n := strings.TrimSuffix(strings.ToLower(h), ".")
	if ip, err := netip.ParseAddr(n); err == nil && ip.Is4() {
		return ip.String(), nil // "169.254.169.254." is that IP, not a name
	}
	if len(n) > 253 || !hostnameRE.MatchString(n) {
		return "", fmt.Errorf("host %q is not a DNS name or an IP address", h)
	}
	if numericLabelRE.MatchString(n[strings.LastIndexByte(n, '.')+1:]) {
		return "", fmt.Errorf("host %q: a numeric last label is an IPv4 address in a form this proxy does not accept; use dotted decimal", h)
	}
	return n, nil
}

// numericLabelRE is a label that an inet_aton-style parser reads as a
// number (decimal, octal or hex).
var numericLabelRE = regexp.MustCompile(`^(?:[0-9]+|0x[0-9a-f]*)$`)

// LoadConfig reads and checks a YAML configuration file (ours, or AWS
// vsock-proxy's allowlist file as is). Unknown keys, bad addresses and a
// fixed destination that is not allowlisted are errors naming the file and
// line. An empty routes list is accepted here (AWS's file has none); New
// requires at least one route.
func LoadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return Config{}, err
	}
	if len(data) > maxConfigBytes {
		return Config{}, &FieldError{File: path, Reason: "file larger than 4 MiB"}
	}
	return ParseConfig(path, data)
}

// ParseConfig is LoadConfig on bytes; name is used in error messages.
func ParseConfig(name string, data []byte) (Config, error) {
	var cfg Config
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return Config{}, yamlErr(name, err)
	}
	if root.Kind == 0 { // empty document
		return cfg, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return Config{}, yamlErr(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return Config{}, &FieldError{File: name, Line: extra.Line, Reason: "more than one YAML document"}
	}
	if err := cfg.validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			fe.File = name
			fe.Line = lineOf(&root, fe.Path)
			return Config{}, fe
		}
		return Config{}, err
	}
	return cfg, nil
}

// yamlErr turns the YAML library's errors into FieldErrors without Go
// type names.
func yamlErr(name string, err error) error {
	line, reason := yamlconf.Reason(err, yamlconf.Hints{
		Unknown: map[string]string{
			"whitelist": "this file's allowlist key is allowlist (vsock-proxy's old files said whitelist)",
		},
		Want: map[string]string{
			"[]proxy.Route":      "a list of routes (- listen: …)",
			"[]proxy.AllowEntry": "a list of entries such as - {address: kms.eu-west-1.amazonaws.com, port: 443}",
		},
		Fields: "docs/operations.md",
	})
	return &FieldError{File: name, Line: line, Reason: reason}
}

// lineOf finds the line of a field path like "routes[1].to".
func lineOf(root *yaml.Node, path string) int { return yamlconf.LineOf(root, path) }

// Package proxy is the parent instance's egress proxy: the enclave has no
// network, so its KMS and HTTPS traffic leaves through here. It is a
// faster, safer replacement for AWS vsock-proxy that serves many routes in
// one process.
//
// # Routes
//
// Each route listens on a transport address (vsock://any:8000 in
// production, tcp://127.0.0.1:0 in tests) and either forwards every
// connection to one fixed host:port (To; bytes pass untouched, so TLS is
// end to end) or, with Connect, reads an HTTP "CONNECT host:port" request
// and forwards to that destination when allowed, so HTTP clients in the
// enclave can use the route as HTTPS_PROXY. Refused CONNECT requests get
// 400 (malformed), 403 (not allowed), 405 (not CONNECT), 408 (too slow),
// 431 (headers over Limits.MaxHeaderBytes), 502/504 (dial failed/timed out)
// or 503 (connection cap).
//
// # Allowlist and denylist
//
// The allowlist is AWS vsock-proxy's format, read as is from
// /etc/nitro_enclaves/vsock-proxy.yaml or from our own config: entries
// {address, port} where address is a DNS name or an IP address (no CIDR
// ranges). A destination is allowed only if its host and port are listed.
// The proxy resolves names itself and checks every resolved address
// against a denylist — loopback, link-local (169.254.169.254 included),
// unspecified, multicast and, beyond what AWS checks, the private ranges
// of RFC 1918 and IPv6 ULA (fd00:ec2::254, IMDS over IPv6, is one),
// 0.0.0.0/8, 100.64.0.0/10, 240.0.0.0/4, IPv6 site-local fec0::/10, the
// IPv4-compatible ::/96 and SIIT ::ffff:0:0:0/96 prefixes, and IPv6 forms
// embedding a denied IPv4 address (mapped, NAT64, 6to4, Teredo). Names
// whose last label is numeric ("2130706433", "0x7f.1") are refused as
// malformed: some resolvers read them as IPv4 literals.
// A denied address is allowed only when that exact IP and port are
// themselves listed. If any resolved address is denied, the destination is
// refused; the addresses checked are the ones dialed, so a DNS answer that
// changes between check and dial (rebinding) cannot reach IMDS. Refusals
// are logged (route, destination, reason) and counted. Reload (SIGHUP in
// the CLI) swaps the allowlist atomically without touching open
// connections.
//
// # Forwarding
//
// Both directions are copied at once by transport.Relay; EOF on one side
// is passed on with CloseWrite (half close). Between TCP conns on Linux the
// kernel splices (Go's (*net.TCPConn).ReadFrom). Other pairs (vsock↔TCP in
// production) copy through pooled 64 KiB buffers, grown to 1 MiB (at most
// 64 of them at once) while a stream is bulk. A connection waiting for
// bytes holds neither a buffer nor a splice pipe, only its two sockets.
// Limits: a global connection cap refused at once (no queueing), a dial
// timeout, a per-connection idle timeout on activity in either direction
// (a busy one-way stream is never idle) that also bounds a blocked write
// (see Limits.IdleTimeout), a handshake timeout for CONNECT, and a
// graceful drain when Serve's context ends. Refusals are logged
// rate-limited per route and reason (transport.LogLimiter); accept errors
// are retried only when transient (transport.Acceptor), and any other
// stops that route's listener, logged.
//
// # Metrics
//
// Prometheus metrics (see metrics.go for the list) are registered in
// Options.Registry and served at /metrics on Config.Metrics.
package proxy

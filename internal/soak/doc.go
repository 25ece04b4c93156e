// Package soak is the long-running load test behind "make soak" (the
// "enclavekit soak" command): it starts an enclave server, a parent client,
// the egress proxy and a hashing TCP sink on loopback and, for a fixed
// duration, drives three loads at once:
//
//   - RPC: Options.Concurrency goroutines share one parent.Client and call
//     an echo method with random bodies (0..Options.MaxBody bytes); every
//     response is compared with its request byte for byte.
//   - Proxy: Options.Streams goroutines send random payloads
//     (0..Options.MaxStreamBytes) through a fixed proxy route to a sink that
//     answers with the byte count and SHA-256 of what it received; both ends
//     are compared, and lost and corrupted bytes are counted.
//   - Slowloris: Options.Slowloris connections to the enclave server send 2
//     bytes of a frame header and stall for the whole run (the server is
//     configured so that they are not cut; any that are, are reported).
//
// Every second it samples the goroutine count, the resident set size and
// the RPC rate and latency. At the end it stops everything, waits (bounded)
// for the goroutine count to return to where it started, and returns a
// Report whose Problems list every violated invariant: a failed or
// mismatched call, a lost or corrupted proxy byte, a leaked goroutine, a
// slowloris connection cut, or memory that kept growing.
//
// Everything runs in the calling process on 127.0.0.1; nothing leaves the
// machine. See docs/soak.md for how to read the report.
package soak

// Package bench is the side-by-side benchmark module of enclavekit: the
// peers a parent service would pick instead (gRPC-go, net/http, HAProxy,
// socat) are measured here, so that their dependencies stay out of the main
// module. Run it with `make bench-report`; see cmd/benchreport.
package bench

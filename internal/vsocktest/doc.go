// Package vsocktest holds the tests that run enclavekit's components on real
// AF_VSOCK sockets. A machine with /dev/vsock but no enclave (a parent
// instance, or a VM with the vsock module) can test the local side only:
// listeners open and accept loops start and stop on vsock, and dials to
// context IDs with no peer fail promptly with *net.OpError. End-to-end
// traffic over vsock needs a running enclave; docs/operations.md gives the
// commands to check it on EC2. Elsewhere the tests skip, saying why.
package vsocktest

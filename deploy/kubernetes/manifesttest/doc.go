// Package manifesttest checks the Kubernetes manifests in deploy/kubernetes:
// every document decodes strictly (unknown fields refused) into its
// Kubernetes API type, and the pod asks for what `enclavekit run` needs:
// the Nitro Enclaves device, hugepages of at least four times the EIF,
// probes on the supervisor's endpoints, and a distinct slot (hence
// distinct CIDs and parent vsock ports) per pod.
//
// It is a module of its own so that the Kubernetes API dependencies stay
// out of enclavekit's go.mod; `make test` runs it.
package manifesttest

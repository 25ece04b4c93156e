package eif

import "fmt"

// MemoryFactor is how many times its file size nitro-cli wants an enclave's
// memory to be: run-enclave refuses less (error E26, insufficient memory
// requested), because the image is unpacked into the enclave's memory.
const MemoryFactor = 4

// MinMemoryMiB is the least memory an enclave is given, whatever its size.
const MinMemoryMiB = 64

// Sizing is the memory an image needs and the Kubernetes hugepages
// requests that cover it.
type Sizing struct {
	FileBytes int64 // the EIF's size
	// MemoryMiB is the least --memory (MiB) run-enclave accepts for it:
	// MemoryFactor × the file size, rounded up to a MiB, at least
	// MinMemoryMiB.
	MemoryMiB uint64
	// Hugepages2Mi and Hugepages1Gi are MemoryMiB rounded up to whole 2 MiB
	// and 1 GiB pages, as Kubernetes quantities ("512Mi", "1Gi") for the
	// resources hugepages-2Mi or hugepages-1Gi.
	Hugepages2Mi, Hugepages1Gi string
}

// SizingFor computes the Sizing of an EIF of size bytes.
func SizingFor(size int64) Sizing {
	const mib = 1 << 20
	s := Sizing{FileBytes: size}
	if size < 0 {
		size = 0
	}
	need := (uint64(size)*MemoryFactor + mib - 1) / mib
	s.MemoryMiB = max(need, MinMemoryMiB)
	s.Hugepages2Mi = fmt.Sprintf("%dMi", (s.MemoryMiB+1)/2*2)
	s.Hugepages1Gi = fmt.Sprintf("%dGi", (s.MemoryMiB+1023)/1024)
	return s
}

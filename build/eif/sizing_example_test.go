package eif_test

import (
	"fmt"

	"github.com/enclavekit/enclavekit/build/eif"
)

// Size an enclave for a 300 MiB image: run-enclave's --memory and the pod's
// hugepages request.
func ExampleSizingFor() {
	s := eif.SizingFor(300 << 20)
	fmt.Println(s.MemoryMiB, s.Hugepages2Mi, s.Hugepages1Gi)
	// Output: 1200 1200Mi 2Gi
}

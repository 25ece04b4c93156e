package main

import (
	"context"
	"os"
)

// The PCRs of an EIF image, as they go into a KMS key policy.
func Example_eifPCRs() {
	run(context.Background(), []string{"eif", "pcrs", "../../build/eif/testdata/golden_v4.eif"}, os.Stdout, os.Stderr)
	// Output:
	// PCR0 0c15e04f2cb59f3c581c64238dfb64507547a0992c56061d5dc589e27b86170ba8427141285cdd321fe212f3966b2a5b
	// PCR1 9237e66416d307a2147622f59fd28d93768fafa9fd8c27b2514422651c293548f1e6471f394a90f876113e1ec7f088b0
	// PCR2 ce5c8a7ca2a12c05467b6b2d04ef02305f0b7a26178d3b621e730309c5584b78e382c2498f14b0dc8af03fe8d4eb49cb
}

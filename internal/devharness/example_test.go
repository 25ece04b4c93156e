package devharness_test

import (
	"context"
	"fmt"
	"io"

	"github.com/enclavekit/enclavekit/internal/devharness"
)

// Run the whole system on loopback and the scripted session; Out receives
// one line per step (os.Stdout in "enclavekit dev").
func ExampleRun() {
	err := devharness.Run(context.Background(), devharness.Options{Out: io.Discard})
	fmt.Println("all steps passed:", err == nil)
	// Output: all steps passed: true
}

package enclaved

import (
	"context"
	"fmt"
	"os"
	"testing/fstest"
)

// Outside a Nitro Enclave, enclaved refuses to start unless --dev is given.
func Example() {
	sys := fstest.MapFS{
		"sys/devices/virtual/misc/hw_random/rng_current":                  {Data: []byte("virtio_rng.0\n")},
		"sys/devices/system/clocksource/clocksource0/current_clocksource": {Data: []byte("kvm-clock\n")},
	}
	code := run(context.Background(), []string{"--listen", "tcp://127.0.0.1:0", "--log-sink", "none"}, os.Stdout, os.Stdout, sys)
	fmt.Println("exit status", code)
	// Output:
	// enclaved: enclave: refusing to start: startup check "rng" failed: /sys/devices/virtual/misc/hw_random/rng_current contains "virtio_rng.0", required "nsm-hwrng" (run inside a Nitro Enclave; for development only, pass --dev / set Config.Dev to downgrade this to a warning)
	// exit status 1
}

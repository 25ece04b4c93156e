package parent_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/enclavekit/enclavekit/parent"
)

// Call a set of enclaves; an idempotent call moves to another enclave when
// the first one cannot answer. On a parent instance the addresses are
// vsock://16:5000, vsock://17:5000, ….
func ExampleNewPool() {
	a, stopA := startExampleEnclave()
	defer stopA()
	b, stopB := startExampleEnclave()
	defer stopB()

	ctx := context.Background()
	pool, err := parent.NewPool(ctx, parent.PoolOptions{
		Addrs:  []string{a, b},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()

	stopB() // one enclave goes away; the pool has not noticed yet
	for range 4 {
		var sum int
		err := pool.Call(ctx, "calc.add", map[int]int{1: 2, 2: 40}, &sum, parent.Idempotent())
		fmt.Println(sum, err)
	}
	// Output:
	// 42 <nil>
	// 42 <nil>
	// 42 <nil>
	// 42 <nil>
}

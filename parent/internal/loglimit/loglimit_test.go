package loglimit

import (
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestLimiterSynctest: the first warning passes, then one per Interval,
// however many goroutines ask at once.
func TestLimiterSynctest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var l Limiter
		steps := []struct {
			after time.Duration // since the previous step
			want  int64         // warnings let through among 8 goroutines
		}{
			{0, 1},
			{time.Second, 0},
			{Interval - time.Second - 1, 0},
			{1, 1},
			{Interval / 2, 0},
			{2 * Interval, 1},
		}
		for i, st := range steps {
			time.Sleep(st.after)
			var passed atomic.Int64
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					if l.Allow() {
						passed.Add(1)
					}
				})
			}
			wg.Wait()
			if got := passed.Load(); got != st.want {
				t.Fatalf("step %d: %d warnings let through, want %d", i, got, st.want)
			}
		}
	})
}

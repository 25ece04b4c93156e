package soak

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// histBuckets covers every uint64 nanosecond value: 16 linear buckets per
// power of two, so a quantile is known to within 1/16 (about 6%).
const histBuckets = 1024

// histogram is a lock-free latency histogram; record is safe for
// concurrent use.
type histogram struct {
	counts [histBuckets]atomic.Uint64
	max    atomic.Int64
}

func bucketOf(ns uint64) int {
	shift := max(bits.Len64(ns)-5, 0)
	return 16*shift + int(ns>>uint(shift))
}

// bucketUpper is the largest value that falls in bucket i.
func bucketUpper(i int) uint64 {
	shift := 0
	if i >= 32 {
		shift = i/16 - 1
	}
	lo := uint64(i-16*shift) << uint(shift)
	return lo + (uint64(1) << uint(shift)) - 1
}

func (h *histogram) record(d time.Duration) {
	ns := max(int64(d), 0)
	h.counts[bucketOf(uint64(ns))].Add(1)
	for {
		m := h.max.Load()
		if ns <= m || h.max.CompareAndSwap(m, ns) {
			return
		}
	}
}

// histSnap is a copy of a histogram's counts.
type histSnap [histBuckets]uint64

func (h *histogram) snap() *histSnap {
	var s histSnap
	for i := range h.counts {
		s[i] = h.counts[i].Load()
	}
	return &s
}

// since returns s minus an earlier snapshot (nil means zero).
func (s *histSnap) since(prev *histSnap) *histSnap {
	d := *s
	if prev != nil {
		for i := range d {
			d[i] -= prev[i]
		}
	}
	return &d
}

func (s *histSnap) total() uint64 {
	var n uint64
	for _, c := range s {
		n += c
	}
	return n
}

// quantile returns the upper edge of the bucket holding the q-quantile
// (0 < q ≤ 1), or 0 for an empty histogram.
func (s *histSnap) quantile(q float64) time.Duration {
	n := s.total()
	if n == 0 {
		return 0
	}
	rank := uint64(q * float64(n))
	if rank == 0 {
		rank = 1
	}
	var cum uint64
	for i, c := range s {
		cum += c
		if cum >= rank {
			return time.Duration(bucketUpper(i))
		}
	}
	return time.Duration(bucketUpper(histBuckets - 1))
}

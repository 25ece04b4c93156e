package eif

import "testing"

func TestSizingFor(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		size    int64
		mem     uint64
		h2, h1g string
	}{
		{0, 64, "64Mi", "1Gi"},
		{10 * mib, 64, "64Mi", "1Gi"},
		{16 * mib, 64, "64Mi", "1Gi"},
		{16*mib + 1, 65, "66Mi", "1Gi"},
		{100 * mib, 400, "400Mi", "1Gi"},
		{300 * mib, 1200, "1200Mi", "2Gi"},
		{257*mib - 1, 1028, "1028Mi", "2Gi"},
	} {
		s := SizingFor(tc.size)
		if s.MemoryMiB != tc.mem || s.Hugepages2Mi != tc.h2 || s.Hugepages1Gi != tc.h1g {
			t.Errorf("SizingFor(%d) = %+v, want %d MiB, %s, %s", tc.size, s, tc.mem, tc.h2, tc.h1g)
		}
		if tc.size > 0 && int64(s.MemoryMiB)*mib < 4*tc.size {
			t.Errorf("SizingFor(%d): %d MiB is less than four times the file", tc.size, s.MemoryMiB)
		}
	}
}

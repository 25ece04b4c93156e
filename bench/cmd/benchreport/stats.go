package main

import (
	"slices"
)

// series is one figure's samples, one per round.
type series []float64

func (s series) median() float64 {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	if len(c)%2 == 1 {
		return c[len(c)/2]
	}
	return (c[len(c)/2-1] + c[len(c)/2]) / 2
}

func (s series) lo() float64 { return slices.Min(s) }
func (s series) hi() float64 { return slices.Max(s) }

// percentile returns the p-th percentile (0..100) of xs, nearest rank.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	c := slices.Clone(xs)
	slices.Sort(c)
	i := int(p/100*float64(len(c))+0.5) - 1
	return c[min(max(i, 0), len(c)-1)]
}

// interleave returns the order of n peers in round r: forward on even
// rounds, reversed on odd ones, so that no peer always runs first.
func interleave(n, r int) []int {
	o := make([]int, n)
	for i := range o {
		o[i] = i
		if r%2 == 1 {
			o[i] = n - 1 - i
		}
	}
	return o
}

// row is one peer's figure in a table, with its same-round ratio to the
// table's reference peer.
type row struct {
	Peer    string
	Values  series
	Ratios  series // value_ref/value or value/value_ref per round, see section.RatioHigherBetter
	Skipped string // why the peer was not measured
	Extra   string // a note, e.g. allocations per call
}

// section is one table (and one chart) of the report.
type section struct {
	ID, Title, Unit string
	// HigherBetter says whether a larger value is better (throughput) or
	// worse (latency, memory); the ratio column is always "better is >1".
	HigherBetter bool
	Reference    string // the peer ratios are taken against
	Note         string
	Rows         []row
}

// measure runs f for every peer in interleaved rounds and fills a section.
func measure(sec section, peers []string, rounds int, f func(peer string) (float64, error)) (section, error) {
	vals := make([]series, len(peers))
	for r := range rounds {
		for _, i := range interleave(len(peers), r) {
			v, err := f(peers[i])
			if err != nil {
				return sec, err
			}
			vals[i] = append(vals[i], v)
		}
	}
	ref := -1
	for i, p := range peers {
		if p == sec.Reference {
			ref = i
		}
	}
	for i, p := range peers {
		rw := row{Peer: p, Values: vals[i]}
		if ref >= 0 {
			for k := range vals[i] {
				a, b := vals[i][k], vals[ref][k]
				if a == 0 || b == 0 {
					continue
				}
				if sec.HigherBetter {
					rw.Ratios = append(rw.Ratios, a/b)
				} else {
					rw.Ratios = append(rw.Ratios, b/a)
				}
			}
		}
		sec.Rows = append(sec.Rows, rw)
	}
	return sec, nil
}

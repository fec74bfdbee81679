package blockio

import (
	"io"
	"sort"
)

// Extent is the byte range [Start, End) of a volume.
type Extent struct{ Start, End int64 }

// Changes is what changed-block tracking reports: the sorted, disjoint ranges of a volume that
// may differ from an earlier state of it. Everything outside them is unchanged.
type Changes []Extent

// NextChange returns the next changed range that ends after off, starting at off at the
// earliest; io.EOF when none is left. It is how a backup walks the changes in volume order.
func (c Changes) NextChange(off int64) (start, end int64, err error) {
	i := sort.Search(len(c), func(i int) bool { return c[i].End > off })
	if i == len(c) {
		return 0, 0, io.EOF
	}
	return max(c[i].Start, off), c[i].End, nil
}

// Bytes is the total length of the changed ranges.
func (c Changes) Bytes() int64 {
	var n int64
	for _, e := range c {
		n += e.End - e.Start
	}
	return n
}

// add appends [start, end), merging it with the last range when they touch. Ranges must come
// in order.
func (c Changes) add(start, end int64) Changes {
	if end <= start {
		return c
	}
	if n := len(c); n > 0 && start <= c[n-1].End {
		c[n-1].End = max(c[n-1].End, end)
		return c
	}
	return append(c, Extent{start, end})
}

// Union returns the ranges in c or in d (both sorted and disjoint), merged where they touch.
func (c Changes) Union(d Changes) Changes {
	var out Changes
	for i, j := 0, 0; i < len(c) || j < len(d); {
		var e Extent
		if j == len(d) || (i < len(c) && c[i].Start <= d[j].Start) {
			e, i = c[i], i+1
		} else {
			e, j = d[j], j+1
		}
		out = out.add(e.Start, e.End)
	}
	return out
}

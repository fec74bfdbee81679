package repo

import (
	"math/rand/v2"
	"os"
	"slices"
	"testing"
)

// The mark set answers exactly what a map would, in memory and spilled to many runs, for
// addresses asked in ascending order (contains), at random (has), and for absent ones.
func TestMarkSetMatchesAMap(t *testing.T) {
	for _, limit := range []int{1 << 20, 1000, 7} {
		rng := rand.New(rand.NewPCG(uint64(limit), 1))
		tmp := t.TempDir()
		s := newMarkSet(tmp, limit)
		want := map[Address]bool{}
		var all []Address
		for range 5000 {
			var a Address
			if len(all) > 0 && rng.IntN(4) == 0 {
				a = all[rng.IntN(len(all))] // a repeat
			} else {
				for j := range a {
					a[j] = byte(rng.Uint32())
				}
				all = append(all, a)
			}
			want[a] = true
			if err := s.add(a); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.finish(); err != nil {
			t.Fatal(err)
		}
		if s.len() != int64(len(want)) {
			t.Fatalf("limit %d: len %d, want %d", limit, s.len(), len(want))
		}
		// Ascending: the index's order; absent addresses in between.
		var asked []Address
		for _, a := range all {
			asked = append(asked, a)
			b := a
			b[31] ^= 0x5a
			asked = append(asked, b)
		}
		slices.SortFunc(asked, cmpAddr)
		for _, a := range asked {
			got, err := s.contains(a)
			if err != nil {
				t.Fatal(err)
			}
			if got != want[a] {
				t.Fatalf("limit %d: contains(%s) = %v, want %v", limit, a.Short(), got, want[a])
			}
		}
		// Out of order, then at random.
		rng.Shuffle(len(asked), func(i, j int) { asked[i], asked[j] = asked[j], asked[i] })
		for _, a := range asked[:2000] {
			c, err := s.contains(a)
			if err != nil {
				t.Fatal(err)
			}
			h, err := s.has(a)
			if err != nil {
				t.Fatal(err)
			}
			if c != want[a] || h != want[a] {
				t.Fatalf("limit %d: %s: contains %v has %v, want %v", limit, a.Short(), c, h, want[a])
			}
		}
		s.close()
		if left, _ := os.ReadDir(tmp); len(left) != 0 {
			t.Fatalf("limit %d: %d temporary files left", limit, len(left))
		}
	}
}

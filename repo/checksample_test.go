package repo

import (
	"bytes"
	"math"
	"testing"
)

// samplePacks picks n of the packs, each as often as any other, and a new choice every time.
func TestSamplePacksUniform(t *testing.T) {
	stored := map[PackID]int64{}
	for i := range 50 {
		stored[PackID{byte(i), 7}] = int64(i)
	}
	const rounds = 4000
	count := map[PackID]int{}
	for range rounds {
		ids := samplePacks(stored, 10)
		if len(ids) != 5 {
			t.Fatalf("10 %% of 50 packs: %d", len(ids))
		}
		for i, id := range ids {
			if _, ok := stored[id]; !ok {
				t.Fatalf("sample holds a pack that is not stored: %s", id)
			}
			if i > 0 && bytes.Compare(ids[i-1][:], id[:]) >= 0 {
				t.Fatalf("sample not in the order of ids, or a pack twice: %v", ids)
			}
			count[id]++
		}
	}
	// Each pack is chosen with probability 1/10: 400 times in expectation, standard deviation
	// 19; 6 deviations either side fail by chance about once in 10^8 runs.
	for id := range stored {
		if c := count[id]; math.Abs(float64(c)-400) > 6*19 {
			t.Errorf("pack %s chosen %d times of %d, expected about 400", id, c, rounds)
		}
	}
	for _, tc := range []struct {
		percent float64
		want    int
	}{{0, 50}, {100, 50}, {0.01, 1}, {2.5, 2}, {99.9, 50}} {
		if got := len(samplePacks(stored, tc.percent)); got != tc.want {
			t.Errorf("a sample of %v %% of 50 packs: %d, want %d", tc.percent, got, tc.want)
		}
	}
	if got := samplePacks(map[PackID]int64{}, 5); len(got) != 0 {
		t.Errorf("a sample of no packs: %v", got)
	}
}

// A check's report keeps the first 1,000 problems' texts and counts them all: repair and the
// CLI said "1000 problems" of a repository with more.
func TestCheckReportCountsEveryProblem(t *testing.T) {
	rep := &CheckReport{}
	for i := range 1500 {
		rep.problem("problem %d", i)
	}
	if len(rep.Problems) != 1000 || rep.ProblemCount != 1500 || rep.OK() {
		t.Fatalf("%d texts, %d counted, ok %v; want 1000 texts and 1500 counted", len(rep.Problems), rep.ProblemCount, rep.OK())
	}
}

package retention_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway/retention"
)

// randomItems makes n backups over about three years, clustered the way schedules and manual
// runs cluster: runs of backups minutes to days apart, some at the same instant.
func randomItems(rng *rand.Rand, n int) []retention.Item {
	t := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []time.Duration{0, time.Minute, 17 * time.Minute, time.Hour, 6 * time.Hour, 24 * time.Hour, 9 * 24 * time.Hour, 40 * 24 * time.Hour}
	out := make([]retention.Item, n)
	for i := range out {
		t = t.Add(steps[rng.IntN(len(steps))] + time.Duration(rng.IntN(3600))*time.Second*time.Duration(rng.IntN(2)))
		out[i] = retention.Item{ID: fmt.Sprintf("%08x", rng.Uint32()), Time: t}
	}
	return out
}

// randomCount is 0 half the time, else a small count or unlimited.
func randomCount(rng *rand.Rand) int {
	if rng.IntN(2) == 0 {
		return 0
	}
	return rng.IntN(8) - 1
}

func randomRules(rng *rand.Rand, locs []*time.Location) retention.Rules {
	r := retention.Rules{
		Last: randomCount(rng), Hourly: randomCount(rng), Daily: randomCount(rng),
		Weekly: randomCount(rng), Monthly: randomCount(rng), Yearly: randomCount(rng),
		Location: locs[rng.IntN(len(locs))],
	}
	if rng.IntN(3) == 0 {
		r.Within = time.Duration(rng.IntN(30*24)) * time.Hour
	}
	return r
}

// TestApplyProperties checks on random sets what must hold for any backups and rules: the
// newest is kept, a kept item has a reason and a dropped one none, Last keeps exactly the
// newest, the result does not depend on the order of the input, rules add up (the rules
// together keep what each keeps alone), and empty rules keep only the newest.
func TestApplyProperties(t *testing.T) {
	var locs []*time.Location
	for _, name := range []string{"UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"} {
		loc, err := time.LoadLocation(name)
		if err != nil {
			t.Fatalf("load %s: %v", name, err)
		}
		locs = append(locs, loc)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for trial := range 300 {
		in := randomItems(rng, 1+rng.IntN(80))
		r := randomRules(rng, locs)
		got := retention.Apply(in, r)
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("seed %d trial %d, %d items, rules %v: %s", seed, trial, len(in), r, fmt.Sprintf(format, args...))
		}

		if len(got) != len(in) || !got[0].Keep {
			fail("%d decisions, newest kept %v", len(got), len(got) > 0 && got[0].Keep)
		}
		for i, d := range got {
			if d.Keep != (len(d.Reasons) > 0) {
				fail("%s: keep %v, reasons %q", d.ID, d.Keep, d.Reasons)
			}
			if i > 0 && d.Time.After(got[i-1].Time) {
				fail("not newest first at %d", i)
			}
			if slices.Contains(d.Reasons, retention.ReasonLast) != (r.Last < 0 || i < r.Last) {
				fail("%s at %d: reasons %q with last %d", d.ID, i, d.Reasons, r.Last)
			}
		}

		shuffled := slices.Clone(in)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if again := retention.Apply(shuffled, r); !sameDecisions(again, got) {
			fail("shuffled input decides differently")
		}

		// Each rule alone, then the union of what they keep.
		union := map[string]bool{got[0].ID: true}
		for _, one := range split(r) {
			for _, id := range kept(retention.Apply(in, one)) {
				union[id] = true
			}
		}
		for _, d := range got {
			if d.Keep != union[d.ID] {
				fail("%s: kept %v together, %v by the rules alone", d.ID, d.Keep, union[d.ID])
			}
		}

		none := retention.Apply(in, retention.Rules{Location: r.Location})
		if k := kept(none); len(k) != 1 || k[0] != got[0].ID || none[0].Reasons[0] != retention.ReasonNewest {
			fail("empty rules kept %q", k)
		}
	}
}

// split returns r as one Rules per rule it sets.
func split(r retention.Rules) []retention.Rules {
	base := retention.Rules{Location: r.Location}
	var out []retention.Rules
	add := func(n int, set func(*retention.Rules)) {
		if n != 0 {
			one := base
			set(&one)
			out = append(out, one)
		}
	}
	add(r.Last, func(o *retention.Rules) { o.Last = r.Last })
	add(r.Hourly, func(o *retention.Rules) { o.Hourly = r.Hourly })
	add(r.Daily, func(o *retention.Rules) { o.Daily = r.Daily })
	add(r.Weekly, func(o *retention.Rules) { o.Weekly = r.Weekly })
	add(r.Monthly, func(o *retention.Rules) { o.Monthly = r.Monthly })
	add(r.Yearly, func(o *retention.Rules) { o.Yearly = r.Yearly })
	if r.Within > 0 {
		one := base
		one.Within = r.Within
		out = append(out, one)
	}
	return out
}

func sameDecisions(a, b []retention.Decision) bool {
	return slices.EqualFunc(a, b, func(x, y retention.Decision) bool {
		return x.ID == y.ID && x.Time.Equal(y.Time) && x.Keep == y.Keep && slices.Equal(x.Reasons, y.Reasons)
	})
}

// TestApplyUnlimitedIsNewestPerBucket checks a calendar rule with no limit against its
// definition on random sets: an item is kept exactly when no newer item shares its bucket.
func TestApplyUnlimitedIsNewestPerBucket(t *testing.T) {
	cet := berlin(t)
	buckets := []struct {
		rules retention.Rules
		key   func(time.Time) string
	}{
		{retention.Rules{Hourly: -1, Location: cet}, func(t time.Time) string { return t.In(cet).Format("2006-01-02 15") }},
		{retention.Rules{Daily: -1, Location: cet}, func(t time.Time) string { return t.In(cet).Format(time.DateOnly) }},
		{retention.Rules{Weekly: -1, Location: cet}, func(t time.Time) string {
			y, w := t.In(cet).ISOWeek()
			return fmt.Sprintf("%d-W%02d", y, w)
		}},
		{retention.Rules{Monthly: -1, Location: cet}, func(t time.Time) string { return t.In(cet).Format("2006-01") }},
		{retention.Rules{Yearly: -1, Location: cet}, func(t time.Time) string { return t.In(cet).Format("2006") }},
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := range 50 {
		in := randomItems(rng, 1+rng.IntN(80))
		for _, b := range buckets {
			seen := map[string]bool{}
			for _, d := range retention.Apply(in, b.rules) {
				k := b.key(d.Time)
				if d.Keep == seen[k] {
					t.Fatalf("trial %d, %v: %s (%s) keep %v, a newer item in its bucket %v", trial, b.rules, d.ID, k, d.Keep, seen[k])
				}
				seen[k] = true
			}
		}
	}
}

package calendar

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// For random specs and instants, Next(t) is after t, matches, and nothing matches in between:
// a walk over every second (skipping hours and minutes whose wall time cannot match) with a
// matcher that reads the chains directly, not the bit sets Next uses. Instants cluster around
// the daylight saving changes of the zones.
func TestNextProperties(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	zones := []*time.Location{time.UTC, mustLoad(t, "Europe/Berlin"), mustLoad(t, "America/New_York")}
	changes := []time.Time{ // around 01:00 UTC in Europe, 06:00/07:00 UTC in New York
		time.Date(2026, 3, 29, 1, 0, 0, 0, time.UTC), time.Date(2026, 10, 25, 1, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 8, 7, 0, 0, 0, time.UTC), time.Date(2026, 11, 1, 6, 0, 0, 0, time.UTC),
	}
	const window = 40 * 24 * time.Hour
	cases := 300
	if testing.Short() {
		cases = 50
	}
	for range cases {
		expr := randomExpr(r)
		s, err := Parse(expr)
		if err != nil {
			t.Fatalf("Parse(%q): %v", expr, err)
		}
		loc := zones[r.IntN(len(zones))]
		if s.loc != nil {
			loc = s.loc
		}
		var at time.Time
		if r.IntN(2) == 0 {
			at = changes[r.IntN(len(changes))].Add(time.Duration(r.IntN(6*3600)-3*3600) * time.Second)
		} else {
			at = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.Int64N(int64(5 * 365 * 24 * time.Hour))))
		}
		at = at.In(loc)
		for range 3 {
			next := s.Next(at)
			want := bruteNext(s, at, loc, at.Add(window))
			if !next.IsZero() && !next.After(at) {
				t.Fatalf("%q (%s) from %v: Next = %v, not after", expr, s, at, next)
			}
			if !next.IsZero() && !matches(s, next.In(loc)) {
				t.Fatalf("%q (%s) from %v: Next = %v does not match", expr, s, at, next)
			}
			if !want.IsZero() && !want.Equal(next) || want.IsZero() && !next.IsZero() && next.Before(at.Add(window)) {
				t.Fatalf("%q (%s) from %v: Next = %v, the walk found %v", expr, s, at, next, want)
			}
			if next.IsZero() {
				break
			}
			at = next
		}
	}
}

// randomExpr returns a valid expression that fires often enough for the walk: its date is
// mostly "*".
func randomExpr(r *rand.Rand) string {
	var words []string
	if r.IntN(3) == 0 {
		a := r.IntN(7)
		b := a + r.IntN(7-a)
		words = append(words, weekdayNames[a]+".."+weekdayNames[b])
		if r.IntN(2) == 0 {
			words[0] += "," + weekdayNames[r.IntN(7)]
		}
	}
	if r.IntN(3) == 0 {
		day := randomChain(r, 1, 31)
		sep := "-"
		if r.IntN(3) == 0 {
			sep, day = "~", randomChain(r, 1, 28)
		}
		words = append(words, "*-"+randomChain(r, 1, 12)+sep+day)
	}
	if r.IntN(5) != 0 {
		tm := randomChain(r, 0, 23) + ":" + randomChain(r, 0, 59)
		if r.IntN(2) == 0 {
			tm += ":" + randomChain(r, 0, 59)
		}
		words = append(words, tm)
	}
	if len(words) == 0 {
		words = append(words, []string{"minutely", "hourly", "daily", "weekly", "monthly"}[r.IntN(5)])
	}
	if r.IntN(5) == 0 {
		words = append(words, []string{"UTC", "Europe/Berlin", "America/New_York"}[r.IntN(3)])
	}
	return strings.Join(words, " ")
}

// randomChain returns a valid list for a field of range lo..hi.
func randomChain(r *rand.Rand, lo, hi int) string {
	if r.IntN(3) == 0 {
		return "*"
	}
	var items []string
	for range 1 + r.IntN(3) {
		a := lo + r.IntN(hi-lo+1)
		switch r.IntN(4) {
		case 0:
			items = append(items, fmt.Sprint(a))
		case 1:
			if a+1 <= hi {
				items = append(items, fmt.Sprintf("%d..%d", a, a+1+r.IntN(hi-a)))
				continue
			}
			items = append(items, fmt.Sprint(a))
		case 2:
			// For a day counted back from the month's end the repetition counts towards day 1.
			if lo == 1 && hi == 28 {
				if a > 1 {
					items = append(items, fmt.Sprintf("%d/%d", a, 1+r.IntN(a-1)))
					continue
				}
			} else if a < hi {
				items = append(items, fmt.Sprintf("%d/%d", a, 1+r.IntN(hi-a)))
				continue
			}
			items = append(items, fmt.Sprint(a))
		default:
			if a+1 <= hi {
				items = append(items, fmt.Sprintf("%d..%d/%d", a, a+1+r.IntN(hi-a), 1+r.IntN(4)))
				continue
			}
			items = append(items, fmt.Sprint(a))
		}
	}
	return strings.Join(items, ",")
}

// bruteNext walks the seconds after after until limit and returns the first that matches, or
// the zero Time. Hours and minutes whose wall time cannot match are stepped over whole, which
// is safe in zones whose offsets are whole hours.
func bruteNext(s *Spec, after time.Time, loc *time.Location, limit time.Time) time.Time {
	u := after.Truncate(time.Second).Add(time.Second)
	for u.Before(limit) {
		w := u.In(loc)
		switch {
		case !matchesHour(s, w):
			u = u.Add(time.Duration(3600-w.Minute()*60-w.Second()) * time.Second)
		case !has(s.minute, w.Minute(), 59):
			u = u.Add(time.Duration(60-w.Second()) * time.Second)
		case matches(s, w):
			return u
		default:
			u = u.Add(time.Second)
		}
	}
	return time.Time{}
}

func matchesHour(s *Spec, w time.Time) bool {
	y, m, d := w.Date()
	wd := (int(w.Weekday()) + 6) % 7
	if s.weekdays != 0 && s.weekdays&(1<<wd) == 0 {
		return false
	}
	if s.endOfMonth {
		if !hasBack(s.day, daysIn(y, int(m))-d+1) {
			return false
		}
	} else if !has(s.day, d, 31) {
		return false
	}
	return has(s.year, y, maxYear) && has(s.month, int(m), 12) && has(s.hour, w.Hour(), 23)
}

// matches reports whether the spec matches w, read in w's zone, and w is the first instant
// whose clock shows that wall time.
func matches(s *Spec, w time.Time) bool {
	if !matchesHour(s, w) || !has(s.minute, w.Minute(), 59) || !has(s.second, w.Second(), 59) {
		return false
	}
	for _, back := range []time.Duration{30 * time.Minute, time.Hour, 2 * time.Hour} {
		if wallClock(w.Add(-back)).Equal(wallClock(w)) {
			return false
		}
	}
	return true
}

// has reports whether v is in ch, for a field whose values end at hi.
func has(ch chain, v, hi int) bool {
	if ch == nil {
		return true
	}
	for _, c := range ch {
		switch {
		case c.stop >= 0:
			if v >= c.start && v <= c.stop && (v-c.start)%c.repeat == 0 {
				return true
			}
		case c.repeat > 0:
			if v >= c.start && v <= hi && (v-c.start)%c.repeat == 0 {
				return true
			}
		case v == c.start:
			return true
		}
	}
	return false
}

// hasBack reports whether ch holds the day back days from the end of the month (1 is the
// last), for a day counted from the end: a repetition without a range counts towards day 1.
func hasBack(ch chain, back int) bool {
	for _, c := range ch {
		switch {
		case c.stop >= 0:
			if back >= c.start && back <= c.stop && (back-c.start)%c.repeat == 0 {
				return true
			}
		case c.repeat > 0:
			if back >= 1 && back <= c.start && (c.start-back)%c.repeat == 0 {
				return true
			}
		case back == c.start:
			return true
		}
	}
	return false
}

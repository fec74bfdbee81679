package calendar

import (
	"math/bits"
	"time"
)

// maxSteps bounds Next's outer loop. Each step either returns or moves past a wall time that
// does not exist (a jump of the clock), so a few hundred are the most a search until maxYear
// takes; the bound only guards against a time zone whose rules Next misreads.
const maxSteps = 1 << 14

// Next returns the first time strictly after `after` that the spec matches, in the spec's time
// zone if it names one, else in after.Location(); the zero Time when none exists (e.g.
// 2025-02-30 never exists, nor anything after 2199). Matches are whole seconds. See the
// package comment for what happens when the clock changes for daylight saving time.
//
// Next searches field by field (year, month, day, then the time of day), so its cost does not
// grow with the distance to the next match.
func (s *Spec) Next(after time.Time) time.Time {
	loc := s.loc
	if loc == nil {
		loc = after.Location()
	}
	a := after.In(loc)
	w := wallClock(a).Add(time.Second)
	// In the second pass of an hour the clock repeated, the wall times up to the end of that
	// hour already fired in the first pass.
	if start, _ := a.ZoneBounds(); !start.IsZero() {
		_, off := a.Zone()
		if _, prev := start.Add(-time.Second).Zone(); prev > off {
			if end := time.Unix(start.Unix()+int64(prev), 0).UTC(); w.Before(end) {
				w = end
			}
		}
	}
	for range maxSteps {
		var ok bool
		if w, ok = s.nextWall(w); !ok {
			return time.Time{}
		}
		t, ok, skip := resolve(w, loc)
		switch {
		case !ok:
			w = skip
		case t.After(after):
			return t
		default:
			w = w.Add(time.Second)
		}
	}
	return time.Time{}
}

// A wall time is what a clock in some zone shows, held in a time.Time in UTC so that it
// compares and adds like one; wallClock reads t's, to the second.
func wallClock(t time.Time) time.Time {
	_, off := t.Zone()
	return time.Unix(t.Unix()+int64(off), 0).UTC()
}

// resolve returns the instant at which loc's clock shows w, the first one if it shows it
// twice. If the clock jumps over w, ok is false and skip is the first wall time after the jump.
func resolve(w time.Time, loc *time.Location) (t time.Time, ok bool, skip time.Time) {
	y, mo, d := w.Date()
	h, mi, sec := w.Clock()
	t = time.Date(y, mo, d, h, mi, sec, 0, loc)
	got := wallClock(t)
	start, end := t.ZoneBounds()
	if !got.Equal(w) {
		// time.Date normalized w to one side of the jump; the jump is at that zone's edge.
		edge := start
		if got.Before(w) {
			edge = end
		}
		skip = w.Add(time.Second)
		if !edge.IsZero() {
			if e := wallClock(edge); e.After(w) {
				skip = e
			}
		}
		return time.Time{}, false, skip
	}
	if !start.IsZero() {
		_, off := t.Zone()
		if _, prev := start.Add(-time.Second).Zone(); prev > off {
			// The clock went back when t's zone began: w may have shown before, at the
			// same wall time in the previous offset.
			if e := t.Add(-time.Duration(prev-off) * time.Second); e.Before(start) && wallClock(e).Equal(w) {
				return e, true, time.Time{}
			}
		}
	}
	return t, true, time.Time{}
}

// nextWall returns the first wall time at or after w that the spec matches, ignoring time
// zones; false when there is none before maxYear ends.
func (s *Spec) nextWall(w time.Time) (time.Time, bool) {
	y, mo, d := w.Date()
	h, mi, sec := w.Clock()
	m := int(mo)
	st := &s.sets
	for y <= maxYear {
		ny, ok := st.nextYear(y)
		if !ok {
			return time.Time{}, false
		}
		if ny != y {
			y, m, d, h, mi, sec = ny, 1, 1, 0, 0, 0
		}
		nm, ok := nextBit(st.months, m)
		if !ok {
			y, m, d, h, mi, sec = y+1, 1, 1, 0, 0, 0
			continue
		}
		if nm != m {
			m, d, h, mi, sec = nm, 1, 0, 0, 0
		}
		nd, ok := nextBit(st.days[daysIn(y, m)-28], d)
		if !ok {
			m, d, h, mi, sec = m+1, 1, 0, 0, 0
			continue
		}
		if nd != d {
			d, h, mi, sec = nd, 0, 0, 0
		}
		if s.weekdays != 0 && s.weekdays&(1<<weekday(y, m, d)) == 0 {
			d, h, mi, sec = d+1, 0, 0, 0
			continue
		}
		nh, ok := nextBit(st.hours, h)
		if !ok {
			d, h, mi, sec = d+1, 0, 0, 0
			continue
		}
		if nh != h {
			h, mi, sec = nh, 0, 0
		}
		nmi, ok := nextBit(st.minutes, mi)
		if !ok {
			h, mi, sec = h+1, 0, 0
			continue
		}
		if nmi != mi {
			mi, sec = nmi, 0
		}
		ns, ok := nextBit(st.seconds, sec)
		if !ok {
			mi, sec = mi+1, 0
			continue
		}
		return time.Date(y, time.Month(m), d, h, mi, ns, 0, time.UTC), true
	}
	return time.Time{}, false
}

// nextBit returns the lowest value >= v in the set b.
func nextBit(b uint64, v int) (int, bool) {
	if v >= 64 {
		return 0, false
	}
	if v > 0 {
		b &^= 1<<v - 1
	}
	if b == 0 {
		return 0, false
	}
	return bits.TrailingZeros64(b), true
}

func (st *sets) nextYear(y int) (int, bool) {
	if st.anyYear {
		return y, y <= maxYear
	}
	if y < minYear {
		y = minYear
	}
	for i := (y - minYear) / 64; i < len(st.years); i++ {
		lo := 0
		if i == (y-minYear)/64 {
			lo = (y - minYear) % 64
		}
		if v, ok := nextBit(st.years[i], lo); ok {
			return minYear + i*64 + v, true
		}
	}
	return 0, false
}

func daysIn(y, m int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// weekday returns 0 for Monday … 6 for Sunday.
func weekday(y, m, d int) int {
	return (int(time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC).Weekday()) + 6) % 7
}

package calendar

import (
	"fmt"
	"strings"
	"time"
)

// The years an expression may name, as systemd allows them.
const (
	minYear = 1970
	maxYear = 2199
)

// A Spec is a parsed calendar expression: which weekdays, years, months, days, hours, minutes
// and seconds it matches, and the time zone it names, if any. It is immutable and safe for
// concurrent use.
type Spec struct {
	weekdays   uint8 // bit 0 is Monday … bit 6 Sunday; 0 means every day
	year       chain
	month      chain
	day        chain
	endOfMonth bool // day values count back from the end of the month ("~")
	hour       chain
	minute     chain
	second     chain
	zone       string         // "", "UTC" or the IANA name as written
	loc        *time.Location // nil when zone is "": Next uses the zone of its argument

	sets sets // what the chains match, derived once by Parse for Next
}

// A component is one element of a list: a value (stop -1, repeat 0), a value repeated every
// repeat up to the end of the field's range (stop -1), or a range, repeated every repeat
// (1 when the range names none, as systemd keeps it).
type component struct{ start, stop, repeat int }

// A chain is a field's list of components, sorted and without duplicates; nil is "*".
type chain []component

// each calls fn with every value c stands for, up to hi. A value repeated without a range
// counts up to hi, or, for days counted from the end of the month (down), towards day one.
func (c component) each(hi int, down bool, fn func(int)) {
	switch {
	case c.stop >= 0:
		for v := c.start; v <= c.stop; v += c.repeat {
			fn(v)
		}
	case c.repeat > 0 && down:
		for v := c.start; v >= 1; v -= c.repeat {
			fn(v)
		}
	case c.repeat > 0:
		for v := c.start; v <= hi; v += c.repeat {
			fn(v)
		}
	default:
		fn(c.start)
	}
}

// bits is the set of values (0..63) that ch matches within lo..hi.
func (ch chain) bits(lo, hi int) uint64 {
	var b uint64
	if ch == nil {
		for v := lo; v <= hi; v++ {
			b |= 1 << v
		}
		return b
	}
	for _, c := range ch {
		c.each(hi, false, func(v int) {
			if v >= lo && v <= hi {
				b |= 1 << v
			}
		})
	}
	return b
}

// sets holds what a Spec matches as bit sets, so Next finds the next matching value of a
// field with one instruction instead of walking the chain.
type sets struct {
	anyYear bool
	years   [(maxYear - minYear + 64) / 64]uint64 // bit i is year minYear+i
	months  uint64                                // bits 1..12
	days    [4]uint64                             // days of a month with 28+i days, bits 1..31
	hours   uint64
	minutes uint64
	seconds uint64
}

func (s *Spec) deriveSets() {
	st := &s.sets
	st.anyYear = s.year == nil
	for _, c := range s.year {
		c.each(maxYear, false, func(y int) {
			if y >= minYear && y <= maxYear {
				st.years[(y-minYear)/64] |= 1 << ((y - minYear) % 64)
			}
		})
	}
	st.months = s.month.bits(1, 12)
	for i := range st.days {
		last := 28 + i
		if !s.endOfMonth {
			st.days[i] = s.day.bits(1, last)
			continue
		}
		for _, c := range s.day {
			c.each(last, true, func(back int) {
				if d := last - back + 1; d >= 1 && d <= last {
					st.days[i] |= 1 << d
				}
			})
		}
	}
	st.hours = s.hour.bits(0, 23)
	st.minutes = s.minute.bits(0, 59)
	st.seconds = s.second.bits(0, 59)
}

// String returns the normalized expression, as `systemd-analyze calendar` prints it:
// "Mon..Fri *-*-* 02:00:00". Parse of it gives an equal Spec.
func (s *Spec) String() string {
	var b strings.Builder
	if s.weekdays != 0 {
		formatWeekdays(&b, s.weekdays)
		b.WriteByte(' ')
	}
	s.year.format(&b, 4)
	b.WriteByte('-')
	s.month.format(&b, 2)
	if s.endOfMonth {
		b.WriteByte('~')
	} else {
		b.WriteByte('-')
	}
	s.day.format(&b, 2)
	b.WriteByte(' ')
	s.hour.format(&b, 2)
	b.WriteByte(':')
	s.minute.format(&b, 2)
	b.WriteByte(':')
	s.second.format(&b, 2)
	if s.zone != "" {
		b.WriteByte(' ')
		b.WriteString(s.zone)
	}
	return b.String()
}

func (ch chain) format(b *strings.Builder, width int) {
	if ch == nil {
		b.WriteByte('*')
		return
	}
	for i, c := range ch {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(b, "%0*d", width, c.start)
		if c.stop >= 0 {
			fmt.Fprintf(b, "..%0*d", width, c.stop)
		}
		if c.repeat > 0 && (c.stop < 0 || c.repeat != 1) {
			fmt.Fprintf(b, "/%d", c.repeat)
		}
	}
}

var weekdayNames = [7]string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}

// formatWeekdays writes runs of three or more days as ranges (Mon..Fri) and shorter ones as
// lists (Sat,Sun), as systemd does.
func formatWeekdays(b *strings.Builder, days uint8) {
	first := true
	for d := 0; d < 7; {
		if days&(1<<d) == 0 {
			d++
			continue
		}
		end := d
		for end+1 < 7 && days&(1<<(end+1)) != 0 {
			end++
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(weekdayNames[d])
		switch {
		case end == d+1:
			b.WriteString("," + weekdayNames[end])
		case end > d+1:
			b.WriteString(".." + weekdayNames[end])
		}
		d = end + 1
	}
}

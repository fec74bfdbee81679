package calendar

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzParse: Parse never panics, its errors are one line, String of a Spec parses to the same
// Spec, and Next of it answers a later time or none. The seed corpus is in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	after := time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr string) {
		s, err := Parse(expr)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("Parse(%q): error of more than one line: %q", expr, err)
			}
			return
		}
		again, err := Parse(s.String())
		if err != nil {
			t.Fatalf("Parse(%q) = %s, which does not parse: %v", expr, s, err)
		}
		if !sameSpec(s, again) {
			t.Fatalf("Parse(%q) = %s, which parses to %s", expr, s, again)
		}
		if next := s.Next(after); !next.IsZero() && !next.After(after) {
			t.Fatalf("%s: Next(%v) = %v", s, after, next)
		}
	})
}

func sameSpec(a, b *Spec) bool {
	return a.weekdays == b.weekdays && a.endOfMonth == b.endOfMonth && a.zone == b.zone &&
		slices.Equal(a.year, b.year) && slices.Equal(a.month, b.month) && slices.Equal(a.day, b.day) &&
		slices.Equal(a.hour, b.hour) && slices.Equal(a.minute, b.minute) && slices.Equal(a.second, b.second) &&
		a.sets == b.sets
}

package calendar

import (
	"strings"
	"testing"
	"time"
)

func mustLoad(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// Each row asks Next from after (RFC 3339, read in zone) and then from each answer in turn;
// want lists the answers, "never" for the zero Time. The expectations were checked with
// `TZ=zone systemd-analyze calendar --base-time=… --iterations=N` (systemd 252); where
// systemd answers differently the row says why.
func TestNext(t *testing.T) {
	for _, tc := range []struct {
		name, expr, zone, after string
		want                    []string
	}{
		// The examples.
		{"daily", "daily", "UTC", "2026-12-01T10:52:13Z",
			[]string{"2026-12-02T00:00:00Z", "2026-12-03T00:00:00Z"}},
		{"weekdays", "Mon..Fri 02:00", "UTC", "2026-12-03T10:00:00Z",
			[]string{"2026-12-04T02:00:00Z", "2026-12-07T02:00:00Z", "2026-12-08T02:00:00Z"}},
		{"quarter hours", "*:0/15", "UTC", "2026-12-01T10:52:13Z",
			[]string{"2026-12-01T11:00:00Z", "2026-12-01T11:15:00Z"}},
		{"ten seconds across a minute", "*:*:0/10", "UTC", "2026-12-01T10:52:55.5Z",
			[]string{"2026-12-01T10:53:00Z", "2026-12-01T10:53:10Z"}},
		{"weekend", "Sat,Sun 03:30", "UTC", "2026-12-01T10:52:13Z",
			[]string{"2026-12-05T03:30:00Z", "2026-12-06T03:30:00Z", "2026-12-12T03:30:00Z"}},
		{"first of the month across the year", "*-*-01 00:00", "UTC", "2026-12-01T00:00:00Z",
			[]string{"2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z"}},
		{"leap day", "*-02-29 12:00", "UTC", "2026-01-01T00:00:00Z",
			[]string{"2028-02-29T12:00:00Z", "2032-02-29T12:00:00Z"}},
		{"one instant, in UTC from elsewhere", "2026-12-24 18:00 UTC", "Europe/Berlin", "2026-12-01T00:00:00+01:00",
			[]string{"2026-12-24T18:00:00Z", "never"}},
		{"strictly after", "2026-12-24 18:00 UTC", "UTC", "2026-12-24T18:00:00Z", []string{"never"}},

		// Month ends.
		{"31st skips 30-day months", "*-*-31", "UTC", "2026-03-31T00:00:00Z",
			[]string{"2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z", "2026-08-31T00:00:00Z", "2026-10-31T00:00:00Z"}},
		{"30th skips February", "*-*-30 06:00", "UTC", "2027-01-30T06:00:00Z",
			[]string{"2027-03-30T06:00:00Z"}},
		{"last day of the month", "*-*~01", "UTC", "2028-01-31T00:00:00Z",
			[]string{"2028-02-29T00:00:00Z", "2028-03-31T00:00:00Z", "2028-04-30T00:00:00Z"}},
		{"every other day from the third-last", "*-02~03/2", "UTC", "2026-12-01T10:52:13Z",
			[]string{"2027-02-26T00:00:00Z", "2027-02-28T00:00:00Z", "2028-02-27T00:00:00Z", "2028-02-29T00:00:00Z"}},
		{"never exists", "2025-02-30", "UTC", "2024-01-01T00:00:00Z", []string{"never"}},
		{"31st of April, every year", "*-04-31 12:00", "UTC", "2024-01-01T00:00:00Z", []string{"never"}},
		{"in the past", "2020-01-01", "UTC", "2026-01-01T00:00:00Z", []string{"never"}},
		{"after 2199", "daily", "UTC", "2199-12-31T00:00:00Z", []string{"never"}},

		// Leap years.
		{"leap day 2100 is not", "*-02-29", "UTC", "2096-03-01T00:00:00Z",
			[]string{"2104-02-29T00:00:00Z"}},
		{"leap day in a named year", "2026..2028-02-29", "UTC", "2026-01-01T00:00:00Z",
			[]string{"2028-02-29T00:00:00Z", "never"}},

		// Weeks and years: ISO week 1 begins on the Monday of the week with the year's first Thursday.
		{"weekly across the year", "weekly", "UTC", "2024-12-29T12:00:00Z",
			[]string{"2024-12-30T00:00:00Z", "2025-01-06T00:00:00Z"}},
		{"Monday of ISO week 1 when it falls in January", "Mon *-01-01..04", "UTC", "2025-06-01T00:00:00Z",
			[]string{"2027-01-04T00:00:00Z", "2028-01-03T00:00:00Z"}},
		{"first Thursday", "Thu *-01-01..07", "UTC", "2026-12-31T00:00:00Z",
			[]string{"2027-01-07T00:00:00Z", "2028-01-06T00:00:00Z"}},
		{"last Sunday of the year", "Sun *-12~01..07 23:59:59", "UTC", "2026-01-01T00:00:00Z",
			[]string{"2026-12-27T23:59:59Z", "2027-12-26T23:59:59Z"}},

		// Weekday and date together.
		{"Friday the 13th", "Fri *-*-13", "UTC", "2026-01-01T00:00:00Z",
			[]string{"2026-02-13T00:00:00Z", "2026-03-13T00:00:00Z", "2026-11-13T00:00:00Z"}},
		{"first Monday of the month", "Mon *-*-01..07 04:00", "UTC", "2026-06-01T05:00:00Z",
			[]string{"2026-07-06T04:00:00Z", "2026-08-03T04:00:00Z"}},
		{"weekday and a named year", "Sat 2026-12-*", "UTC", "2026-12-20T00:00:00Z",
			[]string{"2026-12-26T00:00:00Z", "never"}},

		// Repetitions and ranges.
		// systemd 252 answers 2027-01-08 second: its repetition runs past December's end to
		// "December 36th", which it normalizes to January 5th, jumping over the 1st.
		{"every seventh day from the first", "*-*-1/7", "UTC", "2026-12-23T00:00:00Z",
			[]string{"2026-12-29T00:00:00Z", "2027-01-01T00:00:00Z", "2027-01-08T00:00:00Z"}},
		{"office hours", "08..17:00", "UTC", "2026-12-01T16:30:00Z",
			[]string{"2026-12-01T17:00:00Z", "2026-12-02T08:00:00Z"}},
		{"every four hours in a range", "08..17/4:30", "UTC", "2026-12-01T12:31:00Z",
			[]string{"2026-12-01T16:30:00Z", "2026-12-02T08:30:00Z"}},
		{"a list of ranges", "Mon,Wed..Fri 8..17:0/30", "UTC", "2026-12-01T10:52:13Z",
			[]string{"2026-12-02T08:00:00Z", "2026-12-02T08:30:00Z"}},
		{"quarterly", "quarterly", "UTC", "2026-12-01T10:52:13Z",
			[]string{"2027-01-01T00:00:00Z", "2027-04-01T00:00:00Z", "2027-07-01T00:00:00Z", "2027-10-01T00:00:00Z"}},
		{"a year repeated", "2026/3-01-01", "UTC", "2026-01-01T00:00:00Z",
			[]string{"2029-01-01T00:00:00Z", "2032-01-01T00:00:00Z"}},

		// The zone of after, or of the spec.
		{"local midnight in the zone of after", "daily", "America/New_York", "2026-12-01T10:00:00-05:00",
			[]string{"2026-12-02T00:00:00-05:00"}},
		{"the spec's zone wins", "daily Europe/Berlin", "UTC", "2026-12-01T10:00:00Z",
			[]string{"2026-12-02T00:00:00+01:00"}},

		// Europe/Berlin: CET→CEST at 02:00 on 2026-03-29, CEST→CET at 03:00 on 2026-10-25.
		{"Berlin: 02:30 does not exist, skipped that day", "02:30", "Europe/Berlin", "2026-03-28T12:00:00+01:00",
			[]string{"2026-03-30T02:30:00+02:00"}},
		{"Berlin: hourly skips the missing hour", "*:30", "Europe/Berlin", "2026-03-29T01:45:00+01:00",
			[]string{"2026-03-29T03:30:00+02:00", "2026-03-29T04:30:00+02:00"}},
		{"Berlin: seconds resume after the jump", "*:*:0/20", "Europe/Berlin", "2026-03-29T01:59:30+01:00",
			[]string{"2026-03-29T01:59:40+01:00", "2026-03-29T03:00:00+02:00"}},
		{"Berlin: 02:30 twice fires once, first", "02:30", "Europe/Berlin", "2026-10-25T00:00:00+02:00",
			[]string{"2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"}},
		{"Berlin: hourly skips the repeated hour", "*:30", "Europe/Berlin", "2026-10-25T01:45:00+02:00",
			[]string{"2026-10-25T02:30:00+02:00", "2026-10-25T03:30:00+01:00"}},
		// systemd 252 answers 02:14 CET here, in the second pass, because its answer depends on
		// the C library's guess of the offset; Next fires each wall time at its first occurrence
		// only, whatever it is asked from.
		{"Berlin: nothing in the second pass", "*:*", "Europe/Berlin", "2026-10-25T02:13:21+01:00",
			[]string{"2026-10-25T03:00:00+01:00"}},
		// systemd 252 gives up ("Resource deadlock avoided").
		{"Berlin: the DST Sunday at 02:30 never exists", "Sun *-03~01..07 02:30 Europe/Berlin", "UTC", "2026-01-01T00:00:00Z",
			[]string{"never"}},

		// America/New_York: EST→EDT at 02:00 on 2026-03-08, EDT→EST at 02:00 on 2026-11-01.
		{"New York: 02:30 does not exist, skipped that day", "*-*-* 02:30", "America/New_York", "2026-03-07T12:00:00-05:00",
			[]string{"2026-03-09T02:30:00-04:00"}},
		{"New York: minutes resume at 03:00", "*:*", "America/New_York", "2026-03-08T01:58:30-05:00",
			[]string{"2026-03-08T01:59:00-05:00", "2026-03-08T03:00:00-04:00"}},
		{"New York: 01:30 twice fires once, first", "01:30", "America/New_York", "2026-10-31T12:00:00-04:00",
			[]string{"2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"}},
		{"New York: quarter hours skip the repeated hour", "*:0/15", "America/New_York", "2026-11-01T01:40:00-04:00",
			[]string{"2026-11-01T01:45:00-04:00", "2026-11-01T02:00:00-05:00"}},
		// systemd 252 answers 01:30 EST the same day, as in Berlin above.
		{"New York: from the second pass", "01:30", "America/New_York", "2026-11-01T01:10:00-05:00",
			[]string{"2026-11-02T01:30:00-05:00"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse(tc.expr)
			if err != nil {
				t.Fatal(err)
			}
			loc := mustLoad(t, tc.zone)
			at, err := time.ParseInLocation(time.RFC3339Nano, tc.after, loc)
			if err != nil {
				t.Fatal(err)
			}
			at = at.In(loc)
			var got []string
			for range tc.want {
				at = s.Next(at)
				if at.IsZero() {
					got = append(got, "never")
					break
				}
				got = append(got, at.Format(time.RFC3339))
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("%s from %s:\n got %v\nwant %v", s, tc.after, got, tc.want)
			}
		})
	}
}

// Next answers in the spec's zone, or in that of its argument.
func TestNextLocation(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	after := time.Date(2026, 6, 1, 12, 0, 0, 0, berlin)
	for _, tc := range []struct {
		expr string
		want *time.Location
	}{
		{"daily", berlin},
		{"daily UTC", time.UTC},
		{"daily America/New_York", mustLoad(t, "America/New_York")},
	} {
		s, err := Parse(tc.expr)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Next(after).Location().String(); got != tc.want.String() {
			t.Errorf("%s: Next in %s, want %s", tc.expr, got, tc.want)
		}
	}
}

// Specs that never fire return quickly: Next skips whole years and months that cannot match.
func BenchmarkNext(b *testing.B) {
	after := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, expr := range []string{"*:0/15", "Mon..Fri 02:00", "*-02-29 12:00", "2025-02-30", "Fri *-02-30", "Sun *-03~01..07 02:30 Europe/Berlin"} {
		s, err := Parse(expr)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(expr, func(b *testing.B) {
			for b.Loop() {
				s.Next(after)
			}
		})
	}
}

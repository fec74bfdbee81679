package calendar

import (
	"strings"
	"testing"

	_ "time/tzdata" // the tests' time zones do not depend on the host's zoneinfo
)

// The normalized forms are what `systemd-analyze calendar` (systemd 252) prints for the same
// expressions.
func TestParseNormalizes(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{"minutely", "*-*-* *:*:00"},
		{"hourly", "*-*-* *:00:00"},
		{"daily", "*-*-* 00:00:00"},
		{"DAILY", "*-*-* 00:00:00"},
		{"weekly", "Mon *-*-* 00:00:00"},
		{"monthly", "*-*-01 00:00:00"},
		{"yearly", "*-01-01 00:00:00"},
		{"annually", "*-01-01 00:00:00"},
		{"quarterly", "*-01,04,07,10-01 00:00:00"},
		{"semiannually", "*-01,07-01 00:00:00"},
		{"semi-annually", "*-01,07-01 00:00:00"},
		{"Mon..Fri 02:00", "Mon..Fri *-*-* 02:00:00"},
		{"*:0/15", "*-*-* *:00/15:00"},
		{"*:*:0/10", "*-*-* *:*:00/10"},
		{"Sat,Sun 03:30", "Sat,Sun *-*-* 03:30:00"},
		{"*-*-01 00:00", "*-*-01 00:00:00"},
		{"*-02-29 12:00", "*-02-29 12:00:00"},
		{"2026-12-24 18:00 UTC", "2026-12-24 18:00:00 UTC"},
		{"2026-12-24 18:00 utc", "2026-12-24 18:00:00 UTC"},
		{"daily Europe/Berlin", "*-*-* 00:00:00 Europe/Berlin"},
		{"Mon *-*-* 02:00:00 America/New_York", "Mon *-*-* 02:00:00 America/New_York"},
		{"Mon,Tue,Wed,Sat", "Mon..Wed,Sat *-*-* 00:00:00"},
		{"sunday,MONDAY", "Mon,Sun *-*-* 00:00:00"},
		{"mon-wed,fri", "Mon..Wed,Fri *-*-* 00:00:00"},
		{"Mon..Sun", "*-*-* 00:00:00"},
		{"Mon, 12:00", "Mon *-*-* 12:00:00"},
		{"Wed", "Wed *-*-* 00:00:00"},
		{"Fri *-*-13", "Fri *-*-13 00:00:00"},
		{"12-24", "*-12-24 00:00:00"},
		{"26-12-24 1:2:3", "2026-12-24 01:02:03"},
		{"89-1-1", "1989-01-01 00:00:00"},
		{"0..69-01-01", "2000..2069-01-01 00:00:00"},
		{"2026,2024,2026-*-*", "2024,2026-*-* 00:00:00"},
		{"2026-*-* 02:00", "2026-*-* 02:00:00"},
		{"*-1..12/5-*", "*-01..11/5-* 00:00:00"},
		{"*-*~01", "*-*~01 00:00:00"},
		{"*-*~07/1", "*-*~07/1 00:00:00"},
		{"*-*~03..07", "*-*~03..07 00:00:00"},
		{"*-*~*", "*-*-* 00:00:00"},
		{"*-*-1/7", "*-*-01/7 00:00:00"},
		{"*-*-02..09/3", "*-*-02..08/3 00:00:00"},
		{"8..17:00", "*-*-* 08..17:00:00"},
		{"08..17/4:00", "*-*-* 08..16/4:00:00"},
		{"8..17/1:00", "*-*-* 08..17:00:00"},
		{"5..5:00", "*-*-* 05:00:00"},
		{"1..2/3:00", "*-*-* 01:00:00"},
		{"*:0..59/1", "*-*-* *:00..59:00"},
		{"*:*:0/1", "*-*-* *:*:*"},
		{"*:*:*", "*-*-* *:*:*"},
		{"  Mon..Fri \t 02:00  ", "Mon..Fri *-*-* 02:00:00"},
	} {
		s, err := Parse(tc.expr)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.expr, err)
			continue
		}
		if got := s.String(); got != tc.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{"", "empty expression"},
		{"   ", "empty expression"},
		{"Mon..Fry 02:00", `unknown weekday "Fry"`},
		{"Fri..Mon", "runs backwards"},
		{"Mon.. 02:00", "missing weekday"},
		{"Mon,,Tue", "missing weekday"},
		{"daily 02:00", `"daily" stands alone`},
		{"02:00 Mon", "come first"},
		{"daily Europe/Nowhere", `unknown time zone "Europe/Nowhere"`},
		{"daily Local", "not a zone name"},
		{"25:00", "hour 25 out of range 0..23"},
		{"*:60", "minute 60 out of range 0..59"},
		{"*:*:60", "second 60 out of range 0..59"},
		{"*-13-01", "month 13 out of range 1..12"},
		{"*-*-32", "day 32 out of range 1..31"},
		{"*-*~29", "out of range 1..28"},
		{"2300-01-01", "year 2300 out of range 1970..2199"},
		{"1969-01-01", "year 1969 out of range"},
		{"*/15:00", "not */N"},
		{"*:*/15", "not */N"},
		{"*:5,*", `"*" stands alone`},
		{"*:0/0", "repeats every 0"},
		{"10..5:00", "runs backwards"},
		{"*:30/30", "never repeats"},
		{"*:0/60", "repetition longer than the range"},
		{"*-*~01/1", "never repeats"},
		{"02", "needs a month and a day"},
		{"*-*-* 02", "needs hours and minutes"},
		{"1:2:3:4", "more than hours, minutes and seconds"},
		{"1-2-3-4", "more than year, month and day"},
		{"*~1-1", `"~" goes between month and day`},
		{"*:*:0.5", "fractions of a second"},
		{"@1700000000", "Unix times"},
		{"*-*-* 02:00 03:00", `unexpected "03:00"`},
		{"*-*-1x", `unexpected "x"`},
		{"*-*-,1", "expected a number"},
		{"*-*-1,", "expected a number"},
		{"*-*-9999999999", "out of range"},
		{"*:" + strings.Repeat("1,", 240) + "1", "more than 240 values"},
	} {
		_, err := Parse(tc.expr)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want an error containing %q", tc.expr, tc.want)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "; a valid one: ") || strings.ContainsAny(msg, "\n\r") {
			t.Errorf("Parse(%q) = %q, want one line containing %q and an example", tc.expr, msg, tc.want)
		}
	}
}

// The example each error offers is itself valid.
func TestParseErrorExamplesParse(t *testing.T) {
	for _, ex := range []string{anyExample, weekdayExample, zoneExample, yearField.example, monthField.example,
		dayField.example, endOfMonthField.example, hourField.example, minuteField.example, secondField.example} {
		if _, err := Parse(ex); err != nil {
			t.Errorf("example %q: %v", ex, err)
		}
	}
}

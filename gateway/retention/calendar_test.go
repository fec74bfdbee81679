package retention_test

import (
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway/retention"
)

// TestApplyCalendar checks the edges of the calendar: daylight saving time, a time zone that
// moves a backup to another day, month or year, ISO week 53, the leap day and New Year. Item
// IDs are UTC times; the comments give them in Europe/Berlin where that is the location.
func TestApplyCalendar(t *testing.T) {
	utc, cet := time.UTC, berlin(t)
	// 2026-10-25: at 03:00 CEST clocks go back to 02:00 CET, so 02:30 happens twice.
	autumn := []string{
		"2026-10-24 21:30:00", // 10-24 23:30 CEST
		"2026-10-24 23:30:00", // 10-25 01:30 CEST
		"2026-10-25 00:30:00", // 10-25 02:30 CEST
		"2026-10-25 01:30:00", // 10-25 02:30 CET, an hour later than the one above
		"2026-10-25 02:30:00", // 10-25 03:30 CET
		"2026-10-25 22:59:00", // 10-25 23:59 CET
		"2026-10-25 23:30:00", // 10-26 00:30 CET
	}
	// 2026-03-29: at 02:00 CET clocks go forward to 03:00 CEST; there is no 02:xx.
	spring := []string{
		"2026-03-29 00:30:00", // 01:30 CET
		"2026-03-29 00:59:00", // 01:59 CET
		"2026-03-29 01:00:00", // 03:00 CEST
		"2026-03-29 01:30:00", // 03:30 CEST
	}
	// 2026 has 53 ISO weeks: W53 runs from Monday 2026-12-28 to Sunday 2027-01-03.
	week53 := []string{
		"2026-12-27 20:00:00", // Sun 2026-W52
		"2026-12-28 10:00:00", // Mon 2026-W53
		"2026-12-31 10:00:00", // Thu 2026-W53
		"2027-01-01 10:00:00", // Fri 2026-W53
		"2027-01-03 22:30:00", // Sun 2026-W53; in Berlin Sun 23:30, still W53
		"2027-01-03 23:30:00", // Sun 2026-W53; in Berlin Mon 2027-01-04 00:30, 2027-W01
		"2027-01-04 00:30:00", // Mon 2027-W01
	}
	leap := []string{
		"2024-02-28 22:00:00", // 02-28 23:00 CET
		"2024-02-29 12:00:00", // 02-29 13:00 CET
		"2024-02-29 23:30:00", // 03-01 00:30 CET
		"2024-03-01 08:00:00", // 03-01 09:00 CET
	}
	newYear := []string{
		"2025-12-31 12:00:00", // 2025-12-31 13:00 CET
		"2025-12-31 23:59:59", // 2026-01-01 00:59:59 CET
		"2026-01-01 00:00:00", // 2026-01-01 01:00 CET
	}
	// 23:30 UTC is the next day in Berlin, and on the last day of a month the next month.
	dayChange := []string{
		"2026-05-31 20:00:00", // 05-31 22:00 CEST
		"2026-05-31 22:30:00", // 06-01 00:30 CEST
		"2026-06-01 10:00:00", // 06-01 12:00 CEST
	}

	tests := []struct {
		name  string
		in    []string
		rules retention.Rules
		keep  []string // kept IDs, newest first; all of them for the one rule set
	}{
		{"autumn DST daily in Berlin: both 02:30 on the 25th", autumn, retention.Rules{Daily: -1, Location: cet},
			[]string{"2026-10-25 23:30:00", "2026-10-25 22:59:00", "2026-10-24 21:30:00"}},
		{"autumn DST daily in UTC", autumn, retention.Rules{Daily: -1, Location: utc},
			[]string{"2026-10-25 23:30:00", "2026-10-24 23:30:00"}},
		{"autumn DST hourly in Berlin: the two 02:30 share local hour 02", autumn, retention.Rules{Hourly: -1, Location: cet},
			[]string{"2026-10-25 23:30:00", "2026-10-25 22:59:00", "2026-10-25 02:30:00", "2026-10-25 01:30:00", "2026-10-24 23:30:00", "2026-10-24 21:30:00"}},
		{"autumn DST hourly 4 in Berlin", autumn, retention.Rules{Hourly: 4, Location: cet},
			[]string{"2026-10-25 23:30:00", "2026-10-25 22:59:00", "2026-10-25 02:30:00", "2026-10-25 01:30:00"}},
		{"autumn DST hourly in UTC: all hours differ", autumn, retention.Rules{Hourly: -1, Location: utc},
			autumnNewestFirst(autumn)},
		{"spring DST hourly in Berlin: local hours 03 and 01", spring, retention.Rules{Hourly: -1, Location: cet},
			[]string{"2026-03-29 01:30:00", "2026-03-29 00:59:00"}},
		{"spring DST hourly in UTC: hours 01 and 00", spring, retention.Rules{Hourly: -1, Location: utc},
			[]string{"2026-03-29 01:30:00", "2026-03-29 00:59:00"}},
		{"spring DST within 1h counts real time, not wall clock", spring, retention.Rules{Within: time.Hour, Location: cet},
			[]string{"2026-03-29 01:30:00", "2026-03-29 01:00:00", "2026-03-29 00:59:00"}},
		{"week 53 weekly", week53, retention.Rules{Weekly: -1, Location: utc},
			[]string{"2027-01-04 00:30:00", "2027-01-03 23:30:00", "2026-12-27 20:00:00"}},
		{"week 53 weekly in Berlin", week53, retention.Rules{Weekly: -1, Location: cet},
			[]string{"2027-01-04 00:30:00", "2027-01-03 22:30:00", "2026-12-27 20:00:00"}},
		{"week 53 weekly 2", week53, retention.Rules{Weekly: 2, Location: utc},
			[]string{"2027-01-04 00:30:00", "2027-01-03 23:30:00"}},
		{"week 53 yearly: calendar years, not ISO years", week53, retention.Rules{Yearly: -1, Location: utc},
			[]string{"2027-01-04 00:30:00", "2026-12-31 10:00:00"}},
		{"leap day daily", leap, retention.Rules{Daily: -1, Location: utc},
			[]string{"2024-03-01 08:00:00", "2024-02-29 23:30:00", "2024-02-28 22:00:00"}},
		{"leap day daily in Berlin", leap, retention.Rules{Daily: -1, Location: cet},
			[]string{"2024-03-01 08:00:00", "2024-02-29 12:00:00", "2024-02-28 22:00:00"}},
		{"leap day monthly", leap, retention.Rules{Monthly: -1, Location: utc},
			[]string{"2024-03-01 08:00:00", "2024-02-29 23:30:00"}},
		{"leap day monthly in Berlin", leap, retention.Rules{Monthly: -1, Location: cet},
			[]string{"2024-03-01 08:00:00", "2024-02-29 12:00:00"}},
		{"Dec 31 to Jan 1 yearly", newYear, retention.Rules{Yearly: -1, Location: utc},
			[]string{"2026-01-01 00:00:00", "2025-12-31 23:59:59"}},
		{"Dec 31 to Jan 1 yearly 1", newYear, retention.Rules{Yearly: 1, Location: utc},
			[]string{"2026-01-01 00:00:00"}},
		{"Dec 31 to Jan 1 yearly in Berlin", newYear, retention.Rules{Yearly: -1, Location: cet},
			[]string{"2026-01-01 00:00:00", "2025-12-31 12:00:00"}},
		{"23:30 UTC is the next day in Berlin: daily", dayChange, retention.Rules{Daily: -1, Location: cet},
			[]string{"2026-06-01 10:00:00", "2026-05-31 20:00:00"}},
		{"23:30 UTC daily in UTC", dayChange, retention.Rules{Daily: -1, Location: utc},
			[]string{"2026-06-01 10:00:00", "2026-05-31 22:30:00"}},
		{"22:30 UTC on May 31 is June in Berlin: monthly", dayChange, retention.Rules{Monthly: -1, Location: cet},
			[]string{"2026-06-01 10:00:00", "2026-05-31 20:00:00"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := items(t, tt.in...)
			got := retention.Apply(in, tt.rules)
			checkShape(t, in, got)
			if k := kept(got); !equal(k, tt.keep) {
				t.Errorf("kept %q, want %q", k, tt.keep)
			}
		})
	}
}

// autumnNewestFirst returns ids newest first (they are given oldest first).
func autumnNewestFirst(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[len(ids)-1-i] = id
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestApplyEdges checks the boundary of Within, backups made at the same instant, and the
// newest kept without rules.
func TestApplyEdges(t *testing.T) {
	tests := []struct {
		name  string
		in    []retention.Item
		rules retention.Rules
		want  []retention.Decision
	}{
		{
			name: "no items",
		},
		{
			name:  "one item, no rules: kept as the newest",
			in:    []retention.Item{{ID: "a", Time: at(10, 0)}},
			rules: retention.Rules{},
			want:  []retention.Decision{{ID: "a", Time: at(10, 0), Keep: true, Reasons: []string{"newest"}}},
		},
		{
			name:  "no rules keep only the newest",
			in:    []retention.Item{{ID: "old", Time: at(9, 0)}, {ID: "new", Time: at(10, 0)}},
			rules: retention.Rules{Within: -time.Hour},
			want: []retention.Decision{
				{ID: "new", Time: at(10, 0), Keep: true, Reasons: []string{"newest"}},
				{ID: "old", Time: at(9, 0)},
			},
		},
		{
			// restic keeps what is strictly newer than newest − within.
			name: "within: exactly the duration before the newest is outside",
			in: []retention.Item{
				{ID: "edge", Time: at(8, 0)}, {ID: "in", Time: at(8, 1)}, {ID: "newest", Time: at(10, 0)},
			},
			rules: retention.Rules{Within: 2 * time.Hour},
			want: []retention.Decision{
				{ID: "newest", Time: at(10, 0), Keep: true, Reasons: []string{"within"}},
				{ID: "in", Time: at(8, 1), Keep: true, Reasons: []string{"within"}},
				{ID: "edge", Time: at(8, 0)},
			},
		},
		{
			// The index lists a volume's backups by time, then ID: the one it takes as the
			// latest (an incremental's parent) must be the one kept as the newest.
			name: "same instant: the larger ID is the newer",
			in: []retention.Item{
				{ID: "a", Time: at(10, 0)}, {ID: "c", Time: at(10, 0)}, {ID: "b", Time: at(10, 0)},
			},
			rules: retention.Rules{Last: 1, Hourly: 1},
			want: []retention.Decision{
				{ID: "c", Time: at(10, 0), Keep: true, Reasons: []string{"last", "hourly"}},
				{ID: "b", Time: at(10, 0)},
				{ID: "a", Time: at(10, 0)},
			},
		},
		{
			name: "same instant in different zones is the same instant",
			in: []retention.Item{
				{ID: "b", Time: at(10, 0)}, {ID: "a", Time: at(10, 0).In(time.FixedZone("x", 5*3600))},
			},
			rules: retention.Rules{Last: 1},
			want: []retention.Decision{
				{ID: "b", Time: at(10, 0), Keep: true, Reasons: []string{"last"}},
				{ID: "a", Time: at(10, 0).In(time.FixedZone("x", 5*3600))},
			},
		},
		{
			name:  "more rule than items",
			in:    []retention.Item{{ID: "a", Time: at(9, 0)}, {ID: "b", Time: at(10, 0)}},
			rules: retention.Rules{Last: 5},
			want: []retention.Decision{
				{ID: "b", Time: at(10, 0), Keep: true, Reasons: []string{"last"}},
				{ID: "a", Time: at(9, 0), Keep: true, Reasons: []string{"last"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.rules.Location = time.UTC
			got := retention.Apply(tt.in, tt.rules)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d decisions %+v, want %+v", len(got), got, tt.want)
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.ID != w.ID || !g.Time.Equal(w.Time) || g.Keep != w.Keep || !equal(g.Reasons, w.Reasons) {
					t.Errorf("decision %d: %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func at(hour, minute int) time.Time {
	return time.Date(2026, 7, 1, hour, minute, 0, 0, time.UTC)
}

// TestApplyNilLocationIsLocal checks that a nil Location makes buckets in time.Local.
func TestApplyNilLocationIsLocal(t *testing.T) {
	in := items(t, history...)
	r := retention.Rules{Hourly: 30, Daily: 20, Weekly: 10}
	withNil := retention.Apply(in, r)
	r.Location = time.Local
	withLocal := retention.Apply(in, r)
	if !equal(kept(withNil), kept(withLocal)) {
		t.Errorf("nil location kept %q, time.Local kept %q", kept(withNil), kept(withLocal))
	}
}

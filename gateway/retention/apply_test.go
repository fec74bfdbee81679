package retention_test

import (
	"slices"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway/retention"
)

// history is a synthetic set of 70 backup times over five years (UTC), irregular on purpose:
// several a day and an hour near the end, missing days, weeks and months, ends of months and
// years, Sunday nights before Monday mornings, a leap day and two backups at the same instant.
// The comment after each is its weekday and ISO week; Nn is its position, newest first,
// which the expectations below refer to when they explain themselves.
var history = []string{
	"2022-03-14 09:00:00",   // N70 Mon 2022-W11
	"2022-07-01 12:00:00",   // N69 Fri 2022-W26
	"2022-12-31 23:59:00",   // N68 Sat 2022-W52
	"2023-01-01 00:01:00",   // N67 Sun 2022-W52
	"2023-06-30 18:00:00",   // N66 Fri 2023-W26
	"2023-12-30 10:00:00",   // N65 Sat 2023-W52
	"2024-02-28 22:00:00",   // N64 Wed 2024-W09
	"2024-02-29 12:00:00",   // N63 Thu 2024-W09
	"2024-03-01 08:00:00",   // N62 Fri 2024-W09
	"2024-07-15 10:00:00",   // N61 Mon 2024-W29
	"2024-12-31 22:00:00",   // N60 Tue 2025-W01
	"2025-01-06 10:00:00",   // N59 Mon 2025-W02
	"2025-03-31 23:00:00",   // N58 Mon 2025-W14
	"2025-04-01 01:00:00",   // N57 Tue 2025-W14
	"2025-06-15 12:00:00 a", // N56 Sun 2025-W24, same instant as N55
	"2025-06-15 12:00:00 b", // N55 Sun 2025-W24, the larger ID counts as the newer (the index's order)
	"2025-09-10 10:00:00",   // N54 Wed 2025-W37
	"2025-12-28 10:00:00",   // N53 Sun 2025-W52
	"2025-12-29 10:00:00",   // N52 Mon 2026-W01
	"2025-12-31 15:00:00",   // N51 Wed 2026-W01
	"2026-01-01 09:00:00",   // N50 Thu 2026-W01
	"2026-01-15 10:00:00",   // N49 Thu 2026-W03
	"2026-02-10 10:00:00",   // N48 Tue 2026-W07
	"2026-03-03 10:00:00",   // N47 Tue 2026-W10
	"2026-03-28 10:00:00",   // N46 Sat 2026-W13
	"2026-04-30 10:00:00",   // N45 Thu 2026-W18
	"2026-05-01 10:00:00",   // N44 Fri 2026-W18
	"2026-05-20 10:00:00",   // N43 Wed 2026-W21
	"2026-06-05 10:00:00",   // N42 Fri 2026-W23
	"2026-06-30 10:00:00",   // N41 Tue 2026-W27
	"2026-07-20 10:00:00",   // N40 Mon 2026-W30
	"2026-08-14 10:00:00",   // N39 Fri 2026-W33
	"2026-08-31 23:00:00",   // N38 Mon 2026-W36
	"2026-09-01 00:30:00",   // N37 Tue 2026-W36
	"2026-09-15 10:00:00",   // N36 Tue 2026-W38
	"2026-09-30 23:59:59",   // N35 Wed 2026-W40
	"2026-10-01 00:00:00",   // N34 Thu 2026-W40
	"2026-10-15 10:00:00",   // N33 Thu 2026-W42
	"2026-10-31 23:59:00",   // N32 Sat 2026-W44
	"2026-11-02 10:00:00",   // N31 Mon 2026-W45
	"2026-11-06 10:00:00",   // N30 Fri 2026-W45
	"2026-11-08 10:00:00",   // N29 Sun 2026-W45
	"2026-11-09 10:00:00",   // N28 Mon 2026-W46
	"2026-11-13 10:00:00",   // N27 Fri 2026-W46
	"2026-11-15 10:00:00",   // N26 Sun 2026-W46
	"2026-11-16 10:00:00",   // N25 Mon 2026-W47
	"2026-11-18 10:00:00",   // N24 Wed 2026-W47
	"2026-11-20 10:00:00",   // N23 Fri 2026-W47
	"2026-11-22 09:00:00",   // N22 Sun 2026-W47
	"2026-11-22 22:00:00",   // N21 Sun 2026-W47
	"2026-11-23 10:00:00",   // N20 Mon 2026-W48
	"2026-11-24 10:00:00",   // N19 Tue 2026-W48
	"2026-11-25 10:00:00",   // N18 Wed 2026-W48
	"2026-11-26 03:00:00",   // N17 Thu 2026-W48
	"2026-11-26 21:00:00",   // N16 Thu 2026-W48
	"2026-11-27 10:00:00",   // N15 Fri 2026-W48
	"2026-11-28 09:00:00",   // N14 Sat 2026-W48
	"2026-11-29 11:30:00",   // N13 Sun 2026-W48
	"2026-11-29 12:00:00",   // N12 Sun 2026-W48
	"2026-11-30 06:00:00",   // N11 Mon 2026-W49
	"2026-11-30 08:00:00",   // N10 Mon 2026-W49
	"2026-11-30 08:30:00",   // N9  Mon 2026-W49
	"2026-11-30 22:05:00",   // N8  Mon 2026-W49
	"2026-11-30 22:40:00",   // N7  Mon 2026-W49
	"2026-11-30 23:10:00",   // N6  Mon 2026-W49
	"2026-12-01 00:15:00",   // N5  Tue 2026-W49
	"2026-12-01 00:45:00",   // N4  Tue 2026-W49
	"2026-12-01 01:00:00",   // N3  Tue 2026-W49
	"2026-12-01 01:20:00",   // N2  Tue 2026-W49
	"2026-12-01 02:00:00",   // N1  Tue 2026-W49, the newest
}

// TestApplyHistory checks restic's documented options on history, each expectation derived
// by hand from the calendar in history's comments: which items are kept and why; all others
// are dropped.
func TestApplyHistory(t *testing.T) {
	utc := time.UTC
	tests := []struct {
		name  string
		rules retention.Rules
		keep  map[string]string // ID → reasons, comma-separated
	}{
		{
			name:  "keep-last 3: the three newest",
			rules: retention.Rules{Last: 3, Location: utc},
			keep: map[string]string{
				"2026-12-01 02:00:00": "last",
				"2026-12-01 01:20:00": "last",
				"2026-12-01 01:00:00": "last",
			},
		},
		{
			// Hours with backups: 12-01 02, 01, 00, 11-30 23, 22; the newest of each.
			name:  "keep-hourly 5",
			rules: retention.Rules{Hourly: 5, Location: utc},
			keep: map[string]string{
				"2026-12-01 02:00:00": "hourly",
				"2026-12-01 01:20:00": "hourly", // not 01:00
				"2026-12-01 00:45:00": "hourly", // not 00:15
				"2026-11-30 23:10:00": "hourly",
				"2026-11-30 22:40:00": "hourly", // not 22:05
			},
		},
		{
			// The seven newest days with backups, the newest backup of each; the 26th has
			// two (21:00 wins) and the 29th two (12:00 wins).
			name:  "keep-daily 7",
			rules: retention.Rules{Daily: 7, Location: utc},
			keep: map[string]string{
				"2026-12-01 02:00:00": "daily",
				"2026-11-30 23:10:00": "daily",
				"2026-11-29 12:00:00": "daily",
				"2026-11-28 09:00:00": "daily",
				"2026-11-27 10:00:00": "daily",
				"2026-11-26 21:00:00": "daily",
				"2026-11-25 10:00:00": "daily",
			},
		},
		{
			// W49 (Mon 11-30 and Tue 12-01), W48 ends on Sunday 11-29, W47 on Sunday 11-22
			// (22:00 beats 09:00), W46 on Sunday 11-15.
			name:  "keep-weekly 4",
			rules: retention.Rules{Weekly: 4, Location: utc},
			keep: map[string]string{
				"2026-12-01 02:00:00": "weekly",
				"2026-11-29 12:00:00": "weekly",
				"2026-11-22 22:00:00": "weekly",
				"2026-11-15 10:00:00": "weekly",
			},
		},
		{
			// December 2026 back to January 2026; 10-01 00:00:00 is October's, so September's
			// newest is 09-30 23:59:59, and 09-01 00:30 is September's, so August's is 08-31.
			name:  "keep-monthly 12",
			rules: retention.Rules{Monthly: 12, Location: utc},
			keep: map[string]string{
				"2026-12-01 02:00:00": "monthly",
				"2026-11-30 23:10:00": "monthly",
				"2026-10-31 23:59:00": "monthly",
				"2026-09-30 23:59:59": "monthly",
				"2026-08-31 23:00:00": "monthly",
				"2026-07-20 10:00:00": "monthly",
				"2026-06-30 10:00:00": "monthly",
				"2026-05-20 10:00:00": "monthly",
				"2026-04-30 10:00:00": "monthly",
				"2026-03-28 10:00:00": "monthly",
				"2026-02-10 10:00:00": "monthly",
				"2026-01-15 10:00:00": "monthly",
			},
		},
		{
			// The last backup of 2025 is 12-31 15:00, although 12-29 and 12-31 lie in ISO
			// week 1 of 2026: years are calendar years.
			name:  "keep-yearly 3",
			rules: retention.Rules{Yearly: 3, Location: utc},
			keep: map[string]string{
				"2026-12-01 02:00:00": "yearly",
				"2025-12-31 15:00:00": "yearly",
				"2024-12-31 22:00:00": "yearly",
			},
		},
		{
			// Yearly 75 with five years of backups keeps five (restic since 0.16 would also
			// keep the oldest backup, 2022-03-14, because the rule has counts left; cairn
			// does not, see docs/design.md).
			name:  "restic's example: daily 7, weekly 5, monthly 12, yearly 75",
			rules: retention.Rules{Daily: 7, Weekly: 5, Monthly: 12, Yearly: 75, Location: utc},
			keep: map[string]string{
				"2026-12-01 02:00:00": "daily,weekly,monthly,yearly",
				"2026-11-30 23:10:00": "daily,monthly",
				"2026-11-29 12:00:00": "daily,weekly",
				"2026-11-28 09:00:00": "daily",
				"2026-11-27 10:00:00": "daily",
				"2026-11-26 21:00:00": "daily",
				"2026-11-25 10:00:00": "daily",
				"2026-11-22 22:00:00": "weekly",
				"2026-11-15 10:00:00": "weekly",
				"2026-11-08 10:00:00": "weekly",
				"2026-10-31 23:59:00": "monthly",
				"2026-09-30 23:59:59": "monthly",
				"2026-08-31 23:00:00": "monthly",
				"2026-07-20 10:00:00": "monthly",
				"2026-06-30 10:00:00": "monthly",
				"2026-05-20 10:00:00": "monthly",
				"2026-04-30 10:00:00": "monthly",
				"2026-03-28 10:00:00": "monthly",
				"2026-02-10 10:00:00": "monthly",
				"2026-01-15 10:00:00": "monthly",
				"2025-12-31 15:00:00": "yearly",
				"2024-12-31 22:00:00": "yearly",
				"2023-12-30 10:00:00": "yearly",
				"2022-12-31 23:59:00": "yearly",
			},
		},
		{
			name:  "last 2, daily 3, weekly 3, monthly 4, yearly 3",
			rules: retention.Rules{Last: 2, Daily: 3, Weekly: 3, Monthly: 4, Yearly: 3, Location: utc},
			keep: map[string]string{
				"2026-12-01 02:00:00": "last,daily,weekly,monthly,yearly",
				"2026-12-01 01:20:00": "last",
				"2026-11-30 23:10:00": "daily,monthly",
				"2026-11-29 12:00:00": "daily,weekly",
				"2026-11-22 22:00:00": "weekly",
				"2026-10-31 23:59:00": "monthly",
				"2026-09-30 23:59:59": "monthly",
				"2025-12-31 15:00:00": "yearly",
				"2024-12-31 22:00:00": "yearly",
			},
		},
		{
			// Rules add up, each counting from the newest backup (restic). Proxmox Backup
			// Server lets daily start below what last kept and would keep 11-29 too.
			name:  "last 2, daily 2: daily counts 12-01 although last kept it",
			rules: retention.Rules{Last: 2, Daily: 2, Location: utc},
			keep: map[string]string{
				"2026-12-01 02:00:00": "last,daily",
				"2026-12-01 01:20:00": "last",
				"2026-11-30 23:10:00": "daily",
			},
		},
		{
			// 48 hours before the newest is 11-29 02:00: everything after it.
			name:  "keep-within 2d",
			rules: retention.Rules{Within: 48 * time.Hour, Location: utc},
			keep: map[string]string{
				"2026-12-01 02:00:00": "within",
				"2026-12-01 01:20:00": "within",
				"2026-12-01 01:00:00": "within",
				"2026-12-01 00:45:00": "within",
				"2026-12-01 00:15:00": "within",
				"2026-11-30 23:10:00": "within",
				"2026-11-30 22:40:00": "within",
				"2026-11-30 22:05:00": "within",
				"2026-11-30 08:30:00": "within",
				"2026-11-30 08:00:00": "within",
				"2026-11-30 06:00:00": "within",
				"2026-11-29 12:00:00": "within",
				"2026-11-29 11:30:00": "within",
			},
		},
		{
			name:  "last 2, daily 7, within 48h",
			rules: retention.Rules{Last: 2, Daily: 7, Within: 48 * time.Hour, Location: utc},
			keep: map[string]string{
				"2026-12-01 02:00:00": "last,daily,within",
				"2026-12-01 01:20:00": "last,within",
				"2026-12-01 01:00:00": "within",
				"2026-12-01 00:45:00": "within",
				"2026-12-01 00:15:00": "within",
				"2026-11-30 23:10:00": "daily,within",
				"2026-11-30 22:40:00": "within",
				"2026-11-30 22:05:00": "within",
				"2026-11-30 08:30:00": "within",
				"2026-11-30 08:00:00": "within",
				"2026-11-30 06:00:00": "within",
				"2026-11-29 12:00:00": "daily,within",
				"2026-11-29 11:30:00": "within",
				"2026-11-28 09:00:00": "daily",
				"2026-11-27 10:00:00": "daily",
				"2026-11-26 21:00:00": "daily",
				"2026-11-25 10:00:00": "daily",
			},
		},
		{
			// Five calendar years; 2023-01-01 00:01 belongs to 2023, whose newest is 12-30.
			name:  "keep-yearly unlimited",
			rules: retention.Rules{Yearly: -1, Location: utc},
			keep: map[string]string{
				"2026-12-01 02:00:00": "yearly",
				"2025-12-31 15:00:00": "yearly",
				"2024-12-31 22:00:00": "yearly",
				"2023-12-30 10:00:00": "yearly",
				"2022-12-31 23:59:00": "yearly",
			},
		},
	}
	in := items(t, history...)
	if len(in) != 70 {
		t.Fatalf("history has %d items", len(in))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkKeep(t, in, retention.Apply(in, tt.rules), tt.keep)
		})
	}
}

// TestApplyHistoryDrops checks the rules that keep most of history by what they drop: every
// item but those is kept, for the one reason given.
func TestApplyHistoryDrops(t *testing.T) {
	utc := time.UTC
	tests := []struct {
		name   string
		rules  retention.Rules
		reason string
		drop   []string
	}{
		{
			name:   "keep-last unlimited",
			rules:  retention.Rules{Last: -1, Location: utc},
			reason: "last",
		},
		{
			// Days with more than one backup keep only their newest; the pair at the same
			// instant keeps the larger ID.
			name:   "keep-daily unlimited",
			rules:  retention.Rules{Daily: -1, Location: utc},
			reason: "daily",
			drop: []string{
				"2026-12-01 01:20:00", "2026-12-01 01:00:00", "2026-12-01 00:45:00", "2026-12-01 00:15:00",
				"2026-11-30 22:40:00", "2026-11-30 22:05:00", "2026-11-30 08:30:00", "2026-11-30 08:00:00", "2026-11-30 06:00:00",
				"2026-11-29 11:30:00",
				"2026-11-26 03:00:00",
				"2026-11-22 09:00:00",
				"2025-06-15 12:00:00 a",
			},
		},
		{
			// ISO weeks with more than one backup keep only their newest. 2026-W01 holds
			// 2025-12-29, 2025-12-31 and 2026-01-01; 2022-W52 holds 2022-12-31 and
			// 2023-01-01; 2024-12-31 is alone in 2025-W01.
			name:   "keep-weekly unlimited",
			rules:  retention.Rules{Weekly: -1, Location: utc},
			reason: "weekly",
			drop: []string{
				// 2026-W49: all but 12-01 02:00
				"2026-12-01 01:20:00", "2026-12-01 01:00:00", "2026-12-01 00:45:00", "2026-12-01 00:15:00",
				"2026-11-30 23:10:00", "2026-11-30 22:40:00", "2026-11-30 22:05:00", "2026-11-30 08:30:00",
				"2026-11-30 08:00:00", "2026-11-30 06:00:00",
				// 2026-W48: all but 11-29 12:00
				"2026-11-29 11:30:00", "2026-11-28 09:00:00", "2026-11-27 10:00:00", "2026-11-26 21:00:00",
				"2026-11-26 03:00:00", "2026-11-25 10:00:00", "2026-11-24 10:00:00", "2026-11-23 10:00:00",
				// 2026-W47: all but 11-22 22:00
				"2026-11-22 09:00:00", "2026-11-20 10:00:00", "2026-11-18 10:00:00", "2026-11-16 10:00:00",
				// 2026-W46, W45
				"2026-11-13 10:00:00", "2026-11-09 10:00:00",
				"2026-11-06 10:00:00", "2026-11-02 10:00:00",
				// 2026-W40, W36, W18
				"2026-09-30 23:59:59",
				"2026-08-31 23:00:00",
				"2026-04-30 10:00:00",
				// 2026-W01, across the new year
				"2025-12-31 15:00:00", "2025-12-29 10:00:00",
				// 2025-W24, W14
				"2025-06-15 12:00:00 a",
				"2025-03-31 23:00:00",
				// 2024-W09, around the leap day
				"2024-02-29 12:00:00", "2024-02-28 22:00:00",
				// 2022-W52, across the new year
				"2022-12-31 23:59:00",
			},
		},
		{
			// A year before the newest is 2025-12-01 02:00.
			name:   "keep-within 1 year",
			rules:  retention.Rules{Within: 365 * 24 * time.Hour, Location: utc},
			reason: "within",
			drop: []string{
				"2025-09-10 10:00:00", "2025-06-15 12:00:00 a", "2025-06-15 12:00:00 b", "2025-04-01 01:00:00",
				"2025-03-31 23:00:00", "2025-01-06 10:00:00", "2024-12-31 22:00:00", "2024-07-15 10:00:00",
				"2024-03-01 08:00:00", "2024-02-29 12:00:00", "2024-02-28 22:00:00", "2023-12-30 10:00:00",
				"2023-06-30 18:00:00", "2023-01-01 00:01:00", "2022-12-31 23:59:00", "2022-07-01 12:00:00",
				"2022-03-14 09:00:00",
			},
		},
	}
	in := items(t, history...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := map[string]string{}
			for _, it := range in {
				if !slices.Contains(tt.drop, it.ID) {
					want[it.ID] = tt.reason
				}
			}
			if len(want) != len(in)-len(tt.drop) {
				t.Fatalf("drop list names items not in history")
			}
			checkKeep(t, in, retention.Apply(in, tt.rules), want)
		})
	}
}

// TestApplyResticDocExample is the example in restic's forget documentation: backups every
// weekday for two weeks, a second one on Fridays, the Wednesday of the second week missed.
// keep-daily 5 reaches back to the previous Friday and keeps its later backup.
func TestApplyResticDocExample(t *testing.T) {
	in := items(t,
		"2025-04-21 11:00:00", "2025-04-22 11:00:00", "2025-04-23 11:00:00", "2025-04-24 11:00:00",
		"2025-04-25 11:00:00", "2025-04-25 23:00:00", "2025-04-28 11:00:00", "2025-04-29 11:00:00",
		"2025-05-01 11:00:00", "2025-05-02 11:00:00", "2025-05-02 23:00:00",
	)
	got := retention.Apply(in, retention.Rules{Daily: 5, Location: time.UTC})
	checkKeep(t, in, got, map[string]string{
		"2025-05-02 23:00:00": "daily",
		"2025-05-01 11:00:00": "daily",
		"2025-04-29 11:00:00": "daily",
		"2025-04-28 11:00:00": "daily",
		"2025-04-25 23:00:00": "daily",
	})
}

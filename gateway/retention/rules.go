package retention

import (
	"fmt"
	"strings"
	"time"
)

// Rules are prune's keep options. Each calendar rule (Hourly, Daily, Weekly, Monthly, Yearly)
// keeps the newest backup of each of the last N calendar buckets that hold a backup: hour,
// day, ISO week, month, year, all in Location. Last keeps the N newest backups; Within keeps
// every backup made less than Within before the newest backup (not before now, so a volume
// that stopped being backed up keeps its history). Rules add up: a backup is kept when any
// rule keeps it. A count below zero means unlimited (restic's "unlimited"); zero and a
// Within of zero or less leave that rule unset.
type Rules struct {
	Last, Hourly, Daily, Weekly, Monthly, Yearly int
	Within                                       time.Duration
	// Location is the time zone whose calendar makes the buckets; nil means time.Local.
	Location *time.Location
}

// Empty reports whether no rule is set. Prune must refuse empty rules rather than delete
// every backup but the newest: an empty policy is far more often a mistake than a wish.
func (r Rules) Empty() bool {
	for _, c := range r.counts() {
		if c.n != 0 {
			return false
		}
	}
	return r.Within <= 0
}

// String describes the rules for logs and messages, such as
// "last 2, daily 7, within 48h0m0s", or "no rules" when Empty.
func (r Rules) String() string {
	var parts []string
	for _, c := range r.counts() {
		switch {
		case c.n > 0:
			parts = append(parts, fmt.Sprintf("%s %d", c.reason, c.n))
		case c.n < 0:
			parts = append(parts, c.reason+" unlimited")
		}
	}
	if r.Within > 0 {
		parts = append(parts, "within "+r.Within.String())
	}
	if len(parts) == 0 {
		return "no rules"
	}
	s := strings.Join(parts, ", ")
	if r.Location != nil {
		s += " (" + r.Location.String() + ")"
	}
	return s
}

// countRule is one count rule with the reason it gives and the bucket it counts in.
type countRule struct {
	reason string
	n      int
	unit   unit
}

// counts lists the count rules in the order their reasons are reported.
func (r Rules) counts() []countRule {
	return []countRule{
		{ReasonLast, r.Last, each},
		{ReasonHourly, r.Hourly, hour},
		{ReasonDaily, r.Daily, day},
		{ReasonWeekly, r.Weekly, week},
		{ReasonMonthly, r.Monthly, month},
		{ReasonYearly, r.Yearly, year},
	}
}

package retention

import (
	"slices"
	"strings"
	"time"
)

// The reasons a Decision gives for keeping a backup.
const (
	ReasonLast    = "last"
	ReasonHourly  = "hourly"
	ReasonDaily   = "daily"
	ReasonWeekly  = "weekly"
	ReasonMonthly = "monthly"
	ReasonYearly  = "yearly"
	ReasonWithin  = "within"
	// ReasonNewest keeps the newest backup when no rule does, which happens only with empty
	// rules: a prune never removes a volume's last backup.
	ReasonNewest = "newest"
)

// Item is one backup of a volume as the rules see it.
type Item struct {
	ID   string
	Time time.Time
}

// Decision says whether a backup is kept and which rules keep it, in the order last, hourly,
// daily, weekly, monthly, yearly, within (or just newest). Reasons is nil when Keep is false.
type Decision struct {
	ID      string
	Time    time.Time
	Keep    bool
	Reasons []string
}

// Apply decides for every item, given in any order, whether r keeps it. The decisions are
// sorted newest first; items made at the same instant are ordered by ID, the smaller counting
// as the newer, so the result depends only on the set of items. Each count rule walks the
// items newest to oldest and keeps an item whose bucket differs from the last bucket the rule
// kept, until it has used its N buckets. The newest item is always kept.
func Apply(items []Item, r Rules) []Decision {
	if len(items) == 0 {
		return nil
	}
	sorted := slices.Clone(items)
	slices.SortFunc(sorted, newestFirst)

	loc := r.Location
	if loc == nil {
		loc = time.Local
	}
	counters := make([]counter, 0, 6)
	for _, c := range r.counts() {
		if c.n != 0 {
			counters = append(counters, counter{countRule: c})
		}
	}
	newest := sorted[0].Time
	out := make([]Decision, len(sorted))
	for i, it := range sorted {
		d := Decision{ID: it.ID, Time: it.Time}
		local := it.Time.In(loc)
		for j := range counters {
			if counters[j].keep(i, local) {
				d.Reasons = append(d.Reasons, counters[j].reason)
			}
		}
		if r.Within > 0 && newest.Sub(it.Time) < r.Within {
			d.Reasons = append(d.Reasons, ReasonWithin)
		}
		if i == 0 && d.Reasons == nil {
			d.Reasons = []string{ReasonNewest}
		}
		d.Keep = d.Reasons != nil
		out[i] = d
	}
	return out
}

// newestFirst orders items by time, newest first, and equal times by ID, the larger first:
// the order of the index's volume listing (bv/<volume>/<time>/<id>), so the backup Apply calls
// newest is the one an incremental takes as its parent.
func newestFirst(a, b Item) int {
	if c := b.Time.Compare(a.Time); c != 0 {
		return c
	}
	return strings.Compare(b.ID, a.ID)
}

// counter is the state of one count rule while Apply walks the items newest to oldest.
type counter struct {
	countRule
	used int    // buckets kept so far
	last bucket // the bucket of the item last kept, valid when used > 0
}

// keep reports whether the rule keeps the item at position i, made at t (in the rules'
// location), and records its bucket if so.
func (c *counter) keep(i int, t time.Time) bool {
	if c.n > 0 && c.used >= c.n {
		return false
	}
	b := c.unit.bucketOf(i, t)
	if c.used > 0 && b == c.last {
		return false
	}
	c.used++
	c.last = b
	return true
}

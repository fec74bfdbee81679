package retention

import "time"

// unit is the calendar span a count rule counts in.
type unit int

const (
	each  unit = iota // every backup is its own bucket (Last)
	hour              // a local hour of a day
	day               // a local calendar day
	week              // an ISO 8601 week (Monday to Sunday), of its ISO year
	month             // a calendar month
	year              // a calendar year
)

// bucket names one calendar span: a year (the ISO year for weeks) and the span's number in it.
// For each, the year is 0 and n is the backup's position, newest first.
type bucket struct{ year, n int }

// bucketOf returns the bucket of the backup at position i, made at t; t must already be in the
// rules' location, since hours, days and years depend on it.
func (u unit) bucketOf(i int, t time.Time) bucket {
	switch u {
	case hour:
		return bucket{t.Year(), t.YearDay()*24 + t.Hour()}
	case day:
		return bucket{t.Year(), t.YearDay()}
	case week:
		y, w := t.ISOWeek()
		return bucket{y, w}
	case month:
		return bucket{t.Year(), int(t.Month())}
	case year:
		return bucket{t.Year(), 0}
	}
	return bucket{0, i}
}

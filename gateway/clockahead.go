package gateway

import (
	"log/slog"
	"sync"
	"time"
)

// aheadTolerance is how far past this gateway's clock a stored time may lie and still be taken
// as it is: clocks kept by NTP differ by far less, and a time further ahead was stamped by a
// clock that ran ahead (this gateway's before NTP set it right, or another gateway's).
const aheadTolerance = time.Minute

// aheadTimes remembers, for each thing a policy counts from (its last run, its last
// verification, a volume's newest backup), the time this gateway first found it dated ahead of
// its clock. Such a time counts from then: counted from its date, a daily policy whose last
// run a clock three days ahead stamped ran on no gateway for three days; counted from each
// look's now, its next time would always be ahead of the look, and never come.
type aheadTimes struct {
	mu   sync.Mutex
	seen map[string]aheadTime // by what it dates, "run <policy>" for one
}

type aheadTime struct {
	stamp time.Time // the time found ahead
	at    time.Time // when this gateway first found it so
}

// notAhead returns t, or when t lies more than aheadTolerance past at (the clock now), the time
// this gateway first found it so, logged once then. what names what t dates, for the log
// and as the key of the memory: a new stamp for it (a later run) starts again from its own
// first sight, and one no longer ahead is forgotten.
func (a *aheadTimes) notAhead(log *slog.Logger, what string, t, at time.Time) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t.Sub(at) <= aheadTolerance {
		delete(a.seen, what)
		return t
	}
	if s, ok := a.seen[what]; ok && s.stamp.Equal(t) {
		return s.at
	}
	if a.seen == nil {
		a.seen = map[string]aheadTime{}
	}
	a.seen[what] = aheadTime{stamp: t, at: at}
	log.Warn("a time is dated ahead of this gateway's clock (the clock that stamped it ran ahead): it counts from now",
		"what", what, "dated", t, "clock", at)
	return at
}

package limit

import (
	"context"
	"io"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// MinRate is the smallest rate a Meter takes, in bytes a second: below it a transfer would
// wait in steps too small to be worth a timer each.
const MinRate = 64 << 10

// Rates bound the bytes a second a backend moves, each way; zero leaves that way unbounded.
type Rates struct {
	Up   int64 // Put, Create and Commit: bytes stored
	Down int64 // Get, GetRange and ReadRange: bytes read
}

// Meters are the meters of a backend's two ways; nil ones leave that way unbounded.
type Meters struct {
	Up, Down *Meter
}

// Meters returns a meter for each way r bounds.
func (r Rates) Meters() Meters { return Meters{Up: NewMeter(r.Up), Down: NewMeter(r.Down)} }

// A Meter lets at most its rate of bytes a second through, averaged over an eighth of a
// second (golang.org/x/time/rate's token bucket: a well-kept one, and waits end on a cancel).
// Several transfers sharing one share the rate. A nil Meter lets everything through.
type Meter struct {
	l      *rate.Limiter
	waited atomic.Int64 // nanoseconds spent in Charge
}

// Waited is how long transfers have waited for this meter in all: how much it held them
// back (a metric).
func (m *Meter) Waited() time.Duration {
	if m == nil {
		return 0
	}
	return time.Duration(m.waited.Load())
}

// NewMeter returns a meter of bytesPerSec (at least MinRate), or nil for 0: no limit.
func NewMeter(bytesPerSec int64) *Meter {
	if bytesPerSec <= 0 {
		return nil
	}
	bytesPerSec = max(bytesPerSec, MinRate)
	burst := max(bytesPerSec/8, MinRate)
	return &Meter{l: rate.NewLimiter(rate.Limit(bytesPerSec), int(min(burst, 1<<30)))}
}

// Charge waits until n more bytes may pass, or until ctx is done and returns its error (also
// when the wait could not end before ctx's deadline).
func (m *Meter) Charge(ctx context.Context, n int64) error {
	if m == nil {
		return nil
	}
	start := time.Now()
	defer func() { m.waited.Add(int64(time.Since(start))) }()
	for n > 0 {
		step := min(n, int64(m.l.Burst()))
		if err := m.l.WaitN(ctx, int(step)); err != nil {
			// The limiter says at once when the wait would end past ctx's deadline; the wait
			// ends there instead, so every caller sees its context done when Charge fails.
			if _, ok := ctx.Deadline(); !ok && ctx.Err() == nil {
				return err // no deadline to reach: not a wait at all
			}
			<-ctx.Done()
			return ctx.Err()
		}
		n -= step
	}
	return nil
}

// meteredReader charges each Read's bytes once they are read.
type meteredReader struct {
	io.ReadCloser
	ctx context.Context
	m   *Meter
}

func (r *meteredReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if cerr := r.m.Charge(r.ctx, int64(n)); cerr != nil && err == nil {
		err = cerr
	}
	return n, err
}

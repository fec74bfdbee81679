package main

import (
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/cairn-backup/cairn/units"
)

// progress shows a bar on a terminal (schollz/progressbar: maintained, handles widths and
// rates) and a plain line every few seconds otherwise. --quiet silences both.
type progress struct {
	mu    sync.Mutex
	bar   *progressbar.ProgressBar
	g     *Globals
	label string
	last  time.Time
	start time.Time
	total int64
	done  int64
}

func (g *Globals) progress(label string) *progress {
	p := &progress{g: g, label: label, start: time.Now()}
	if g.Quiet {
		return p
	}
	if f, ok := g.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(f), progressbar.OptionSetDescription(label),
			progressbar.OptionShowBytes(true), progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionShowCount(), progressbar.OptionClearOnFinish(), progressbar.OptionSetPredictTime(true))
	}
	return p
}

// update is the callback the service calls; it may be called from several goroutines.
func (p *progress) update(done, total int64) {
	if p.g.Quiet {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.total = done, total
	if p.bar != nil {
		if p.bar.GetMax64() != total {
			p.bar.ChangeMax64(total)
		}
		_ = p.bar.Set64(done)
		return
	}
	if time.Since(p.last) < 5*time.Second && done < total {
		return
	}
	p.last = time.Now()
	p.line()
}

func (p *progress) line() {
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(p.done) / float64(p.total)
	}
	fmt.Fprintf(p.g.stderr, "%s: %3.0f%% (%s of %s) %s\n", p.label, pct, units.Bytes(p.done), units.Bytes(p.total),
		units.Rate(p.done, time.Since(p.start)))
}

// summary ends a finished transfer with one line on a terminal or not (--quiet silences it):
// what it did, the bytes read and stored or written, the time it took and the rate over
// the whole volume.
func (p *progress) summary(what string, size int64, figures ...string) {
	if p.g.Quiet {
		return
	}
	took := time.Since(p.start)
	line := fmt.Sprintf("%s: %s", what, units.Bytes(size))
	for _, f := range figures {
		line += ", " + f
	}
	fmt.Fprintf(p.g.stderr, "%s, in %s, %s\n", line, units.Seconds(took), units.Rate(size, took))
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}

package main

import (
	"cmp"
	"fmt"
	"strings"
)

// failures collects what failed of a command's several subjects, each failing stopping none.
// With several, each failure is a line on stderr as it happens (unless quiet: the command says
// it its own way), and err says how many of how many failed, wrapping the first's error so the
// exit code is its kind's; with one subject, err is that one's error as it is.
type failures struct {
	g     *Globals
	total int
	quiet bool
	refs  []string
	first error
}

// add records that ref failed with err.
func (f *failures) add(ref string, err error) {
	f.refs, f.first = append(f.refs, ref), cmp.Or(f.first, err)
	if f.total > 1 && !f.quiet {
		fmt.Fprintf(f.g.stderr, "%s: failed: %s\n", ref, strings.TrimPrefix(message(err), "cairn: "))
	}
}

// err is nil when nothing failed; else "N of M NOUN OUTCOME (refs)" for several subjects, or
// the one's error.
func (f *failures) err(noun, outcome string) error {
	switch {
	case len(f.refs) == 0:
		return nil
	case f.total > 1:
		return fmt.Errorf("%d of %d %s %s (%s): %w", len(f.refs), f.total, noun, outcome, strings.Join(f.refs, ", "), f.first)
	}
	return f.first
}

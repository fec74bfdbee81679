package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/rivo/uniseg"
)

// table prints rows the way the cinder client does (prettytable). Widths are display
// columns (uniseg), so wide CJK characters and combining marks keep the borders aligned.
type table struct {
	header []string
	rows   [][]string
	// maxWidth, when set, bounds each line: the columns in shrink lose their widest cells'
	// ends (marked …) until the table fits, none below its header or minCell columns.
	maxWidth int
	shrink   []int
}

// minCell is the narrowest a shrinking column gets: enough to tell most names apart.
const minCell = 8

// fit narrows the shrinkable columns until a line is at most maxWidth display columns wide.
func (t *table) fit(widths []int) {
	total := func() int {
		n := 1
		for _, w := range widths {
			n += w + 3
		}
		return n
	}
	for t.maxWidth > 0 && total() > t.maxWidth {
		widest := -1
		for _, i := range t.shrink {
			floor := max(minCell, uniseg.StringWidth(t.header[i]))
			if widths[i] > floor && (widest < 0 || widths[i] > widths[widest]) {
				widest = i
			}
		}
		if widest < 0 {
			return // as narrow as it goes
		}
		widths[widest]--
	}
}

// truncate cuts s to at most w display columns, ending in … when it cut.
func truncate(s string, w int) string {
	if uniseg.StringWidth(s) <= w {
		return s
	}
	var b strings.Builder
	used := 0
	g := uniseg.NewGraphemes(s)
	for g.Next() {
		cw := g.Width()
		if used+cw > w-1 {
			break
		}
		b.WriteString(g.Str())
		used += cw
	}
	return b.String() + "…"
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) error {
	widths := make([]int, len(t.header))
	for i, h := range t.header {
		widths[i] = uniseg.StringWidth(h)
	}
	for _, r := range t.rows {
		for i, c := range r {
			for _, line := range strings.Split(c, "\n") {
				widths[i] = max(widths[i], uniseg.StringWidth(line))
			}
		}
	}
	t.fit(widths)
	var b strings.Builder
	sep := func() {
		b.WriteByte('+')
		for _, w := range widths {
			b.WriteString(strings.Repeat("-", w+2))
			b.WriteByte('+')
		}
		b.WriteByte('\n')
	}
	line := func(cells []string) {
		lines := 1
		for _, c := range cells {
			lines = max(lines, strings.Count(c, "\n")+1)
		}
		for l := range lines {
			b.WriteByte('|')
			for i, w := range widths {
				cell := ""
				if i < len(cells) {
					if parts := strings.Split(cells[i], "\n"); l < len(parts) {
						cell = truncate(parts[l], w)
					}
				}
				fmt.Fprintf(&b, " %s%s |", cell, strings.Repeat(" ", w-uniseg.StringWidth(cell)))
			}
			b.WriteByte('\n')
		}
	}
	sep()
	line(t.header)
	sep()
	for _, r := range t.rows {
		line(r)
	}
	sep()
	_, err := io.WriteString(w, b.String())
	return err
}

// properties prints a Property | Value table.
func properties(w io.Writer, kv [][2]string) error {
	t := &table{header: []string{"Property", "Value"}}
	for _, p := range kv {
		t.add(p[0], p[1])
	}
	return t.write(w)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseSize reads sizes like 10G, 512MiB, 1T, 4096.
func parseSize(s string) (int64, error) {
	in := strings.TrimSpace(s)
	u := strings.ToUpper(in)
	mult := int64(1)
	for _, suf := range []struct {
		s string
		m int64
	}{{"TIB", 1 << 40}, {"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(u, suf.s) {
			u, mult = strings.TrimSpace(strings.TrimSuffix(u, suf.s)), suf.m
			break
		}
	}
	var n int64
	if _, err := fmt.Sscanf(u, "%d", &n); err != nil || n < 0 || fmt.Sprint(n) != u {
		return 0, fmt.Errorf("size %q: use a number with an optional unit, like 10G or 512M", in)
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is too large", in)
	}
	return n * mult, nil
}

// parseRetention reads a retention period: a number of days ("30d") or a Go duration ("12h",
// "90s"), in whole seconds of at least one.
func parseRetention(s string) (time.Duration, error) {
	d, err := parseAge(s)
	if err != nil {
		return 0, err
	}
	if d < time.Second || d%time.Second != 0 {
		return 0, fmt.Errorf("%q: want whole seconds, at least one", s)
	}
	return d, nil
}

// humanDuration writes a period in the largest unit that divides it: 30d, 12h, 90s.
func humanDuration(d time.Duration) string {
	switch {
	case d >= 24*time.Hour && d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

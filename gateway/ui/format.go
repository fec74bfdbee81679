package ui

import (
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/units"
)

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"bytes":    anyBytes,
	"age":      age,
	"stamp":    stamp,
	"duration": formatDuration,
	"rate":     func(bps float64) string { return units.Bytes(int64(bps)) + "/s" },
	"ratio":    func(f float64) string { return fmt.Sprintf("%.2f×", f) },
	"pct":      func(f float64) string { return fmt.Sprintf("%.0f %%", f) },
	"short":    func(id string) string { return id[:min(len(id), 8)] },
	"join":     strings.Join,
	"add":      func(a, b int) int { return a + b },
}

// parsePages parses each page template with the layout.
func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// anyBytes is formatBytes of any integer.
func anyBytes(n any) string {
	switch v := n.(type) {
	case int:
		return units.Bytes(int64(v))
	case int64:
		return units.Bytes(v)
	}
	return fmt.Sprint(n)
}

// age says how long ago t was, roughly: 5 s, 3 min, 2 h, 4 d.
func age(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + formatDuration(-d)
	}
	return formatDuration(d) + " ago"
}

// formatDuration says d roughly, in its largest unit.
func formatDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "–"
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(math.Round(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%.1f h", d.Hours())
	}
	return fmt.Sprintf("%d d", int(d.Hours()/24))
}

// stamp is a time in the server's zone, to the second.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

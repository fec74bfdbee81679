package retention_test

import (
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin and friends without the system's zoneinfo

	"github.com/cairn-backup/cairn/gateway/retention"
)

// items makes items whose ID is their UTC time "2006-01-02 15:04:05", optionally followed by
// a space and a suffix that tells apart backups made at the same instant.
func items(t testing.TB, ids ...string) []retention.Item {
	t.Helper()
	out := make([]retention.Item, len(ids))
	for i, id := range ids {
		ts, err := time.Parse(time.DateTime, id[:len(time.DateTime)])
		if err != nil {
			t.Fatalf("test data %q: %v", id, err)
		}
		out[i] = retention.Item{ID: id, Time: ts}
	}
	return out
}

func berlin(t testing.TB) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatalf("load Europe/Berlin: %v", err)
	}
	return loc
}

// checkKeep fails t unless exactly the IDs in want are kept, each for the comma-separated
// reasons want gives, and the decisions cover every item once, newest first.
func checkKeep(t *testing.T, in []retention.Item, got []retention.Decision, want map[string]string) {
	t.Helper()
	checkShape(t, in, got)
	for _, d := range got {
		reasons, ok := want[d.ID]
		switch {
		case ok && !d.Keep:
			t.Errorf("%s: dropped, want kept (%s)", d.ID, reasons)
		case !ok && d.Keep:
			t.Errorf("%s: kept (%s), want dropped", d.ID, strings.Join(d.Reasons, ","))
		case ok && strings.Join(d.Reasons, ",") != reasons:
			t.Errorf("%s: reasons %q, want %q", d.ID, strings.Join(d.Reasons, ","), reasons)
		}
	}
	for id := range want {
		if !slices.ContainsFunc(got, func(d retention.Decision) bool { return d.ID == id }) {
			t.Errorf("%s: expected but not among the items", id)
		}
	}
}

// checkShape fails t unless got has one decision per item, newest first, with reasons exactly
// when kept, and the newest kept.
func checkShape(t *testing.T, in []retention.Item, got []retention.Decision) {
	t.Helper()
	if len(got) != len(in) {
		t.Fatalf("%d decisions for %d items", len(got), len(in))
	}
	for i, d := range got {
		if i > 0 && d.Time.After(got[i-1].Time) {
			t.Errorf("decision %d (%s) newer than decision %d (%s)", i, d.ID, i-1, got[i-1].ID)
		}
		if d.Keep != (len(d.Reasons) > 0) {
			t.Errorf("%s: keep %v with reasons %q", d.ID, d.Keep, d.Reasons)
		}
	}
	if len(got) > 0 && !got[0].Keep {
		t.Errorf("newest %s dropped", got[0].ID)
	}
}

// kept lists the IDs of the kept decisions, newest first.
func kept(ds []retention.Decision) []string {
	var ids []string
	for _, d := range ds {
		if d.Keep {
			ids = append(ids, d.ID)
		}
	}
	return ids
}

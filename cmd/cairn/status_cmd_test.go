package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
)

// The overview's table counts in plain English, and lists each concern on a line of its own
// with its project when every project's are shown.
func TestPrintOverview(t *testing.T) {
	for _, tc := range []struct {
		o    gateway.Overview
		all  bool
		want []string
	}{
		{gateway.Overview{Volumes: 1, Backups: map[index.BackupStatus]int{index.BackupAvailable: 1}, Succeeded: 1},
			false, []string{"1 backup succeeded, 0 failed", "nothing needs attention", "1: 1 available"}},
		{gateway.Overview{Volumes: 3, Backups: map[index.BackupStatus]int{index.BackupAvailable: 2, index.BackupError: 1}, Succeeded: 2, Failed: 1,
			Concerns: []gateway.Concern{{Kind: gateway.ConcernUnprotected, Project: "p2", Subject: "b", Message: "volume b has no backup"}}},
			true, []string{"2 backups succeeded, 1 failed", "1 thing (below)", "3: 2 available, 1 error", "- [unprotected] p2: volume b has no backup"}},
	} {
		var buf bytes.Buffer
		if err := printOverview(&buf, &tc.o, tc.all); err != nil {
			t.Fatal(err)
		}
		for _, w := range tc.want {
			if !strings.Contains(buf.String(), w) {
				t.Errorf("overview lacks %q:\n%s", w, buf.String())
			}
		}
	}
}

package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/rivo/uniseg"
)

// realisticBackups are what an admin's list holds: long volume and backup names, big sizes,
// a backup whose volume is gone, a wide name.
func realisticBackups() ([]*index.Backup, map[string]string) {
	at := time.Date(2026, 12, 1, 7, 3, 55, 0, time.UTC)
	vols := map[string]string{
		"6f1c2a9e-0b7d-4c3e-9a51-2d8e7f4b1c60": "prod-postgres-primary-data-volume-01",
		"0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d": "web-01",
		"c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f": "数据卷-日志-归档-二零二六",
	}
	bs := []*index.Backup{
		{ID: "1f2e3d4c-5b6a-4798-8a1b-2c3d4e5f6a7b", VolumeID: "6f1c2a9e-0b7d-4c3e-9a51-2d8e7f4b1c60", Name: "nightly-2026-12-01-before-the-schema-upgrade",
			Status: index.BackupAvailable, Size: 1023<<30 + 900<<20, Project: "admin", CreatedAt: at, Stats: repo.Stats{NewBytes: 97 << 30},
			Copies: []repo.CopyRecord{{Repository: "9f0e1d2c-3b4a-4596-8877-665544332211", Location: "s3://offsite/cairn", At: at.Add(time.Hour)}}},
		{ID: "2a3b4c5d-6e7f-4081-9a2b-3c4d5e6f7a8b", VolumeID: "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d", Name: "hourly",
			Status: index.BackupCreating, Size: 20 << 30, IsIncremental: true, ParentID: "1f2e3d4c-5b6a-4798-8a1b-2c3d4e5f6a7b",
			Project: "tenant-with-a-long-project-name", CreatedAt: at.Add(time.Hour)},
		{ID: "3b4c5d6e-7f80-4192-8b3c-4d5e6f7a8b9c", VolumeID: "9e8d7c6b-5a49-4837-a261-5f4e3d2c1b0a",
			Status: index.BackupError, Size: 4 << 40, Project: "admin", CreatedAt: at.Add(2 * time.Hour)},
		{ID: "4c5d6e7f-8091-42a3-9c4d-5e6f7a8b9cad", VolumeID: "c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f", Name: "月末",
			Status: index.BackupRestoring, Size: 512 << 20, Project: "admin", CreatedAt: at.Add(3 * time.Hour)},
	}
	return bs, vols
}

// The default backup list fits 120 columns, with and without --all-projects, names the
// volumes and cuts long names short; --long shows the ids.
func TestBackupListFits(t *testing.T) {
	bs, vols := realisticBackups()
	for _, all := range []bool{false, true} {
		var b bytes.Buffer
		if err := backupTable(bs, vols, "/var/lib/cairn/repository", false, all).write(&b); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			if w := uniseg.StringWidth(line); w > listWidth {
				t.Errorf("all-projects %v: a line is %d columns wide, more than %d:\n%s", all, w, listWidth, line)
			}
		}
		if !strings.Contains(out, "web-01") || !strings.Contains(out, "prod-pos") || !strings.Contains(out, "…") {
			t.Errorf("all-projects %v: want volume names, the long ones cut with …:\n%s", all, out)
		}
		if strings.Contains(out, "0a9b8c7d-6e5f") || strings.Contains(out, "Container") {
			t.Errorf("all-projects %v: the default list shows volume ids or the container:\n%s", all, out)
		}
		if got := strings.Contains(out, "Project"); got != all {
			t.Errorf("all-projects %v: Project column shown %v:\n%s", all, got, out)
		}
		golden(t, map[bool]string{false: "backup-list-fit", true: "backup-list-fit-all-projects"}[all], out)
	}
	var b bytes.Buffer
	if err := backupTable(bs, vols, "/var/lib/cairn/repository", true, false).write(&b); err != nil {
		t.Fatal(err)
	}
	long := b.String()
	for _, want := range []string{"6f1c2a9e-0b7d-4c3e-9a51-2d8e7f4b1c60", "prod-postgres-primary-data-volume-01",
		"nightly-2026-12-01-before-the-schema-upgrade", "Object Count", "/var/lib/cairn/repository"} {
		if !strings.Contains(long, want) {
			t.Errorf("--long lacks %q:\n%s", want, long)
		}
	}
	golden(t, "backup-list-long", long)
}

func TestTruncate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		w    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly-10", 10, "exactly-10"},
		{"eleven-char", 10, "eleven-ch…"},
		{"数据卷日志", 6, "数据…"},
		{"e\u0301e\u0301e\u0301", 2, "e\u0301…"},
	} {
		if got := truncate(tt.in, tt.w); got != tt.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tt.in, tt.w, got, tt.want)
		}
	}
}

// A backup of a volume that is gone (deleted, unmanaged) is listed under the name the volume
// had when it was backed up, marked gone; one made before backups recorded names, by its
// volume's id.
func TestBackupListNamesAGoneVolumeByItsRecordedName(t *testing.T) {
	bs := []*index.Backup{
		{ID: "5d6e7f80-91a2-43b4-8d5e-6f7a8b9cadbe", VolumeID: "7e6d5c4b-3a29-4817-9605-f4e3d2c1b0a9", VolumeName: "old-vm",
			Status: index.BackupAvailable, Size: 1 << 30, Project: "admin"},
		{ID: "6e7f8091-a2b3-44c5-9e6f-7a8b9cadbecf", VolumeID: "8f7e6d5c-4b3a-4928-a716-05f4e3d2c1b0",
			Status: index.BackupAvailable, Size: 1 << 30, Project: "admin"},
	}
	var b bytes.Buffer
	if err := backupTable(bs, map[string]string{}, "/r", false, false).write(&b); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "old-vm (gone)") || !strings.Contains(out, "8f7e6d5c") {
		t.Fatalf("the list of backups of gone volumes:\n%s", out)
	}
}

// An admin's volume list of every project says whose each volume is: names repeat across
// projects.
func TestVolumeListAllProjectsNamesTheProject(t *testing.T) {
	_, vol, must := cliRepo(t)
	vol2 := vol + "-2"
	if err := os.WriteFile(vol2, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	must("volume", "manage", vol, "--name", "db", "--project", "p1")
	must("volume", "manage", vol2, "--name", "db", "--project", "p2")
	out := must("volume", "list", "--all-projects")
	rows := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "| db ") {
			rows++
			// The project follows the name (the path, the longest cell, is last).
			if cells := strings.Split(line, "|"); len(cells) < 4 || (strings.TrimSpace(cells[3]) != "p1" && strings.TrimSpace(cells[3]) != "p2") {
				t.Errorf("a row without its project: %s", line)
			}
		}
	}
	if rows != 2 || !strings.Contains(out, "| Project |") {
		t.Errorf("volume list --all-projects:\n%s", out)
	}
	if out := must("--project", "p1", "volume", "list"); strings.Contains(out, "| Project |") {
		t.Errorf("one project's list has a Project column:\n%s", out)
	}
}

// An admin whose own project has nothing is told where the volumes and backups are, on
// stderr; the table on stdout stays empty.
func TestEmptyListSaysWhereTheRestAre(t *testing.T) {
	repoDir, vol, must := cliRepo(t)
	must("volume", "manage", vol, "--name", "db", "--project", "p1")
	must("--quiet", "backup", "create", "db", "--project", "p1")
	for _, what := range []string{"volume", "backup"} {
		out, errOut, code := cli(t, repoDir, what, "list")
		if code != 0 || strings.Contains(out, "db") {
			t.Fatalf("%s list in project admin: exit %d\n%s%s", what, code, out, errOut)
		}
		want := "cairn: no " + what + "s in project admin; 1 in other projects (p1): add --all-projects, or --project P"
		if strings.TrimSpace(errOut) != want {
			t.Errorf("%s list: stderr %q, want %q", what, errOut, want)
		}
		if _, errOut, _ := cli(t, repoDir, "--project", "p2", what, "list"); !strings.Contains(errOut, "(p1)") {
			t.Errorf("%s list in p2 (the embedded CLI is an admin): stderr %q", what, errOut)
		}
	}
}

package tests

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// --limit-read, --limit-upload and --limit-download bound what a backup reads from its volume
// and what goes to and comes from the repository (versitygw here), each to its rate: a
// transfer of n bytes at r a second takes at least (n - r/8) / r, r/8 being the meter's start.
// Only that lower bound is checked, never a speed; every restore is byte-exact.
func TestBandwidthLimits(t *testing.T) {
	t.Parallel() // waits on its limits: overlaps the other tests
	srv := testutil.StartS3(t)
	r := newS3Repo(t, srv, "rates", nil)
	dir := t.TempDir()
	const size, rate = 24 << 20, 16 << 20
	least := time.Duration(float64(size-rate/8) / rate * float64(time.Second))
	timed := func(what string, args ...string) {
		t.Helper()
		start := time.Now()
		r.mustRun(args...)
		if took := time.Since(start); took < least {
			t.Errorf("%s of %d bytes took %v, less than %v at %d bytes a second", what, size, took, least, rate)
		}
	}

	read := filepath.Join(dir, "read.img")
	testutil.WriteImage(t, read, size, 1, testutil.Random)
	timed("a backup reading its volume at --limit-read 16M", "--quiet", "--limit-read", "16M", "backup", "create", read)

	// New data, so the backup stores every byte of it.
	up := filepath.Join(dir, "up.img")
	testutil.WriteImage(t, up, size, 2, testutil.Random)
	timed("a backup storing its volume at --limit-upload 16M", "--quiet", "--limit-upload", "16M", "backup", "create", up)

	for _, img := range []string{read, up} {
		b := r.listBackups("--volume", img)
		if len(b) != 1 {
			t.Fatalf("backups of %s: %+v", img, b)
		}
		out := filepath.Join(dir, "restored.img")
		timed("a restore at --limit-download 16M", "--quiet", "--limit-download", "16M", "backup", "restore", "--yes", b[0].ID, "--to", out)
		if got, want := testutil.SHA256File(t, out), testutil.SHA256File(t, img); got != want {
			t.Fatalf("restore of %s: sha256 %s, want %s", img, got, want)
		}
	}
	r.mustFail([]int{2}, "--limit-upload", "1K", "backup", "list")
}

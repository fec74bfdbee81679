package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/tests/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// golden compares got with testdata/name.golden, or rewrites the file under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run 'go test ./cmd/cairn -run %s -update' to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (rerun with -update if the change is intended)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestTableGolden(t *testing.T) {
	tests := []struct {
		name string
		t    table
	}{
		{"table-empty", table{header: []string{"ID", "Status", "Name"}}},
		{"table-rows", table{header: []string{"ID", "Status", "Size"}, rows: [][]string{
			{"1f2e", "available", "10.0 MiB"},
			{"a-much-longer-id", "error", "0 B"},
			{"short", "", "1.0 TiB"},
		}}},
		{"table-multiline", table{header: []string{"Property", "Value"}, rows: [][]string{
			{"fail_reason", "first line\nsecond, longer line"},
			{"id", "x"},
		}}},
		{"table-unicode", table{header: []string{"Name", "Note"}, rows: [][]string{
			{"volumé", "ünïcode counts runes"},
			{"ß", "one rune, two bytes"},
			{"数据卷", "wide: two columns a rune"},
			{"e\u0301", "a combining accent takes none"},
		}}},
		{"table-short-row", table{header: []string{"A", "B", "C"}, rows: [][]string{{"only a"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tt.t.write(&b); err != nil {
				t.Fatal(err)
			}
			golden(t, tt.name, b.String())
		})
	}
}

func TestPropertiesGolden(t *testing.T) {
	var b bytes.Buffer
	if err := properties(&b, [][2]string{{"backup_service", "cairn.backup.drivers.local"}, {"backup_url", "cairn1.abc"}}); err != nil {
		t.Fatal(err)
	}
	golden(t, "properties", b.String())
}

// The rows repo stats adds for an object-locked repository.
func TestStatsLockedGolden(t *testing.T) {
	oldest := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	newest := oldest.Add(29 * 24 * time.Hour)
	st := &gateway.Stats{Location: "s3://backups/cairn", Driver: "cairn.backup.drivers.s3", BlockSize: 16 << 10,
		Compression: "zstd", Encryption: "aes-256-gcm", Volumes: 3, Backups: 12, LogicalBytes: 300 << 30,
		DataBytes: 120 << 30, UniquePlainBytes: 40 << 30, StoredBytes: 25 << 30, PackBytes: 26 << 30, Packs: 1700,
		Blobs: 2600000, DedupRatio: 3, CompressionRatio: 1.6, IndexBytes: 180 << 20,
		ObjectLock: &gateway.LockStats{Mode: "compliance", RetentionSeconds: 30 * 24 * 3600, Objects: 3500, Unprotected: 2,
			Oldest: &oldest, Newest: &newest}}
	var b bytes.Buffer
	if err := properties(&b, statsProperties(st)); err != nil {
		t.Fatal(err)
	}
	golden(t, "repo-stats-locked", b.String())
}

var (
	uuidRE     = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	timeRE     = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)
	listTimeRE = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d`)
)

// mask replaces what differs from run to run by placeholders of the same width, so table
// columns keep their alignment: ids, timestamps and the repository's random directory name.
func mask(s, repoDir string) string {
	s = strings.ReplaceAll(s, repoDir, "/tmp/cairn-golden-"+strings.Repeat("R", len(repoDir)-len("/tmp/cairn-golden-")))
	s = uuidRE.ReplaceAllString(s, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")
	s = timeRE.ReplaceAllString(s, "YYYY-MM-DDThh:mm:ssZ")
	return listTimeRE.ReplaceAllString(s, "YYYY-MM-DD hh:mm")
}

// cli runs cairn in-process against repoDir and returns stdout and stderr and the exit code.
func cli(t *testing.T, repoDir string, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"--repo", repoDir}, args...), &stdout, &stderr)
	return stdout.String(), stderr.String(), code
}

// cliRepo makes an unencrypted repository and a 64 KiB volume image in a temporary directory
// and returns their paths with must, which runs cairn on the repository and fails the test
// unless it exits 0.
func cliRepo(t *testing.T) (repoDir, vol string, must func(args ...string) string) {
	t.Helper()
	dir := t.TempDir()
	repoDir, vol = filepath.Join(dir, "repo"), filepath.Join(dir, "vol.img")
	if err := os.WriteFile(vol, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	must = func(args ...string) string {
		t.Helper()
		out, errOut, code := cli(t, repoDir, args...)
		if code != 0 {
			t.Fatalf("cairn %v: exit %d: %s", args, code, errOut)
		}
		return out
	}
	must("repo", "init", "--encryption", "none")
	return repoDir, vol, must
}

// The tables a user sees for backup create, show and list, and a refused delete, with the
// parts that change between runs masked.
func TestCLIOutputGolden(t *testing.T) {
	// A fixed-length path, so masking it keeps the table widths stable.
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	repoDir := "/tmp/cairn-golden-" + hex.EncodeToString(rnd[:])
	if err := os.Mkdir(repoDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(repoDir) })
	vol := filepath.Join(t.TempDir(), "vol.img")
	testutil.WriteImage(t, vol, 3<<20+5, 42, testutil.Mixed)

	must := func(args ...string) string {
		t.Helper()
		out, errOut, code := cli(t, repoDir, args...)
		if code != 0 {
			t.Fatalf("cairn %v: exit %d: %s", args, code, errOut)
		}
		return mask(out, repoDir)
	}
	must("repo", "init", "--encryption", "none")
	golden(t, "backup-create", must("--quiet", "backup", "create", vol, "--name", "nightly", "--description", "first full"))
	testutil.ScatterWrites(t, vol, 43, 0.02, 4<<10, 16<<10)
	var inc struct{ ID string }
	out, errOut, code := cli(t, repoDir, "--quiet", "--format", "json", "backup", "create", vol, "-i", "--name", "nightly-inc")
	if err := json.Unmarshal([]byte(out), &inc); code != 0 || err != nil {
		t.Fatalf("backup create -i: exit %d, %v: %s", code, err, errOut)
	}
	golden(t, "backup-show-incremental", must("backup", "show", inc.ID))
	golden(t, "backup-list", must("backup", "list"))

	_, errOut, code = cli(t, repoDir, "backup", "delete", "nightly")
	if code != exitConflict {
		t.Fatalf("delete of a backup with a dependant: exit %d, want %d", code, exitConflict)
	}
	golden(t, "backup-delete-refused", mask(errOut, repoDir))
}

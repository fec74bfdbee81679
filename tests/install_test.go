package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// 'make install' into a temporary DESTDIR: the installed binary carries the git version,
// backs up and restores byte-exact, the unit names the installed binary, and 'make uninstall'
// removes every file it put there.
func TestMakeInstall(t *testing.T) {
	makeBin := testutil.RequireCommand(t, "make")
	gitBin := testutil.RequireCommand(t, "git")
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(gitBin, "-C", root, "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		testutil.Skip(t, "git describe in %s: %v (not a git checkout?)", root, err)
	}
	wantVersion := strings.TrimSpace(string(out))

	dest := t.TempDir()
	// The build output goes outside DESTDIR, so what is left there afterwards is install's.
	vars := []string{"DESTDIR=" + dest, "PREFIX=/usr/local", "BIN=" + filepath.Join(t.TempDir(), "cairn")}
	mk := func(target string) {
		t.Helper()
		cmd := exec.Command(makeBin, append([]string{"-C", root, "--no-print-directory", target}, vars...)...)
		cmd.Env = cairnEnv(nil)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	mk("install")

	installed := filesUnder(t, dest)
	want := []string{
		"usr/local/bin/cairn",
		"usr/local/lib/systemd/system/cairn.service",
		"usr/local/share/bash-completion/completions/cairn",
		"usr/local/share/doc/cairn/README.md",
		"usr/local/share/doc/cairn/design.md",
		"usr/local/share/zsh/site-functions/_cairn",
	}
	for _, w := range want {
		if !slices.Contains(installed, w) {
			t.Errorf("make install did not install %s; it installed %v", w, installed)
		}
	}
	unit, err := os.ReadFile(filepath.Join(dest, "usr/local/lib/systemd/system/cairn.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/cairn ") || strings.Contains(string(unit), "/usr/bin/cairn") {
		t.Errorf("the installed unit does not run /usr/local/bin/cairn:\n%s", unit)
	}

	bin := filepath.Join(dest, "usr/local/bin/cairn")
	res := runBinary(t, bin, nil, "--version")
	if got := strings.TrimSpace(res.Stdout); res.Code != 0 || got != wantVersion || got == "dev" {
		t.Fatalf("installed cairn --version: exit %d, %q (stderr %q), want %q", res.Code, got, res.Stderr, wantVersion)
	}

	// A backup and a restore from the installed binary.
	dir := t.TempDir()
	env := []string{"CAIRN_REPO=" + filepath.Join(dir, "repo"), "CAIRN_PASSWORD=installed"}
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 6*mib+4096, 71, testutil.Mixed)
	for _, args := range [][]string{
		{"repo", "init"}, // encrypted by default, under CAIRN_PASSWORD
		{"--quiet", "backup", "create", vol, "--name", "installed"},
		{"--quiet", "backup", "restore", "--yes", "installed", "--to", filepath.Join(dir, "restored.img")},
	} {
		if res := runBinary(t, bin, env, args...); res.Code != 0 {
			t.Fatalf("installed cairn %v: exit %d: %s", args, res.Code, res.Stderr)
		}
	}
	if got, want := testutil.SHA256File(t, filepath.Join(dir, "restored.img")), testutil.SHA256File(t, vol); got != want {
		t.Fatalf("restore from the installed binary: sha256 %s, want %s", got, want)
	}

	mk("uninstall")
	if left := filesUnder(t, dest); len(left) > 0 {
		t.Errorf("make uninstall left %v", left)
	}
	if _, err := os.Stat(filepath.Join(dest, "usr/local/share/doc/cairn")); !os.IsNotExist(err) {
		t.Errorf("make uninstall left the doc directory (%v)", err)
	}
}

// filesUnder lists the files (not directories) under dir, relative to it, sorted.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// TestMakeDemo runs the README's first command, `make demo`, as a new admin would: it builds
// cairn, backs up a sample volume (full and incremental) into a scratch encrypted
// repository, restores both and compares them by sha256 with the volume at each backup.
func TestMakeDemo(t *testing.T) {
	makeBin := testutil.RequireCommand(t, "make")
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(makeBin, "-C", root, "--no-print-directory", "demo", "BIN="+filepath.Join(t.TempDir(), "cairn"))
	cmd.Env = cairnEnv([]string{"DEMO_DIR=" + dir})
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make demo: %v\n%s", err, out)
	}
	for _, want := range []string{"monday: restored image matches the volume at backup time",
		"tuesday: restored image matches the volume at backup time", "demo repository: " + filepath.Join(dir, "repo")} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make demo's output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "repo", "config")); err != nil {
		t.Errorf("make demo left no repository in DEMO_DIR: %v", err)
	}
}

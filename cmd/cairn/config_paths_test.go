package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// A volume made in a repository given by a relative --repo (or --state-dir) is backed up by
// a command run from another directory with the repository's absolute path, as by a gateway
// started elsewhere. Its record used to keep the path relative to the first command's working
// directory (r/volumes/ID.img), which no other working directory has: every later backup of
// it failed with "no such file or directory", and its restores looked in the wrong place.
func TestRelativeRepoVolumesWorkFromElsewhere(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no developer's file
	for _, flags := range [][]string{{"--repo", "r"}, {"--repo", "r", "--state-dir", "st"}} {
		dir := t.TempDir()
		t.Chdir(dir)
		run := func(args ...string) string {
			t.Helper()
			out, errOut, code := cli(t, flags[1], append(flags[2:], args...)...)
			if code != 0 {
				t.Fatalf("cairn %v %v: exit %d: %s", flags, args, code, errOut)
			}
			return out
		}
		run("repo", "init", "--encryption", "none")
		run("volume", "create", "--size", "1M", "--name", "vm")
		t.Chdir(t.TempDir())
		abs := []string{filepath.Join(dir, "r")}
		if len(flags) > 2 {
			abs = append(abs, "--state-dir", filepath.Join(dir, "st"))
		}
		out, errOut, code := cli(t, abs[0], append(abs[1:], "--quiet", "backup", "create", "vm")...)
		if code != 0 || !strings.Contains(out, "available") {
			t.Errorf("%v: backup from another directory: exit %d: %s%s", flags, code, out, errOut)
		}
	}
}

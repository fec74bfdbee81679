package tests

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// Completion offers volume and backup ids and names: the hidden 'cairn __complete' lists them,
// and the committed bash script, driven as bash drives it, offers them for the arguments and
// flags that take them.
func TestCompletionCandidates(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		testutil.Skip(t, "bash not installed")
	}
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "web.img")
	testutil.WriteImage(t, vol, 2*mib, 80, testutil.Mixed)
	var v struct{ ID string }
	r.mustJSON(&v, "volume", "manage", vol, "--name", "web")
	b := r.createBackup(vol, "--name", "nightly")

	lines := func(s string) []string { return strings.Fields(s) }
	if got := lines(r.mustRun("__complete", "volumes")); !slices.Contains(got, v.ID) || !slices.Contains(got, "web") {
		t.Errorf("__complete volumes = %v, want %s and web", got, v.ID)
	}
	if got := lines(r.mustRun("__complete", "backups")); !slices.Contains(got, b.ID) || !slices.Contains(got, "nightly") {
		t.Errorf("__complete backups = %v, want %s and nightly", got, b.ID)
	}

	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, "contrib", "completion", "cairn.bash")
	complete := func(words ...string) []string {
		t.Helper()
		// The words as bash splits them, the last one being completed.
		src := "source " + script + "; COMP_WORDS=(" + cairnBin
		for _, w := range words {
			src += " '" + w + "'"
		}
		src += "); COMP_CWORD=" + strconv.Itoa(len(words)) + "; _cairn; printf '%s\\n' \"${COMPREPLY[@]}\""
		cmd := exec.Command(bash, "--norc", "-c", src)
		cmd.Env = cairnEnv(nil)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash completion of %v: %v: %s", words, err, out)
		}
		return lines(string(out))
	}
	for _, tt := range []struct {
		words []string
		want  []string
	}{
		{[]string{"--repo", r.Dir, "backup", "show", "ni"}, []string{"nightly"}},
		{[]string{"--repo=" + r.Dir, "backup", "restore", b.ID[:4]}, []string{b.ID}},
		{[]string{"--repo", r.Dir, "backup", "create", "w"}, []string{"web"}},
		{[]string{"--repo", r.Dir, "backup", "list", "--volume", v.ID[:3]}, []string{v.ID}},
		{[]string{"--repo", r.Dir, "volume", "show", ""}, []string{v.ID, "web"}},
		{[]string{"--repo", r.Dir, "backup", "sh"}, []string{"show"}},
	} {
		if got := complete(tt.words...); !slices.Equal(got, tt.want) {
			t.Errorf("completing %v: %v, want %v", tt.words, got, tt.want)
		}
	}

	// An encrypted repository without a passphrase at hand: nothing, at once, no prompt.
	enc := newCairnRepo(t, []string{"CAIRN_PASSWORD=completion-test"})
	res := runCairn(t, []string{"CAIRN_REPO=" + enc.Dir}, "__complete", "backups")
	if res.Code != 0 || res.Stdout != "" {
		t.Errorf("__complete on a locked repository: exit %d, stdout %q; want 0 and nothing", res.Code, res.Stdout)
	}
}

package tests

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// keyJSON is the part of 'repo key list --format json' the tests read.
type keyJSON struct {
	ID      string `json:"id"`
	Label   string `json:"label"`
	User    string `json:"user"`
	Host    string `json:"host"`
	Current bool   `json:"current"`
	Problem string `json:"problem"`
}

// An admin adds a key for a second gateway host while a gateway runs, the new passphrase
// opens the repository and restores byte for byte, and the first key, removed with the second
// one's passphrase, opens nothing any more. Each refusal is one line with its exit code.
func TestRepoKeys(t *testing.T) {
	dir := t.TempDir()
	first := []string{"CAIRN_PASSWORD=first"}
	r := newCairnRepo(t, first, "--key-label", "alice")
	img := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, img, 4<<20, 91, testutil.Mixed)
	want := testutil.SHA256File(t, img)
	gw := startGateway(t, r)
	b := r.createBackup(img, "--wait")

	withEnv := func(env ...string) *cairnRepo {
		c := *r
		c.Env = append(append([]string(nil), r.Env...), env...)
		return &c
	}
	out := withEnv("CAIRN_NEW_PASSWORD=second").mustRun("repo", "key", "add", "--label", "gateway gw2")
	if !strings.HasPrefix(out, "key ") || !strings.HasSuffix(out, " added\n") {
		t.Fatalf("key add printed %q", out)
	}
	second := withEnv("CAIRN_PASSWORD=second")
	var keys []keyJSON
	second.mustJSON(&keys, "repo", "key", "list")
	if len(keys) != 2 || keys[0].Label != "alice" || keys[0].Current || keys[1].Label != "gateway gw2" || !keys[1].Current ||
		keys[1].User == "" || keys[1].Host == "" {
		t.Fatalf("keys listed with the second passphrase: %+v", keys)
	}

	withEnv("CAIRN_NEW_PASSWORD=second").mustFail([]int{4}, "repo", "key", "add") // that passphrase has a key
	second.mustFail([]int{2}, "repo", "key", "remove", keys[1].ID)                // its own key
	second.mustFail([]int{3}, "repo", "key", "remove", "0000ffff")                // no such key
	withEnv("CAIRN_NEW_PASSWORD=third").mustFail([]int{2}, "repo", "key", "add", "--label", "bad\x07")
	withEnv("CAIRN_PASSWORD=wrong").mustFail([]int{6}, "repo", "key", "list")
	if out := second.mustRun("repo", "key", "remove", keys[0].ID[:8]); out != "key "+keys[0].ID+" removed\n" {
		t.Fatalf("key remove printed %q", out)
	}
	r.mustFail([]int{6}, "repo", "key", "list") // the first passphrase's key is gone

	// The running gateway keeps the master key it opened with; a command run without it needs
	// a passphrase that still opens the repository.
	out = filepath.Join(dir, "restored.img")
	second.mustRun("--quiet", "backup", "restore", "--yes", "--wait", b.ID, "--to", out)
	if got := testutil.SHA256File(t, out); got != want {
		t.Fatalf("restore through the gateway after the key change: sha256 %s, want %s", got, want)
	}
	gw.stop()
	out2 := filepath.Join(dir, "restored2.img")
	second.mustRun("--quiet", "backup", "restore", "--yes", b.ID, "--to", out2)
	if got := testutil.SHA256File(t, out2); got != want {
		t.Fatalf("restore with the second passphrase: sha256 %s, want %s", got, want)
	}
	r.mustFail([]int{6}, "backup", "list")

	plain := newCairnRepo(t, nil)
	plain.mustFail([]int{2}, "repo", "key", "list")
}

package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/index"
)

// A command run embedded while another process has the index open (two cron jobs at the same
// minute) waits for it up to --lock-wait and then runs; one that waits longer gives up saying
// who has the index. Before, it failed at once. A server does not wait.
func TestCommandWaitsForTheIndexUpToLockWait(t *testing.T) {
	repoDir, vol, must := cliRepo(t)
	must("volume", "manage", vol, "--name", "vm")
	idx, err := index.Open(filepath.Join(repoDir, "index")) // as another cairn command holds it
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(700*time.Millisecond, func() { idx.Close() })
	start := time.Now()
	out, errOut, code := cli(t, repoDir, "--lock-wait", "30s", "backup", "create", "vm")
	if code != 0 || !strings.Contains(out, "available") {
		t.Fatalf("backup while another command held the index for 0.7 s: exit %d: %s%s", code, out, errOut)
	}
	if waited := time.Since(start); waited < 700*time.Millisecond {
		t.Errorf("the backup ran after %v, before the index was free", waited)
	}
	if !strings.Contains(errOut, "waiting up to 30s (--lock-wait) for another command") {
		t.Errorf("stderr does not say it waits: %q", errOut)
	}

	if idx, err = index.Open(filepath.Join(repoDir, "index")); err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	start = time.Now()
	_, errOut, code = cli(t, repoDir, "--lock-wait", "500ms", "backup", "list")
	if code == 0 || !strings.Contains(errOut, "in use by another cairn process") {
		t.Fatalf("list while the index stays held: exit %d: %s", code, errOut)
	}
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Errorf("gave up after %v, before --lock-wait passed", waited)
	}

	// A server (here nbd; serve and mount alike) fails at once: the holder is most likely
	// another server, which does not end.
	start = time.Now()
	_, errOut, code = cli(t, repoDir, "--lock-wait", "30s", "nbd", "--listen", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errOut, "in use by another cairn process") || strings.Contains(errOut, "waiting") {
		t.Fatalf("nbd while the index is held: exit %d: %s", code, errOut)
	}
	// And it says how to get what it wanted from a running gateway.
	if !strings.Contains(errOut, "give it --mount DIR or --nbd ADDR") {
		t.Errorf("nbd while the index is held does not point at serve --mount/--nbd: %s", errOut)
	}
	if waited := time.Since(start); waited > 20*time.Second {
		t.Errorf("nbd gave up after %v: it waited for the index", waited)
	}
}

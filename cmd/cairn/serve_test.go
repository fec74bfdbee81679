package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
)

// 'cairn serve --job-workers 0' (or -1) is refused as bad input in one line, before anything
// starts; it used to serve with 2 workers, the value the admin did not ask for, without a word.
func TestServeRefusesJobWorkersBelowOne(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no developer's file
	dir := filepath.Join(t.TempDir(), "repo")
	if _, err := gateway.Init(context.Background(), gateway.Config{Repo: dir}, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"0", "-1"} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		var out, errb bytes.Buffer
		code := runCLI(ctx, []string{"--repo", dir, "serve", "--job-workers=" + n}, &out, &errb, nil, nil)
		cancel()
		msg := errb.String()
		if code != exitInvalid || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "--job-workers") {
			t.Errorf("serve --job-workers=%s: exit %d, want %d and one line naming --job-workers: %q", n, code, exitInvalid, msg)
		}
	}
}

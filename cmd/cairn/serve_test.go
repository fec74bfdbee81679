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

// 'cairn serve' with a --listen or --nbd address no listener can take (no port, a port out of
// range) is refused as bad input in one line naming the flag, before the repository opens and
// the job workers and policies start; it used to open and start them, then fail with exit 1
// and Go's own words after the log's warnings.
func TestServeRefusesABadListenAddress(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no developer's file
	dir := filepath.Join(t.TempDir(), "repo")
	if _, err := gateway.Init(context.Background(), gateway.Config{Repo: dir}, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--listen", "8776"}, {"--listen", "127.0.0.1:99999"}, {"--listen", "127.0.0.1:-1"},
		{"--listen", "127.0.0.1:0", "--nbd", "127.0.0.1:70000"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		var out, errb bytes.Buffer
		code := runCLI(ctx, append([]string{"--repo", dir, "serve", "--auth", "noauth", "--no-policies"}, args...), &out, &errb, nil, nil)
		cancel()
		msg, flag := errb.String(), args[len(args)-2]
		if code != exitInvalid || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, flag) {
			t.Errorf("serve %v: exit %d, want %d and one line naming %s: %q", args, code, exitInvalid, flag, msg)
		}
	}
}

// 'cairn nbd --listen' with a port out of range is refused as bad input in one line naming
// the flag, before the repository opens, as 'cairn serve' refuses it; it used to open the
// repository and then fail with exit 1.
func TestNBDRefusesAPortOutOfRange(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no developer's file
	dir := filepath.Join(t.TempDir(), "repo")
	if _, err := gateway.Init(context.Background(), gateway.Config{Repo: dir}, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := runCLI(ctx, []string{"--repo", dir, "nbd", "--listen", "127.0.0.1:99999"}, &out, &errb, nil, nil)
	if msg := errb.String(); code != exitInvalid || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "--listen") {
		t.Errorf("nbd --listen 127.0.0.1:99999: exit %d, want %d and one line naming --listen: %q", code, exitInvalid, msg)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
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

// Global numbers out of range (from a flag or a variable) are refused as bad input in one line
// naming the flag, before any command runs; they used to fall back to the defaults silently,
// so '--lock-stale 0s' ran with 10 minutes. The values their help gives meaning to are taken.
func TestGlobalNumbersOutOfRangeAreRefused(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no developer's file
	dir := filepath.Join(t.TempDir(), "repo")
	if _, err := gateway.Init(context.Background(), gateway.Config{Repo: dir}, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CAIRN_LOCK_STALE", "") // put back when the test ends
	os.Unsetenv("CAIRN_LOCK_STALE")
	run := func(env string, args ...string) (int, string) {
		t.Helper()
		if env != "" {
			os.Setenv("CAIRN_LOCK_STALE", env)
			defer os.Unsetenv("CAIRN_LOCK_STALE")
		}
		var out, errb bytes.Buffer
		code := runCLI(context.Background(), append([]string{"--repo", dir}, append(args, "backup", "list")...), &out, &errb, nil, nil)
		return code, errb.String()
	}
	for _, bad := range []struct{ env, flag, value string }{
		{"", "--workers", "-1"}, {"", "--concurrency", "-2"}, {"", "--retries", "-2"}, {"", "--timeout", "-1s"},
		{"", "--lock-stale", "0s"}, {"", "--lock-stale", "-10m"}, {"", "--lock-wait", "-1s"},
		{"", "--default-quota-backups", "-5"}, {"", "--default-quota-backup-gigabytes", "-2"},
		{"0s", "--lock-stale", ""},
	} {
		forms := [][]string{{}}
		if bad.value != "" { // --flag=value, and --flag value: a negative number is a value, not a short flag
			forms = [][]string{{bad.flag + "=" + bad.value}, {bad.flag, bad.value}}
		}
		for _, args := range forms {
			code, msg := run(bad.env, args...)
			if code != exitInvalid || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, bad.flag) {
				t.Errorf("%v (CAIRN_LOCK_STALE=%q): exit %d, want %d and one line naming the flag: %q", args, bad.env, code, exitInvalid, msg)
			}
		}
	}
	if code, msg := run("", "--workers=0", "--concurrency=0", "--retries=-1", "--timeout=0s", "--lock-wait=0s", "--default-quota-backups=-1"); code != exitOK {
		t.Errorf("the values the help gives meaning to: exit %d: %s", code, msg)
	}
	if code, msg := run("", "--retries", "-1", "--default-quota-backups", "-1", "--default-quota-backup-gigabytes", "-1"); code != exitOK {
		t.Errorf("-1 written as the next argument: exit %d: %s", code, msg)
	}
}

// A negative number written as the next argument is the flag's value, as cinder's
// quota-update takes it: 'quota-update --backups -1 p' lifts the limit. kong read "-1" as a
// short flag and refused the command, asking for --backups=-1.
func TestNegativeNumberAsAFlagsNextArgument(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	dir := filepath.Join(t.TempDir(), "repo")
	if _, err := gateway.Init(context.Background(), gateway.Config{Repo: dir}, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := runCLI(context.Background(), append([]string{"--repo", dir, "--format", "json"}, args...), &out, &errb, nil, nil); code != exitOK {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		return out.String()
	}
	run("quota-update", "--backups", "2", "--backup-gigabytes", "7", "p1")
	out := run("quota-update", "--backups", "-1", "p1")
	var q struct {
		Backups         int64 `json:"backups"`
		BackupGigabytes int64 `json:"backup_gigabytes"`
	}
	if err := json.Unmarshal([]byte(out), &q); err != nil || q.Backups != -1 || q.BackupGigabytes != 7 {
		t.Fatalf("quota-update --backups -1: %s (%v); want backups -1 and the gigabytes kept", out, err)
	}
	var errb bytes.Buffer
	if code := runCLI(context.Background(), []string{"--repo", dir, "quota-update", "--backups", "-x", "p1"}, io.Discard, &errb, nil, nil); code == exitOK || !strings.Contains(errb.String(), "--backups") {
		t.Fatalf("quota-update --backups -x: exit %d: %q; want refused, naming the flag", code, errb.String())
	}
}

// The line a refused command prints says what is wrong in its own words: the kind of error
// (which sets the exit code) is not spelled out in front of it. Before, the CLI's own checks
// printed "cairn: invalid request: --schedule is required: ..." and "cairn: not allowed in
// this state: a gateway is already running ...".
func TestRefusalsSayNoErrorKindWords(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	dir := filepath.Join(t.TempDir(), "repo")
	if _, err := gateway.Init(context.Background(), gateway.Config{Repo: dir}, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	kinds := []error{gateway.ErrNotFound, gateway.ErrInvalid, gateway.ErrInUse, gateway.ErrConflict, gateway.ErrQuota, gateway.ErrDenied, gateway.ErrExists}
	for _, args := range [][]string{
		{"policy", "create", "nightly"},
		{"serve", "--job-workers", "0"},
		{"backup", "create", "--all"},
		{"backup", "prune", "--all", "--keep-last", "1", "--timezone", "Mars/Olympus"},
		{"--repo", filepath.Join(t.TempDir(), "new"), "repo", "init", "--encryption", "none", "--retention", "3d"},
	} {
		var errb bytes.Buffer
		code := runCLI(context.Background(), append([]string{"--repo", dir}, args...), io.Discard, &errb, nil, nil)
		msg := strings.TrimPrefix(strings.TrimSpace(errb.String()), "cairn: ")
		if code == exitOK || msg == "" || strings.Contains(msg, "\n") {
			t.Errorf("%v: exit %d: %q; want refused in one line", args, code, errb.String())
			continue
		}
		for _, k := range kinds {
			if strings.HasPrefix(msg, k.Error()+":") {
				t.Errorf("%v: %q starts with the error kind's words %q", args, msg, k.Error())
			}
		}
	}
}

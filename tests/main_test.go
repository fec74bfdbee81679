package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cairnBin is the cairn binary TestMain builds once for every test in this package; tests run
// it as a user does, as a separate process.
var cairnBin string

// cairnCommandTimeout bounds one run of the binary, so a hang fails the test instead of
// eating the whole -timeout.
const cairnCommandTimeout = 2 * time.Minute

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cairn-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tests:", err)
		return 1
	}
	cairnBin = filepath.Join(dir, "cairn")
	// Built as make build builds it (no cgo, -trimpath): the binary admins run, and after
	// make build only the link is left to do.
	build := exec.Command("go", "build", "-trimpath", "-o", cairnBin, "./cmd/cairn")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "tests: go build ./cmd/cairn: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// moduleRoot finds the directory holding go.mod, upwards from the package directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the tests directory")
		}
		dir = parent
	}
}

// cairnResult is what one run of the binary left behind.
type cairnResult struct {
	Stdout, Stderr string
	Code           int
}

// cairnEnv is the environment the binary runs with: the test's own, minus every CAIRN_* and
// AWS_* variable (so a developer's settings cannot leak in), plus extra ("KEY=value").
func cairnEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CAIRN_") || strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// runCairn runs the built binary with args and env ("KEY=value", usually CAIRN_REPO=...) and
// returns its output and exit code. It fails the test only when the binary cannot be run or
// hangs; a non-zero exit is the caller's to judge.
func runCairn(t testing.TB, env []string, args ...string) cairnResult {
	t.Helper()
	return runBinary(t, cairnBin, env, args...)
}

// runCairnIn is runCairn in the working directory dir.
func runCairnIn(t testing.TB, dir string, env []string, args ...string) cairnResult {
	t.Helper()
	return runBinaryIn(t, cairnBin, dir, env, args...)
}

// runBinary is runCairn with another cairn binary (an installed one).
func runBinary(t testing.TB, bin string, env []string, args ...string) cairnResult {
	t.Helper()
	return runBinaryIn(t, bin, "", env, args...)
}

// runBinaryIn is runBinary in the working directory dir ("": the test's).
func runBinaryIn(t testing.TB, bin, dir string, env []string, args ...string) cairnResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cairnCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cairnEnv(env)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cairnResult{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && ctx.Err() == nil:
		res.Code = exit.ExitCode()
	case ctx.Err() != nil:
		t.Fatalf("cairn %s: no answer within %v\nstderr: %s", strings.Join(args, " "), cairnCommandTimeout, res.Stderr)
	default:
		t.Fatalf("cairn %s: %v", strings.Join(args, " "), err)
	}
	return res
}

// startCairn starts the binary without waiting for it, for tests that interrupt or kill it.
// The process is killed when the test ends if it is still running.
func startCairn(t testing.TB, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(cairnBin, args...)
	cmd.Env = cairnEnv(env)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start cairn %s: %v", strings.Join(args, " "), err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// cairnRepo is one repository under a test's temp dir and the environment that points the
// binary at it.
type cairnRepo struct {
	t   testing.TB
	Dir string
	Env []string
}

// newCairnRepo creates a repository with 'cairn repo init initArgs...' in a fresh temp dir.
// env is added to every command (e.g. CAIRN_PASSWORD=...). See withEncryption.
func newCairnRepo(t testing.TB, env []string, initArgs ...string) *cairnRepo {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	r := &cairnRepo{t: t, Dir: dir, Env: append([]string{"CAIRN_REPO=" + dir}, env...)}
	r.mustRun(append([]string{"repo", "init"}, withEncryption(env, initArgs)...)...)
	return r
}

// withEncryption completes the arguments of a test's 'repo init': a test that gives a passphrase
// (CAIRN_PASSWORD in env) or names --encryption gets what it asks for (the default is
// encrypted); any other asks for --encryption none explicitly, as an admin without a
// passphrase must.
func withEncryption(env, args []string) []string {
	for _, a := range args {
		if a == "--encryption" || strings.HasPrefix(a, "--encryption=") {
			return args
		}
	}
	for _, kv := range env {
		if strings.HasPrefix(kv, "CAIRN_PASSWORD=") {
			return args
		}
	}
	return append(append([]string(nil), args...), "--encryption", "none")
}

// run runs cairn against the repository.
func (r *cairnRepo) run(args ...string) cairnResult {
	r.t.Helper()
	return runCairn(r.t, r.Env, args...)
}

// mustRun runs cairn and fails the test unless it exits 0; it returns stdout.
func (r *cairnRepo) mustRun(args ...string) string {
	r.t.Helper()
	res := r.run(args...)
	if res.Code != 0 {
		r.t.Fatalf("cairn %s: exit %d\nstderr: %s\nstdout: %s", strings.Join(args, " "), res.Code, res.Stderr, res.Stdout)
	}
	return res.Stdout
}

// mustJSON runs cairn with --format json, fails unless it exits 0, and decodes stdout into v.
func (r *cairnRepo) mustJSON(v any, args ...string) {
	r.t.Helper()
	out := r.mustRun(append([]string{"--format", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		r.t.Fatalf("cairn %s: stdout is not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// mustFail runs cairn and fails the test unless it exits with one of codes and prints exactly
// one line on stderr, starting with "cairn: ". It returns that line.
func (r *cairnRepo) mustFail(codes []int, args ...string) string {
	r.t.Helper()
	return checkFailure(r.t, r.run(args...), codes, args)
}

// checkFailure is mustFail's judgement, for results of runCairn with a custom environment.
func checkFailure(t testing.TB, res cairnResult, codes []int, args []string) string {
	t.Helper()
	cmdline := "cairn " + strings.Join(args, " ")
	ok := false
	for _, c := range codes {
		ok = ok || res.Code == c
	}
	if !ok {
		t.Fatalf("%s: exit %d, want one of %v\nstderr: %s\nstdout: %s", cmdline, res.Code, codes, res.Stderr, res.Stdout)
	}
	line := strings.TrimSuffix(res.Stderr, "\n")
	if line == "" || strings.Contains(line, "\n") || !strings.HasPrefix(line, "cairn: ") {
		t.Fatalf("%s: want exactly one stderr line starting with \"cairn: \", got %q", cmdline, res.Stderr)
	}
	return line
}

// backupJSON is the part of 'backup show/list --format json' the tests read.
type backupJSON struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	VolumeID      string `json:"volume_id"`
	Status        string `json:"status"`
	FailReason    string `json:"fail_reason"`
	Size          int64  `json:"size"`
	ObjectCount   int64  `json:"object_count"`
	IsIncremental bool   `json:"is_incremental"`
	ParentID      string `json:"parent_id"`
	Stats         struct {
		Blocks        int64 `json:"blocks"`
		ChangedBlocks int64 `json:"changed_blocks"`
		NewBytes      int64 `json:"new_bytes"`
	} `json:"stats"`
	ReadBytes    int64  `json:"read_bytes"`
	ReadMode     string `json:"read_mode"`
	ReadFallback string `json:"read_fallback"`
	// RunBy is set on a backup another gateway is creating (it is in no index here), and
	// LastRestore names that gateway's host on one it is restoring.
	RunBy       string `json:"run_by"`
	LastRestore *struct {
		Target string `json:"target"`
		Result string `json:"result"`
	} `json:"last_restore"`
}

// createBackup runs 'backup create' with args (volume first) and returns the new backup.
func (r *cairnRepo) createBackup(args ...string) backupJSON {
	r.t.Helper()
	var b backupJSON
	r.mustJSON(&b, append([]string{"--quiet", "backup", "create"}, args...)...)
	if b.ID == "" || b.Status != "available" {
		r.t.Fatalf("backup create %v: got %+v, want an available backup", args, b)
	}
	return b
}

// listBackups returns 'backup list --format json'.
func (r *cairnRepo) listBackups(args ...string) []backupJSON {
	r.t.Helper()
	var bs []backupJSON
	r.mustJSON(&bs, append([]string{"backup", "list"}, args...)...)
	return bs
}

// showBackup returns 'backup show ID --format json'.
func (r *cairnRepo) showBackup(id string) backupJSON {
	r.t.Helper()
	var b backupJSON
	r.mustJSON(&b, "backup", "show", id)
	return b
}

// restoreTo restores backup id onto path (a file, created when missing, or a device).
func (r *cairnRepo) restoreTo(id, path string) {
	r.t.Helper()
	r.mustRun("--quiet", "backup", "restore", "--yes", id, "--to", path)
}

// onlyPack returns the repository's one pack file, failing the test if there is not exactly
// one (tests that damage "the" pack rely on a backup small enough to fit in one).
func onlyPack(t *testing.T, r *cairnRepo) string {
	t.Helper()
	packs := packFiles(t, r.Dir)
	if len(packs) != 1 {
		t.Fatalf("the repository has %d packs, want 1: %v", len(packs), packs)
	}
	return packs[0]
}

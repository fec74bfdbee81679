package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
)

// A command a gateway runs for a client reads a relative --password-file in the client's
// working directory, as the client's own parse of the same line did, not the gateway's:
// 'cairn --password-file pass backup list' in /root beside a gateway started in / failed
// with "stat /pass: no such file or directory".
func TestForwardedPasswordFileRelativeToClient(t *testing.T) {
	dir := t.TempDir()
	s := openedGateway(t, gateway.Config{Repo: filepath.Join(dir, "repo"), Password: "secret"})
	cwd := filepath.Join(dir, "client")
	if err := os.MkdirAll(cwd, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cwd, "pass"), []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, msg := execOn(t, s, execRequest{Args: []string{"--password-file", "pass", "backup", "list"}, Cwd: cwd}); code != exitOK {
		t.Errorf("forwarded backup list with --password-file relative to the client: exit %d: %s", code, msg)
	}
	if code, msg := execOn(t, s, execRequest{Args: []string{"--password-file", "missing", "backup", "list"}, Cwd: cwd}); code != exitInvalid {
		t.Errorf("forwarded backup list with a missing --password-file: exit %d, want %d: %s", code, exitInvalid, msg)
	}
}

// execOn runs a forwarded command in the gateway of s as execHandler does for a client, and
// returns its exit code and stderr.
func execOn(t *testing.T, s *gateway.Service, req execRequest) (int, string) {
	t.Helper()
	body, _ := json.Marshal(req)
	rec := httptest.NewRecorder()
	execHandler(s).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, execPath, bytes.NewReader(body)))
	code, stderr := -1, ""
	for _, line := range strings.Split(strings.TrimSpace(rec.Body.String()), "\n") {
		var f execFrame
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("frame %q: %v", line, err)
		}
		stderr += f.Err
		if f.Exit != nil {
			code = *f.Exit
		}
	}
	return code, stderr
}

// --read-only on a command sent to a gateway that writes to the repository is refused, not run
// on the gateway's writable service: 'cairn --read-only backup create vm' (or with
// CAIRN_READ_ONLY=1, which only the client sees) beside a gateway stored a backup, against
// "--read-only on a writable repository changes no byte of it".
func TestForwardedReadOnlyRefusedByWritableGateway(t *testing.T) {
	dir := t.TempDir()
	s, admin := gatewayWithVolume(t, gateway.Config{Repo: filepath.Join(dir, "repo")}, dir)
	sock := filepath.Join(dir, "cairn.sock")
	l, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: execHandler(s)}
	go srv.Serve(l) //nolint:errcheck // ends with Close
	defer srv.Close()
	for _, args := range [][]string{
		{"--read-only", "--quiet", "backup", "create", "vm"},
		{"--quiet", "backup", "create", "vm"}, // with CAIRN_READ_ONLY=1, which the gateway does not see
	} {
		var out, errb bytes.Buffer
		code, ok := forward(context.Background(), &Globals{Socket: sock, ReadOnly: true, Project: gateway.DefaultProject}, args, &out, &errb)
		if !ok || code != exitInvalid || strings.Count(errb.String(), "\n") != 1 || !strings.Contains(errb.String(), "--read-only") {
			t.Errorf("%v read-only on a writable gateway: forwarded %v, exit %d, want %d and one line naming --read-only: %q", args, ok, code, exitInvalid, errb.String())
		}
	}
	if bs, err := s.ListBackups(admin, gateway.ListFilter{}); err != nil || len(bs) != 0 {
		t.Errorf("--read-only backup create on a writable gateway left %d backups (%v)", len(bs), err)
	}
}

// A command a gateway runs for a client says that the service flags it was given (workers,
// concurrency, bandwidth limits) are the gateway's to set: they did nothing, silently, while
// the client believed its backup was held to --limit-read.
func TestForwardedServiceFlagsAreSaidToBeTheGateways(t *testing.T) {
	dir := t.TempDir()
	s := openedGateway(t, gateway.Config{Repo: filepath.Join(dir, "repo")})
	code, msg := execOn(t, s, execRequest{Args: []string{"--limit-read=50M", "--workers", "2", "backup", "list"}, Cwd: dir})
	if code != exitOK || !strings.Contains(msg, "--workers, --limit-read: the gateway's own settings apply") {
		t.Errorf("forwarded list with service flags: exit %d: %q", code, msg)
	}
	if code, msg := execOn(t, s, execRequest{Args: []string{"backup", "list"}, Cwd: dir}); code != exitOK || msg != "" {
		t.Errorf("forwarded list without them: exit %d: %q", code, msg)
	}
}

// A command is run only by a process serving the repository it names. With one state directory
// for two repositories (one CAIRN_STATE_DIR), 'cairn --repo B backup list' went to the socket of
// a gateway or mount serving A, listed A's backups as B's, and a delete by id deleted in A.
func TestForwardedCommandForAnotherRepositoryIsRefused(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	a := gateway.Config{Repo: filepath.Join(dir, "a"), StateDir: state}
	s, admin := gatewayWithVolume(t, a, dir)
	serveSocket(t, s, a.SocketPath())
	rename := func(g *Globals, from, name string) (int, string) {
		t.Helper()
		g.Project, g.Quiet = gateway.DefaultProject, true
		var out, errb bytes.Buffer
		code, ok := forward(context.Background(), g, []string{"volume", "update", from, "--name", name}, &out, &errb)
		if !ok {
			t.Fatalf("rename to %s: not forwarded", name)
		}
		return code, errb.String()
	}
	volumeName := func() string {
		t.Helper()
		vs, err := s.ListVolumes(admin, false)
		if err != nil || len(vs) != 1 {
			t.Fatalf("volumes: %v %v", vs, err)
		}
		return vs[0].Name
	}

	code, msg := rename(&Globals{Repo: filepath.Join(dir, "b"), StateDir: state}, "vm", "renamed-for-b")
	if code != exitInvalid || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "another repository") {
		t.Errorf("a command for repository b on a's socket: exit %d, want %d and one line saying it serves another repository: %q", code, exitInvalid, msg)
	}
	if n := volumeName(); n != "vm" {
		t.Fatalf("a command for repository b renamed a's volume to %s", n)
	}
	// The same repository by another path (a symbolic link, a trailing slash) is the same one.
	link := filepath.Join(dir, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if code, msg := rename(&Globals{Repo: filepath.Join(link, "a") + "/", StateDir: state}, "vm", "vm2"); code != exitOK || volumeName() != "vm2" {
		t.Errorf("a command for a by a symbolic link: exit %d (%q), volume %s", code, msg, volumeName())
	}
	// --socket and no repository: whatever that gateway serves.
	if code, msg := rename(&Globals{Socket: a.SocketPath()}, "vm2", "vm3"); code != exitOK || volumeName() != "vm3" {
		t.Errorf("a command given --socket alone: exit %d (%q), volume %s", code, msg, volumeName())
	}
}

// A gateway started for another repository on a state directory whose socket a running one
// holds is told which repository that one serves, not "a gateway is already running for this
// repository"; for the same repository the message stays.
func TestServeOnAnotherRepositorysSocketSaysSo(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no developer's file
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	a := gateway.Config{Repo: filepath.Join(dir, "a"), StateDir: state}
	s := openedGateway(t, a)
	serveSocket(t, s, a.SocketPath())
	if got := socketRepository(a.SocketPath()); !gateway.SameRepository(got, a.Repo) {
		t.Fatalf("the socket says it serves %q, want %s", got, a.Repo)
	}
	for repoDir, want := range map[string]string{filepath.Join(dir, "b"): "serves " + a.Repo + ", another repository", a.Repo: "already running for this repository"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var out, errb bytes.Buffer
		code := runCLI(ctx, []string{"--repo", repoDir, "--state-dir", state, "serve", "--auth", "noauth", "--no-policies"}, &out, &errb, nil, nil)
		cancel()
		if msg := errb.String(); code != exitConflict || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, want) {
			t.Errorf("serve --repo %s: exit %d, want %d and one line saying %q: %q", repoDir, code, exitConflict, want, msg)
		}
	}
}

// serveSocket answers the CLI's requests on sock for s, as a gateway's or a mount's socket
// does, until the test ends.
func serveSocket(t *testing.T, s *gateway.Service, sock string) {
	t.Helper()
	l, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(execPath, execHandler(s))
	mux.Handle(repositoryPath, repositoryHandler(s))
	srv := &http.Server{Handler: mux}
	go srv.Serve(l) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
}

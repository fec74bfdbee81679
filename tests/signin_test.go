package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// TestCinderSignsInWithAPassword: users made with 'cairn user add' sign in as OpenStack users
// do, through the gateway's identity endpoint: the stock cinder client with --os-auth-url,
// --os-username, --os-password and --os-project-name (and seed 3.1.2's --os-tenant-name with
// a v2 URL) backs up and restores byte-exact; an admin who signs in with a project's user
// makes a backup that project sees; a wrong password, another project or a removed user or
// changed password is refused, at once for tokens already issued.
func TestCinderSignsInWithAPassword(t *testing.T) {
	cinder := testutil.RequireCommand(t, "cinder")
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	users := filepath.Join(dir, "users")
	addUser := func(user, project, password string, roles ...string) {
		t.Helper()
		args := []string{"user", "add", user, project, "--users", users}
		for _, role := range roles {
			args = append(args, "--role", role)
		}
		res := runCairn(t, append(r.Env, "CAIRN_USER_PASSWORD="+password), args...)
		if res.Code != 0 {
			t.Fatalf("cairn %v: exit %d: %s", args, res.Code, res.Stderr)
		}
	}
	addUser("alice", "p1", "alice-pw-1")
	addUser("bob", "p2", "bob-pw")
	addUser("root", "admin", "root-pw", "admin")
	if fi, err := os.Stat(users); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("users file: %v %v, want mode 0600", fi, err)
	}
	if data, _ := os.ReadFile(users); bytes.Contains(data, []byte("alice-pw-1")) {
		t.Fatal("the users file holds a password in clear")
	}

	img := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, img, 32<<20, 5, testutil.Mixed)
	r.mustRun("volume", "manage", img, "--name", "vol", "--project", "p1")
	addr, nbdAddr := freePort(t), freePort(t)
	startGateway(t, r, "--listen", addr, "--users", users, "--nbd", nbdAddr)
	authURL := "http://" + addr + "/identity/v3"

	run := func(auth []string, args ...string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, cinder, append(append([]string{}, auth...), args...)...)
		cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	ok := func(auth []string, args ...string) string {
		t.Helper()
		out, err := run(auth, args...)
		if err != nil {
			t.Fatalf("cinder %v: %v\n%s", args, err, out)
		}
		return out
	}
	fails := func(want string, auth []string, args ...string) {
		t.Helper()
		out, err := run(auth, args...)
		if err == nil || !regexp.MustCompile(want).MatchString(out) {
			t.Fatalf("cinder %v: %v, want a failure matching %q:\n%s", args, err, want, out)
		}
	}
	as := func(user, password, project string) []string {
		return []string{"--os-auth-url", authURL, "--os-username", user, "--os-password", password, "--os-project-name", project}
	}
	alice := as("alice", "alice-pw-1", "p1")

	// A backup and a restore, as alice.
	src := testutil.SHA256File(t, img)
	b := dict(ok(alice, "backup-create", "--name", "signed-in", "vol"))["id"]
	waitFor(t, 60*time.Second, "the backup", func() bool { return dict(ok(alice, "backup-show", b))["status"] == "available" })
	restored := dict(ok(alice, "backup-restore", b))["volume_id"]
	waitFor(t, 60*time.Second, "the restore", func() bool { return dict(ok(alice, "show", restored))["status"] == "available" })
	var v gwVolume
	r.mustJSON(&v, "volume", "show", restored, "--project", "p1")
	if got := testutil.SHA256File(t, v.Path); got != src {
		t.Fatalf("restored through a signed-in cinder: sha256 %s, want %s", got, src)
	}

	// The unified client signs in the same way (an openrc's OS_* variables).
	osc := exec.Command(testutil.RequireCommand(t, "openstack"), "volume", "backup", "list", "-f", "value", "-c", "ID")
	osc.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH"), "OS_AUTH_URL=" + authURL, "OS_USERNAME=alice",
		"OS_PASSWORD=alice-pw-1", "OS_PROJECT_NAME=p1", "OS_USER_DOMAIN_NAME=Default", "OS_PROJECT_DOMAIN_NAME=Default"}
	if out, err := osc.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != b {
		t.Fatalf("openstack volume backup list: %v\n%s", err, out)
	}
	// openstack volume set renames the restored volume (PUT volumes/{id}), and shows the new name.
	for _, args := range [][]string{{"volume", "set", "--name", "renamed-by-osc", "--description", "via openstack", restored},
		{"volume", "show", "-f", "value", "-c", "name", "-c", "description", "renamed-by-osc"}} {
		osc := exec.Command(testutil.RequireCommand(t, "openstack"), args...)
		osc.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH"), "OS_AUTH_URL=" + authURL, "OS_USERNAME=alice",
			"OS_PASSWORD=alice-pw-1", "OS_PROJECT_NAME=p1", "OS_USER_DOMAIN_NAME=Default", "OS_PROJECT_DOMAIN_NAME=Default"}
		out, err := osc.CombinedOutput()
		if err != nil {
			t.Fatalf("openstack %v: %v\n%s", args, err, out)
		}
		if args[1] == "show" && (!strings.Contains(string(out), "renamed-by-osc") || !strings.Contains(string(out), "via openstack")) {
			t.Fatalf("openstack volume show after volume set: %s", out)
		}
	}

	// Seed 3.1.2: an old openrc's v2 URL and --os-tenant-name; an admin who signs in as the
	// project's user makes a backup the project sees (and counts against its quota).
	seed := []string{"--os-auth-url", "http://" + addr + "/identity/v2.0", "--os-tenant-name", "p1",
		"--os-username", "alice", "--os-password", "alice-pw-1"}
	if !strings.Contains(ok(seed, "backup-list"), b) {
		t.Fatal("seed 3.1.2's sign-in does not list alice's backup")
	}
	ok(seed, "backup-create", "--name", "for-p1", "vol")
	// bob sees nothing of p1's; alice nothing in p2; root's admin token lists every project.
	if out := ok(as("bob", "bob-pw", "p2"), "backup-list"); strings.Contains(out, b) {
		t.Fatalf("bob lists p1's backup:\n%s", out)
	}
	fails(`wrong user name, password or project \(HTTP 401\)`, as("alice", "alice-pw-1", "p2"), "backup-list")
	fails(`wrong user name, password or project \(HTTP 401\)`, as("alice", "bob-pw", "p1"), "backup-list")
	fails(`wrong user name, password or project \(HTTP 401\)`, as("carol", "x", "p1"), "backup-list")
	if out := ok(as("root", "root-pw", "admin"), "backup-list", "--all-tenants"); !strings.Contains(out, b) {
		t.Fatalf("the admin's --all-tenants does not list p1's backup:\n%s", out)
	}

	// Issued tokens end when their user's password changes or the user is removed.
	token := signIn(t, authURL, "alice", "alice-pw-1", "p1")
	// An issued token opens NBD exports of its project, as a token of the tokens file does;
	// without one, or with bob's for alice's backup, nothing is served.
	testutil.RequireCommand(t, "qemu-img")
	if got := qemuConvert(t, "nbd://"+nbdAddr+"/"+token+"@"+b, filepath.Join(dir, "nbd.img")); got != src {
		t.Fatalf("alice's backup over NBD with her issued token: sha256 %s, want %s", got, src)
	}
	for _, export := range []string{b, signIn(t, authURL, "bob", "bob-pw", "p2") + "@" + b} {
		if out, err := exec.Command("qemu-img", "info", "nbd://"+nbdAddr+"/"+export).CombinedOutput(); err == nil {
			t.Fatalf("export %s served:\n%s", export, out)
		}
	}
	listP1 := func(tok string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+"/v3/p1/backups", nil)
		req.Header.Set("X-Auth-Token", tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := listP1(token); code != http.StatusOK {
		t.Fatalf("alice's token: HTTP %d", code)
	}
	addUser("alice", "p1", "alice-pw-2")
	if code := listP1(token); code != http.StatusUnauthorized {
		t.Fatalf("a token after its user's password changed: HTTP %d, want 401", code)
	}
	fails(`HTTP 401`, alice, "backup-list")
	token = signIn(t, authURL, "alice", "alice-pw-2", "p1")
	if code := listP1(token); code != http.StatusOK {
		t.Fatalf("alice's token after the change: HTTP %d", code)
	}
	r.mustRun("user", "delete", "alice", "--users", users)
	if code := listP1(token); code != http.StatusUnauthorized {
		t.Fatalf("a token after its user was removed: HTTP %d, want 401", code)
	}
}

// signIn posts Keystone's v3 password sign-in and returns the token.
func signIn(t *testing.T, authURL, user, password, project string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"},
			"password": map[string]any{"user": map[string]any{"name": user, "password": password, "domain": map[string]string{"id": "default"}}}},
		"scope": map[string]any{"project": map[string]any{"name": project, "domain": map[string]string{"id": "default"}}}}})
	resp, err := http.Post(authURL+"/auth/tokens", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	token := resp.Header.Get("X-Subject-Token")
	if resp.StatusCode != http.StatusCreated || token == "" {
		t.Fatalf("sign-in of %s: HTTP %d, token %q", user, resp.StatusCode, token)
	}
	return token
}

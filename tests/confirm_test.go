package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// onTerminal runs cairn on a pseudo-terminal (util-linux script), types answer and Enter once
// the "[y/N]" prompt shows (answer "" types nothing), and returns what the terminal showed and
// the exit code.
func onTerminal(t *testing.T, env []string, answer string, args ...string) (string, int) {
	t.Helper()
	script := testutil.RequireCommand(t, "script")
	words := []string{shellQuote(cairnBin)}
	for _, a := range args {
		words = append(words, shellQuote(a))
	}
	cmd := exec.Command(script, "--quiet", "--return", "--command", strings.Join(words, " "), "/dev/null")
	cmd.Env = cairnEnv(env)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if answer != "" {
		waitFor(t, 30*time.Second, "the [y/N] prompt of cairn "+strings.Join(args, " "), func() bool {
			return strings.Contains(out.String(), "[y/N]")
		})
		fmt.Fprintf(stdin, "%s\n", answer)
	}
	select {
	case <-exited:
	case <-time.After(cairnCommandTimeout):
		_ = cmd.Process.Kill()
		t.Fatalf("cairn %v on a terminal: no end within %v: %s", args, cairnCommandTimeout, out.String())
	}
	return strings.ReplaceAll(out.String(), "\r\n", "\n"), cmd.ProcessState.ExitCode()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Destructive commands ask on a terminal and need --yes without one; a refusal changes
// nothing. Embedded, on an image file and a loop device.
func TestConfirmDestructiveCommands(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 4*mib, 81, testutil.Mixed)
	volSHA := testutil.SHA256File(t, vol)
	r.mustRun("volume", "manage", vol, "--name", "vol")
	b := r.createBackup("vol", "--name", "first")
	testutil.ScatterWrites(t, vol, 82, 0.05, 4<<10, 64<<10)
	changedSHA := testutil.SHA256File(t, vol)

	needsYes := func(what string, args ...string) {
		t.Helper()
		msg := r.mustFail([]int{2}, args...)
		if !strings.Contains(msg, "--yes") || !strings.Contains(msg, what) {
			t.Errorf("cairn %v without a terminal: %q should name %q and --yes", args, msg, what)
		}
	}
	// Restore over the registered volume, onto an existing file, onto a device.
	needsYes("volume vol", "--quiet", "backup", "restore", b.ID, "--volume", "vol")
	needsYes("volume vol", "--quiet", "backup", "restore", b.ID, "--to", vol)
	existing := filepath.Join(dir, "existing.img")
	testutil.WriteImage(t, existing, 4*mib, 83, testutil.Random)
	existingSHA := testutil.SHA256File(t, existing)
	needsYes(existing, "--quiet", "backup", "restore", b.ID, "--to", existing)
	devImg := filepath.Join(dir, "dev.img")
	testutil.WriteImage(t, devImg, 4*mib, 84, testutil.Random)
	dev := testutil.LoopDevice(t, devImg, false)
	devSHA := testutil.SHA256File(t, dev)
	needsYes("block device "+dev, "--quiet", "backup", "restore", b.ID, "--to", dev)
	for path, want := range map[string]string{vol: changedSHA, existing: existingSHA, dev: devSHA} {
		if got := testutil.SHA256File(t, path); got != want {
			t.Errorf("a refused restore changed %s", path)
		}
	}
	// A new file needs no confirmation.
	fresh := filepath.Join(dir, "fresh.img")
	r.mustRun("--quiet", "backup", "restore", b.ID, "--to", fresh)
	if got := testutil.SHA256File(t, fresh); got != volSHA {
		t.Errorf("restore to a new file: sha256 %s, want %s", got, volSHA)
	}

	// On a terminal: "n" keeps, "y" goes ahead.
	out, code := onTerminal(t, r.Env, "n", "--quiet", "backup", "restore", b.ID, "--to", dev)
	if code != 1 || !strings.Contains(out, "not confirmed") || testutil.SHA256File(t, dev) != devSHA {
		t.Errorf("restore onto %s answered n: exit %d, %q; want exit 1, not confirmed, the device unchanged", dev, code, out)
	}
	out, code = onTerminal(t, r.Env, "y", "--quiet", "backup", "restore", b.ID, "--to", dev)
	if code != 0 || !strings.Contains(out, "replace the contents of block device "+dev+" with backup "+b.ID+" (first)? [y/N]") {
		t.Errorf("restore onto %s answered y: exit %d, %q", dev, code, out)
	}
	if got := testutil.SHA256File(t, dev); got != volSHA {
		t.Errorf("restore onto %s after y: sha256 %s, want %s", dev, got, volSHA)
	}
	r.mustRun("--quiet", "backup", "restore", b.ID, "--volume", "vol", "--yes")
	if got := testutil.SHA256File(t, vol); got != volSHA {
		t.Errorf("restore --yes over volume vol: sha256 %s, want %s", got, volSHA)
	}

	// Backup delete.
	needsYes("delete backup "+b.ID, "backup", "delete", b.ID)
	out, code = onTerminal(t, r.Env, "no", "backup", "delete", b.ID)
	if code != 1 || r.backupStatus(b.ID) != "available" {
		t.Errorf("backup delete answered no: exit %d, %q; status %s", code, out, r.backupStatus(b.ID))
	}

	// Volume delete: refused with backups unless --force; then asked; its backups stay.
	if msg := r.mustFail([]int{4}, "volume", "delete", "vol", "--yes"); !strings.Contains(msg, "--force") {
		t.Errorf("volume delete with backups: %q should name --force", msg)
	}
	needsYes("delete volume vol", "volume", "delete", "vol", "--force")
	r.mustRun("volume", "delete", "vol", "--force", "--yes")
	r.restoreTo(b.ID, filepath.Join(dir, "after-volume-delete.img"))
	if got := testutil.SHA256File(t, filepath.Join(dir, "after-volume-delete.img")); got != volSHA {
		t.Errorf("a backup of a deleted volume restores to sha256 %s, want %s", got, volSHA)
	}
	// A volume cairn created loses its image: asked. A registered one without backups: not.
	var created gwVolume
	r.mustJSON(&created, "volume", "create", "--size", "1M", "--name", "scratch")
	needsYes("delete volume scratch", "volume", "delete", "scratch")
	if _, err := os.Stat(created.Path); err != nil {
		t.Errorf("a refused volume delete removed the image: %v", err)
	}
	out, code = onTerminal(t, r.Env, "y", "volume", "delete", "scratch")
	if _, err := os.Stat(created.Path); code != 0 || !os.IsNotExist(err) {
		t.Errorf("volume delete answered y: exit %d, %q; image %v", code, out, err)
	}
	r.mustRun("volume", "manage", existing, "--name", "plain")
	r.mustRun("volume", "delete", "plain")

	out, code = onTerminal(t, r.Env, "y", "backup", "delete", b.ID)
	if code != 0 || r.backupStatus(b.ID) != "gone" {
		t.Errorf("backup delete answered y: exit %d, %q; status %s", code, out, r.backupStatus(b.ID))
	}
}

// Through a gateway the gateway has no terminal: the client asks its own user and sends the
// command again, confirmed; without a terminal the client needs --yes, as embedded.
func TestConfirmThroughGateway(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 3*mib, 91, testutil.Mixed)
	b := r.createBackup(vol, "--name", "gw")
	startGateway(t, r)

	msg := r.mustFail([]int{2}, "backup", "delete", b.ID)
	if !strings.Contains(msg, "--yes") {
		t.Errorf("backup delete through the gateway without a terminal: %q should name --yes", msg)
	}
	out, code := onTerminal(t, r.Env, "n", "backup", "delete", b.ID)
	if code != 1 || !strings.Contains(out, "delete backup "+b.ID+" (gw)") || r.backupStatus(b.ID) != "available" {
		t.Errorf("through the gateway, answered n: exit %d, %q; status %s", code, out, r.backupStatus(b.ID))
	}
	target := filepath.Join(dir, "target.img")
	testutil.WriteImage(t, target, 3*mib, 92, testutil.Random)
	out, code = onTerminal(t, r.Env, "y", "--quiet", "backup", "restore", b.ID, "--to", target, "--wait")
	if code != 0 || strings.Count(out, "[y/N]") != 1 {
		t.Errorf("restore through the gateway, answered y: exit %d, %q; want one question", code, out)
	}
	if got, want := testutil.SHA256File(t, target), testutil.SHA256File(t, vol); got != want {
		t.Errorf("restore through the gateway after y: sha256 %s, want %s", got, want)
	}
	out, code = onTerminal(t, r.Env, "y", "backup", "delete", b.ID)
	if code != 0 || r.backupStatus(b.ID) != "gone" {
		t.Errorf("through the gateway, answered y: exit %d, %q; status %s", code, out, r.backupStatus(b.ID))
	}
	b2 := r.createBackup(vol, "--name", "gw2", "--wait")
	r.mustRun("backup", "delete", "--yes", b2.ID)
	if r.backupStatus(b2.ID) != "gone" {
		t.Errorf("backup delete --yes through the gateway: status %s", r.backupStatus(b2.ID))
	}
}

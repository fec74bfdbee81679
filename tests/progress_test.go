package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

var (
	backupSummaryRE  = regexp.MustCompile(`^backed up \S+ as backup [0-9a-f-]{36}: 6\.0 MiB, read [0-9.]+ [KMG]?i?B, stored [0-9.]+ [KMG]?i?B new, in [0-9.]+ s, [0-9.]+ MiB/s$`)
	restoreSummaryRE = regexp.MustCompile(`^restored backup [0-9a-f-]{36} to \S+: 6\.0 MiB, in [0-9.]+ s, [0-9.]+ MiB/s$`)
)

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// Backup create and restore end with one summary line on stderr when it is not a terminal
// (bytes read and stored, time, MiB/s), in binary units like the tables; --quiet drops it.
func TestProgressSummary(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 6*mib, 51, testutil.Mixed)

	res := r.run("-f", "json", "backup", "create", vol, "--name", "summed")
	if res.Code != 0 || !backupSummaryRE.MatchString(lastLine(res.Stderr)) {
		t.Fatalf("backup create: exit %d, want a summary as the last line of stderr, got:\n%s", res.Code, res.Stderr)
	}
	if strings.Contains(res.Stderr, " MB") || strings.Contains(res.Stderr, " GB") {
		t.Errorf("progress mixes decimal units in:\n%s", res.Stderr)
	}
	out := filepath.Join(dir, "out.img")
	res = r.run("backup", "restore", "summed", "--to", out, "--yes")
	if res.Code != 0 || !restoreSummaryRE.MatchString(lastLine(res.Stderr)) {
		t.Fatalf("backup restore: exit %d, want a summary as the last line of stderr, got:\n%s", res.Code, res.Stderr)
	}
	if testutil.SHA256File(t, out) != testutil.SHA256File(t, vol) {
		t.Fatal("restored image differs from the volume")
	}
	if res := r.run("--quiet", "backup", "create", vol, "-i"); res.Code != 0 || res.Stderr != "" {
		t.Errorf("backup create --quiet: exit %d, stderr %q; want nothing", res.Code, res.Stderr)
	}
}

// On a real terminal (tmux) the bar clears itself and the summary line stays.
func TestProgressSummaryTerminal(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		testutil.Skip(t, "tmux not installed (apt-get install tmux)")
	}
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 6*mib, 52, testutil.Mixed)
	script := filepath.Join(dir, "run.sh")
	done := filepath.Join(dir, "done")
	body := "#!/bin/sh\nexport CAIRN_REPO=" + r.Dir + "\n" + cairnBin + " backup create " + vol + " >/dev/null\necho exit=$? > " + done + ".tmp\nmv " + done + ".tmp " + done + "\nsleep 60\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "tmux.sock")
	session := "cairn-progress"
	if out, err := exec.Command(tmux, "-S", sock, "new-session", "-d", "-s", session, "-x", "160", "-y", "40", script).CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command(tmux, "-S", sock, "kill-server").Run() })
	deadline := time.Now().Add(cairnCommandTimeout)
	for {
		if b, err := os.ReadFile(done); err == nil {
			if strings.TrimSpace(string(b)) != "exit=0" {
				t.Fatalf("backup create on a terminal: %s", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("backup create on a terminal did not finish")
		}
		time.Sleep(100 * time.Millisecond)
	}
	screen, err := exec.Command(tmux, "-S", sock, "capture-pane", "-p", "-J", "-t", session).Output()
	if err != nil {
		t.Fatalf("tmux capture-pane: %v", err)
	}
	var found bool
	for _, l := range strings.Split(string(screen), "\n") {
		found = found || backupSummaryRE.MatchString(strings.TrimSpace(l))
	}
	if !found {
		t.Fatalf("the terminal shows no summary line:\n%s", screen)
	}
}

// A destructive command on a real terminal (tmux) asks, and only "y" goes ahead: "n" leaves
// the backup, "y" deletes it. No --yes anywhere.
func TestConfirmPromptTerminal(t *testing.T) {
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		testutil.Skip(t, "tmux not installed (apt-get install tmux)")
	}
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 2*mib, 53, testutil.Mixed)
	if res := r.run("--quiet", "backup", "create", vol, "--name", "asked"); res.Code != 0 {
		t.Fatalf("backup create: %s", res.Stderr)
	}
	sock := filepath.Join(dir, "tmux.sock")
	t.Cleanup(func() { _ = exec.Command(tmux, "-S", sock, "kill-server").Run() })
	for i, answer := range []string{"n", "y"} {
		session := fmt.Sprintf("confirm%d", i)
		done := filepath.Join(dir, session+".done")
		script := filepath.Join(dir, session+".sh")
		body := "#!/bin/sh\nexport CAIRN_REPO=" + r.Dir + "\n" + cairnBin + " backup delete asked\necho exit=$? > " + done + ".tmp\nmv " + done + ".tmp " + done + "\nsleep 60\n"
		if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(tmux, "-S", sock, "new-session", "-d", "-s", session, "-x", "160", "-y", "40", script).CombinedOutput(); err != nil {
			t.Fatalf("tmux new-session: %v: %s", err, out)
		}
		screen := func() string {
			out, _ := exec.Command(tmux, "-S", sock, "capture-pane", "-p", "-J", "-t", session).Output()
			return string(out)
		}
		waitFor(t, cairnCommandTimeout, "the delete prompt on the terminal", func() bool { return strings.Contains(screen(), "[y/N]") })
		if s := screen(); !strings.Contains(s, "delete backup") || !strings.Contains(s, "asked") {
			t.Fatalf("the prompt does not say what it deletes:\n%s", s)
		}
		if out, err := exec.Command(tmux, "-S", sock, "send-keys", "-t", session, answer, "Enter").CombinedOutput(); err != nil {
			t.Fatalf("tmux send-keys: %v: %s", err, out)
		}
		var exit string
		waitFor(t, cairnCommandTimeout, "backup delete to end", func() bool {
			b, err := os.ReadFile(done)
			exit = strings.TrimSpace(string(b))
			return err == nil
		})
		listed := strings.Contains(r.mustRun("backup", "list"), "asked")
		switch answer {
		case "n":
			if exit == "exit=0" || !listed {
				t.Fatalf("answered n: %s, backup listed %v:\n%s", exit, listed, screen())
			}
		case "y":
			if exit != "exit=0" || listed {
				t.Fatalf("answered y: %s, backup listed %v:\n%s", exit, listed, screen())
			}
		}
	}
}

package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Qemu runs one of qemu-utils' tools (qemu-img, qemu-io) and fails the test on an error. It
// skips (see Skip) when the tool is missing.
func Qemu(t testing.TB, tool string, args ...string) string {
	t.Helper()
	bin := RequireCommand(t, tool)
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out)
}

// StartQemuNBD exports image read-only with qemu-nbd on a Unix socket in a temp dir and
// returns its NBD URI (nbd+unix:///?socket=...). extra is added to qemu-nbd's arguments (-B
// BITMAP, -f qcow2). The server serves many connections one after the other (--persistent)
// and up to four at once, and is stopped when the test ends. It skips (see Skip) without
// qemu-nbd.
func StartQemuNBD(t testing.TB, image string, extra ...string) string {
	t.Helper()
	bin := RequireCommand(t, "qemu-nbd")
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	args := append([]string{"-r", "--persistent", "--shared=4", "-k", sock}, extra...)
	cmd := exec.Command(bin, append(args, image)...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu-nbd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("qemu-nbd %s exited: %v: %s", strings.Join(args, " "), err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd did not create its socket %s within 10 s: %s", sock, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "nbd+unix:///?socket=" + sock
}

package testutil

import (
	"net"
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

// QemuNBD is a qemu-nbd serving one image read-only on a Unix socket.
type QemuNBD struct {
	t      testing.TB
	sock   string
	image  string
	args   []string
	cmd    *exec.Cmd
	exited chan error
	out    *strings.Builder
}

// StartQemuNBD exports image read-only with qemu-nbd on the Unix socket sock ("" for one in a
// temp dir). extra is added to qemu-nbd's arguments (-B BITMAP, -f qcow2). The server serves
// many connections one after the other (--persistent) and up to four at once, and is stopped
// when the test ends. It skips (see Skip) without qemu-nbd.
func StartQemuNBD(t testing.TB, sock, image string, extra ...string) *QemuNBD {
	t.Helper()
	if sock == "" {
		sock = filepath.Join(t.TempDir(), "nbd.sock")
	}
	q := &QemuNBD{t: t, sock: sock, image: image, args: extra}
	q.Start(extra...)
	t.Cleanup(q.Stop)
	return q
}

// URI is the export's NBD URI (the default export, nameless unless -x was given).
func (q *QemuNBD) URI() string { return "nbd+unix:///?socket=" + q.sock }

// Start starts the server again (after Stop) with these extra arguments, on the same socket.
func (q *QemuNBD) Start(extra ...string) {
	q.t.Helper()
	bin := RequireCommand(q.t, "qemu-nbd")
	os.Remove(q.sock)
	args := append([]string{"-r", "--persistent", "--shared=4", "-k", q.sock}, extra...)
	q.cmd = exec.Command(bin, append(args, q.image)...)
	q.out = &strings.Builder{}
	q.cmd.Stdout, q.cmd.Stderr = q.out, q.out
	if err := q.cmd.Start(); err != nil {
		q.t.Fatalf("start qemu-nbd: %v", err)
	}
	q.exited = make(chan error, 1)
	go func(cmd *exec.Cmd, exited chan error) { exited <- cmd.Wait() }(q.cmd, q.exited)
	// qemu-nbd binds its socket before it listens on it: a file that exists may still refuse a
	// connection, so the server is up only once a connection is accepted.
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("unix", q.sock); err == nil {
			c.Close()
			return
		}
		select {
		case err := <-q.exited:
			q.exited <- err
			q.t.Fatalf("qemu-nbd %s exited: %v: %s", strings.Join(args, " "), err, q.out.String())
		default:
		}
		if time.Now().After(deadline) {
			q.t.Fatalf("qemu-nbd did not accept connections on %s within 10 s: %s", q.sock, q.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the server and waits for it, so the image can be written.
func (q *QemuNBD) Stop() {
	if q.cmd == nil {
		return
	}
	_ = q.cmd.Process.Kill()
	<-q.exited
	q.cmd = nil
}

package gateway_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/blockio/nbd"
	"github.com/cairn-backup/cairn/gateway"
)

// serveNBD serves s's backups with o on a Unix socket until the test ends.
func serveNBD(t *testing.T, s *gateway.Service, o gateway.NBDOptions) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeNBD(ctx, l, o) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return sock
}

// nbdSHA reads an export whole and returns its sha256, or the error of opening it.
func nbdSHA(t *testing.T, sock, export string) ([32]byte, error) {
	t.Helper()
	c, err := nbd.Dial(context.Background(), "nbd+unix:///"+export+"?socket="+sock, nbd.Options{})
	if err != nil {
		return [32]byte{}, err
	}
	defer c.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(c, 0, c.Size())); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil)), nil
}

func fileSHA(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// Exports by id and VOLUME/latest, within a project, and with tokens: each reads as the
// volume was, and what a caller may not see is not found.
func TestNBDExports(t *testing.T) {
	s, dir := newService(t)
	admin, p1 := adminCtx(), as("alice", "p1", false)
	img := image(t, dir, "vm.img", 512<<10)
	if _, err := s.ManageVolume(p1, gateway.ManageRequest{Path: img, Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	full, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	sumFull := fileSHA(t, img)
	if err := os.WriteFile(img, make([]byte, 512<<10), 0o600); err != nil { // all zeros now
		t.Fatal(err)
	}
	inc, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: "vm", Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	sumInc := fileSHA(t, img)
	other := image(t, dir, "db.img", 128<<10)
	if _, err := s.ManageVolume(admin, gateway.ManageRequest{Path: other, Name: "db"}); err != nil {
		t.Fatal(err)
	}
	adminB, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: "db"})
	if err != nil {
		t.Fatal(err)
	}

	all := serveNBD(t, s, gateway.NBDOptions{})
	for export, want := range map[string][32]byte{full.ID: sumFull, inc.ID: sumInc, "vm/latest": sumInc,
		inc.VolumeID + "/latest": sumInc, adminB.ID: fileSHA(t, other), "db/latest": fileSHA(t, other)} {
		if got, err := nbdSHA(t, all, export); err != nil || got != want {
			t.Errorf("export %s: %v, sha256 %x; want %x", export, err, got[:4], want[:4])
		}
	}
	for _, export := range []string{"nope", "nope/latest", ""} {
		if _, err := nbdSHA(t, all, export); err == nil || !strings.Contains(err.Error(), "no such export") {
			t.Errorf("export %q: %v, want no such export", export, err)
		}
	}
	names, err := s.NBDExports(gateway.NBDOptions{}).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{full.ID, inc.ID, adminB.ID, "vm/latest", "db/latest"} {
		if !strings.Contains(" "+strings.Join(names, " ")+" ", " "+want+" ") {
			t.Errorf("list %q lacks %s", names, want)
		}
	}

	// One project only: the admin project's backup is not there.
	p1only := serveNBD(t, s, gateway.NBDOptions{Project: "p1"})
	if _, err := nbdSHA(t, p1only, full.ID); err != nil {
		t.Error(err)
	}
	for _, export := range []string{adminB.ID, "db/latest"} {
		if _, err := nbdSHA(t, p1only, export); err == nil {
			t.Errorf("project p1's server exports %s of the admin project", export)
		}
	}

	// Tokens: TOKEN@NAME, as the API's callers; no listing.
	tokens := map[string]gateway.Caller{"t-alice": {User: "alice", Project: "p1"}, "t-admin": {User: "root", Project: "admin", Admin: true}}
	lookup := func(tok string) (gateway.Caller, bool) { c, ok := tokens[tok]; return c, ok }
	guarded := serveNBD(t, s, gateway.NBDOptions{Tokens: lookup})
	for export, ok := range map[string]bool{"t-alice@" + full.ID: true, "t-alice@vm/latest": true, "t-alice@" + adminB.ID: false,
		"t-admin@" + adminB.ID: true, "t-admin@" + inc.ID: true, full.ID: false, "bad@" + full.ID: false, "@" + full.ID: false} {
		_, err := nbdSHA(t, guarded, export)
		if (err == nil) != ok {
			t.Errorf("with tokens, export %s: %v; want served %v", export, err, ok)
		}
		// The client names what it asked for; what the server says after it must not.
		if _, said, _ := strings.Cut(fmtErr(err), "nbd.sock: "); strings.Contains(said, "t-alice") {
			t.Errorf("a refusal echoes the token: %v", err)
		}
	}
	if _, err := s.NBDExports(gateway.NBDOptions{Tokens: lookup}).List(context.Background()); err == nil {
		t.Error("a server that checks tokens lists its exports")
	}
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Beyond loopback, NBD needs tokens or an explicit project.
func TestCheckNBDListen(t *testing.T) {
	tok := func(string) (gateway.Caller, bool) { return gateway.Caller{}, false }
	for _, tc := range []struct {
		addr string
		o    gateway.NBDOptions
		ok   bool
	}{
		{"127.0.0.1:10809", gateway.NBDOptions{}, true},
		{"[::1]:10809", gateway.NBDOptions{}, true},
		{"localhost:10809", gateway.NBDOptions{}, true},
		{"0.0.0.0:10809", gateway.NBDOptions{}, false},
		{":10809", gateway.NBDOptions{}, false},
		{"192.0.2.1:10809", gateway.NBDOptions{}, false},
		{"0.0.0.0:10809", gateway.NBDOptions{Tokens: tok}, true},
		{"0.0.0.0:10809", gateway.NBDOptions{Project: "p1"}, true},
		{"10809", gateway.NBDOptions{}, false},
	} {
		err := gateway.CheckNBDListen(tc.addr, tc.o)
		if (err == nil) != tc.ok {
			t.Errorf("CheckNBDListen(%q, %+v) = %v, want ok %v", tc.addr, tc.o, err, tc.ok)
		}
	}
}

// A read that reaches the export's end and meets a block that cannot be read fails with EIO,
// whatever the reason's wording: a pack cut short after the local backend opened it makes
// the block's error wrap io.EOF, and the server took that for the end of the volume and sent
// the reply's buffer as data (zeros, or another read's bytes) (found by review).
func TestNBDReadAtTheEndFailsOnAPackCutShort(t *testing.T) {
	s, dir := newService(t)
	const size = onePackSize
	src, b := onePackBackup(t, s, dir, 1)
	packs, err := filepath.Glob(filepath.Join(dir, "repo", "packs", "*", "*"))
	if err != nil || len(packs) != 1 {
		t.Fatalf("packs %q, %v: want one", packs, err)
	}
	sock := serveNBD(t, s, gateway.NBDOptions{})
	c, err := nbd.Dial(context.Background(), "nbd+unix:///"+b.ID+"?socket="+sock, nbd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	head := make([]byte, 64<<10)
	if _, err := c.ReadAt(head, 0); err != nil || !bytes.Equal(head, src[:len(head)]) {
		t.Fatalf("read of the head: %v", err) // the pack is open now
	}
	if err := os.Truncate(packs[0], size/2); err != nil { // damage: the tail's blocks are gone
		t.Fatal(err)
	}
	tail := make([]byte, 64<<10)
	n, err := c.ReadAt(tail, size-int64(len(tail)))
	if err == nil {
		same := bytes.Equal(tail, src[size-len(tail):])
		t.Fatalf("read of %d bytes at the end of an export whose pack was cut short succeeded (%d bytes, as stored: %v)", len(tail), n, same)
	}
}

// A backup being restored is still what it was: exported by id, and the one VOLUME/latest
// names when it is the newest. Before (found by review), only available backups were
// exported, so while the newest backup of a volume was restored VOLUME/latest served the one
// before it: older bytes, with nothing to say so.
func TestNBDExportsABackupBeingRestored(t *testing.T) {
	s, dir := newService(t)
	img := image(t, dir, "vm.img", 256<<10)
	if _, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: img, Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: "vm"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, bytes.Repeat([]byte("newer!!!"), 32<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	newest, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: "vm", Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	want := fileSHA(t, img)
	if _, _, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: newest.ID, To: filepath.Join(dir, "out.img")}); err != nil {
		t.Fatal(err) // accepted: the backup is restoring until its job runs
	}
	sock := serveNBD(t, s, gateway.NBDOptions{})
	for _, export := range []string{"vm/latest", newest.ID} {
		if got, err := nbdSHA(t, sock, export); err != nil || got != want {
			t.Errorf("export %s while the newest backup is restored: %v, sha256 %x; want %x", export, err, got[:4], want[:4])
		}
	}
}

// A server of one project that checks tokens serves that project's backups only: a token
// that sees more (an admin's, another project's member) gets nothing of another project.
func TestNBDExportsOfOneProjectWithTokens(t *testing.T) {
	s, dir := newService(t)
	p1, p2 := as("alice", "p1", false), as("bob", "p2", false)
	var backups []string
	for i, c := range []context.Context{p1, p2} {
		img := image(t, dir, fmt.Sprintf("vm%d.img", i), 128<<10)
		if _, err := s.ManageVolume(c, gateway.ManageRequest{Path: img, Name: "vm"}); err != nil {
			t.Fatal(err)
		}
		b, err := s.CreateBackup(c, gateway.BackupRequest{Volume: "vm"})
		if err != nil {
			t.Fatal(err)
		}
		backups = append(backups, b.ID)
	}
	tokens := map[string]gateway.Caller{"t-bob": {User: "bob", Project: "p2"}, "t-admin": {User: "root", Project: "admin", Admin: true}}
	lookup := func(tok string) (gateway.Caller, bool) { c, ok := tokens[tok]; return c, ok }
	sock := serveNBD(t, s, gateway.NBDOptions{Project: "p1", Tokens: lookup})
	for export, ok := range map[string]bool{"t-admin@" + backups[0]: true, "t-admin@" + backups[1]: false,
		"t-bob@" + backups[1]: false, "t-bob@vm/latest": false, "t-admin@vm/latest": true} {
		if _, err := nbdSHA(t, sock, export); (err == nil) != ok {
			t.Errorf("project p1's server with tokens, export %s: %v; want served %v", export, err, ok)
		}
	}
}

// TestNBDExportsTheLatestBackupOfADeletedVolume: a deleted volume's backups stay, and its
// newest is VOLUME_ID/latest (listed too), as the FUSE tree shows it; not to another project.
func TestNBDExportsTheLatestBackupOfADeletedVolume(t *testing.T) {
	s, dir := newService(t)
	p1 := as("alice", "p1", false)
	img := image(t, dir, "vm.img", 256<<10)
	v, err := s.ManageVolume(p1, gateway.ManageRequest{Path: img, Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: "vm"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(img, bytes.Repeat([]byte("newer "), 256<<10/6), 0o600); err != nil {
		t.Fatal(err)
	}
	want := fileSHA(t, img)
	if _, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: "vm", Incremental: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteVolume(p1, "vm", true); err != nil {
		t.Fatal(err)
	}
	sock := serveNBD(t, s, gateway.NBDOptions{})
	if got, err := nbdSHA(t, sock, v.ID+"/latest"); err != nil || got != want {
		t.Fatalf("export %s/latest of the deleted volume: %v, sha256 %x; want %x", v.ID, err, got[:4], want[:4])
	}
	names, err := s.NBDExports(gateway.NBDOptions{}).List(context.Background())
	if err != nil || !strings.Contains(strings.Join(names, " "), v.ID+"/latest") {
		t.Errorf("the list %v (%v) does not name %s/latest", names, err, v.ID)
	}
	other := serveNBD(t, s, gateway.NBDOptions{Project: "p2"})
	if _, err := nbdSHA(t, other, v.ID+"/latest"); err == nil || !strings.Contains(err.Error(), "no such export") {
		t.Errorf("another project's server exports the deleted volume: %v", err)
	}
}

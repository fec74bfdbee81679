package tests

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
	"golang.org/x/sys/unix"
)

// nbdServer is a 'cairn nbd' process.
type nbdServer struct {
	addr   string
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}
}

// startNBD runs 'cairn nbd --listen' on a free port and waits until it accepts connections;
// when the test ends it stops it with SIGTERM and checks it exits 0.
func startNBD(t *testing.T, r *cairnRepo, args ...string) *nbdServer {
	t.Helper()
	s := &nbdServer{addr: freePort(t), stderr: &lockedBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(cairnBin, append([]string{"nbd", "--listen", s.addr}, args...)...)
	s.cmd.Env = cairnEnv(r.Env)
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
			if code := s.cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("cairn nbd exited %d after SIGTERM: %s", code, s.stderr)
			}
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
			t.Errorf("cairn nbd did not stop within 30s of SIGTERM: %s", s.stderr)
		}
	})
	waitNBD(t, s.addr, s.done, s.stderr)
	return s
}

// waitNBD waits until addr accepts connections, failing if exited closes first.
func waitNBD(t *testing.T, addr string, exited <-chan struct{}, log fmt.Stringer) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("the NBD server exited before listening: %s", log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s after 30s: %s", addr, log)
		}
	}
}

func (s *nbdServer) uri(export string) string { return "nbd://" + s.addr + "/" + export }

// qemuConvert copies an NBD export to a raw file with qemu-img and returns its sha256.
func qemuConvert(t *testing.T, uri, out string) string {
	t.Helper()
	testutil.Qemu(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri, out)
	return testutil.SHA256File(t, out)
}

// fileHoles returns the holes of a file by SEEK_DATA/SEEK_HOLE, as [start, end) pairs.
func fileHoles(t *testing.T, path string) [][2]int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	var holes [][2]int64
	for off := int64(0); off < fi.Size(); {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err == syscall.ENXIO {
			data = fi.Size()
		} else if err != nil {
			t.Fatal(err)
		}
		if data > off {
			holes = append(holes, [2]int64{off, data})
		}
		if data >= fi.Size() {
			break
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		off = hole
	}
	return holes
}

// qemuMap is 'qemu-img map --output=json' of an export.
type qemuMap []struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	Data   bool  `json:"data"`
	Zero   bool  `json:"zero"`
}

// covers reports whether the map calls all of [a, b) unallocated zeros.
func (m qemuMap) holeCovers(a, b int64) bool {
	for _, e := range m {
		if e.Start < b && a < e.Start+e.Length && (e.Data || !e.Zero) {
			return false
		}
	}
	return true
}

// TestNBDExport: 'cairn nbd' serves every backup of a volume (full and incremental, with
// holes) so that qemu-img convert equals the restore, qemu-img map shows the holes, eight
// readers at once read byte-exact, writes are refused, a qcow2 overlay on an export reads
// the backup, VOLUME/latest names the newest, and unknown names fail cleanly.
func TestNBDExport(t *testing.T) {
	testutil.RequireCommand(t, "qemu-img")
	testutil.RequireCommand(t, "qemu-io")
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	img := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, img, 40*mib, 81, testutil.Mixed) // more than one 32 MiB request
	holes := fileHoles(t, img)
	if len(holes) == 0 {
		t.Fatal("the test image has no holes")
	}
	r.mustRun("volume", "manage", img, "--name", "vm")
	full := r.createBackup("vm")
	sums := map[string]string{full.ID: testutil.SHA256File(t, img)}
	testutil.ScatterWrites(t, img, 82, 0.05, 4<<10, 256<<10)
	inc := r.createBackup("vm", "--incremental")
	if !inc.IsIncremental {
		t.Fatalf("second backup %+v is not incremental", inc)
	}
	sums[inc.ID] = testutil.SHA256File(t, img)

	for id, want := range sums { // before the server: it holds the index, as a mount does
		restored := filepath.Join(dir, "restore-"+id+".raw")
		r.restoreTo(id, restored)
		if got := testutil.SHA256File(t, restored); got != want {
			t.Fatalf("restore of %s: sha256 %s, want %s", id, got, want)
		}
	}
	s := startNBD(t, r)
	for id, want := range sums {
		if got := qemuConvert(t, s.uri(id), filepath.Join(dir, "nbd-"+id+".raw")); got != want {
			t.Errorf("qemu-img convert of export %s: sha256 %s, want the restore's %s", id, got, want)
		}
	}
	if got := qemuConvert(t, s.uri("vm/latest"), filepath.Join(dir, "latest.raw")); got != sums[inc.ID] {
		t.Errorf("vm/latest: sha256 %s, want the incremental's %s", got, sums[inc.ID])
	}

	// The source's holes are holes of the export, as qemu-img map sees them.
	var m qemuMap
	if err := json.Unmarshal([]byte(testutil.Qemu(t, "qemu-img", "map", "--output=json", "-f", "raw", s.uri(full.ID))), &m); err != nil {
		t.Fatal(err)
	}
	const block = 16 << 10 // a hole shows where it covers whole blocks of the backup
	checked := 0
	for _, h := range holes {
		a, b := (h[0]+block-1)/block*block, h[1]/block*block
		if a >= b {
			continue
		}
		checked++
		if !m.holeCovers(a, b) {
			t.Errorf("qemu-img map: [%d, %d) is a hole of the source but not unallocated zeros: %+v", a, b, m)
		}
	}
	if checked == 0 {
		t.Fatalf("the source's holes %v hold no whole block", holes)
	}

	// Eight readers at once.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := qemuConvert(t, s.uri(inc.ID), filepath.Join(dir, fmt.Sprintf("c%d.raw", i))); got != sums[inc.ID] {
				t.Errorf("concurrent reader %d: sha256 %s, want %s", i, got, sums[inc.ID])
			}
		}()
	}
	wg.Wait()

	// Writes are refused.
	out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write 0 4k", s.uri(full.ID)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("qemu-io write to an export: %v: %s; want it refused", err, out)
	}

	// A qcow2 overlay over an export: reads give the backup, writes stay in the overlay.
	overlay := filepath.Join(dir, "overlay.qcow2")
	testutil.Qemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", s.uri(full.ID), "-F", "raw", overlay)
	if got := qemuConvertFmt(t, "qcow2", overlay, filepath.Join(dir, "overlay.raw")); got != sums[full.ID] {
		t.Errorf("qcow2 overlay on export %s: sha256 %s, want %s", full.ID, got, sums[full.ID])
	}
	testutil.Qemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 64k", overlay)
	if got := qemuConvert(t, s.uri(full.ID), filepath.Join(dir, "after-overlay.raw")); got != sums[full.ID] {
		t.Errorf("the export changed after a write to its overlay: sha256 %s", got)
	}

	// Unknown exports fail with a message that says what to do.
	out, err = exec.Command("qemu-img", "info", s.uri("no-such-backup")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no available backup no-such-backup") {
		t.Errorf("qemu-img info of an unknown export: %v: %s", err, out)
	}
	out, err = exec.Command("qemu-img", "info", s.uri("nope/latest")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no volume nope with an available backup") {
		t.Errorf("qemu-img info of an unknown volume's latest: %v: %s", err, out)
	}

	// NBD_OPT_LIST names every backup and the volume's latest.
	if qnbd, err := exec.LookPath("qemu-nbd"); err == nil {
		host, port, _ := net.SplitHostPort(s.addr)
		out, err := exec.Command(qnbd, "--list", "-b", host, "-p", port).CombinedOutput()
		for _, name := range []string{full.ID, inc.ID, "vm/latest"} {
			if err != nil || !strings.Contains(string(out), "export: '"+name+"'\n") {
				t.Errorf("qemu-nbd --list lacks %s: %v: %s", name, err, out)
			}
		}
	}
}

// qemuConvertFmt is qemuConvert of an image in another format.
func qemuConvertFmt(t *testing.T, format, in, out string) string {
	t.Helper()
	testutil.Qemu(t, "qemu-img", "convert", "-f", format, "-O", "raw", in, out)
	return testutil.SHA256File(t, out)
}

// TestNBDRefusesUnguardedAddress: beyond loopback 'cairn nbd' needs tokens or a project, and
// with tokens an export is TOKEN@NAME.
func TestNBDRefusesUnguardedAddress(t *testing.T) {
	testutil.RequireCommand(t, "qemu-img")
	r := newCairnRepo(t, nil)
	line := r.mustFail([]int{2}, "nbd", "--listen", "0.0.0.0:1")
	if !strings.Contains(line, "beyond loopback") || !strings.Contains(line, "--tokens") {
		t.Errorf("unguarded address: %s", line)
	}
	line = r.mustFail([]int{2}, "serve", "--nbd", "0.0.0.0:1", "--auth", "noauth")
	if !strings.Contains(line, "beyond loopback") {
		t.Errorf("serve --nbd unguarded: %s", line)
	}

	dir := t.TempDir()
	img := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, img, 4*mib, 83, testutil.Mixed)
	r.mustRun("volume", "manage", img, "--name", "vm")
	b := r.createBackup("vm")
	tokens := filepath.Join(dir, "tokens")
	writeFile(t, tokens, "tok-admin root admin admin\ntok-bob bob p2 member\n")
	s := startNBD(t, r, "--tokens", tokens)
	if got := qemuConvert(t, s.uri("tok-admin@"+b.ID), filepath.Join(dir, "a.raw")); got != testutil.SHA256File(t, img) {
		t.Errorf("TOKEN@ID: sha256 %s", got)
	}
	for _, export := range []string{b.ID, "tok-bob@" + b.ID, "wrong@vm/latest"} {
		if out, err := exec.Command("qemu-img", "info", s.uri(export)).CombinedOutput(); err == nil {
			t.Errorf("export %s was served with tokens on: %s", export, out)
		}
	}
}

// TestGatewayNBD: 'cairn serve --nbd' serves backups made through the gateway, the newest as
// VOLUME/latest.
func TestGatewayNBD(t *testing.T) {
	testutil.RequireCommand(t, "qemu-img")
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	img := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, img, 8*mib, 84, testutil.Mixed)
	r.mustRun("volume", "manage", img, "--name", "vm")
	addr := freePort(t)
	gw := startGateway(t, r, "--nbd", addr)
	waitNBD(t, addr, nil, &strings.Builder{})
	for i := range 2 {
		if i > 0 {
			testutil.ScatterWrites(t, img, 85, 0.05, 4<<10, 64<<10)
		}
		want := testutil.SHA256File(t, img)
		var b backupJSON
		r.mustJSON(&b, "--quiet", "backup", "create", "vm", "--wait")
		for _, export := range []string{b.ID, "vm/latest"} {
			if got := qemuConvert(t, "nbd://"+addr+"/"+export, filepath.Join(dir, fmt.Sprintf("%d.raw", i))); got != want {
				t.Errorf("backup %d through serve --nbd as %s: sha256 %s, want %s", i, export, got, want)
			}
		}
	}
	gw.stop()
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("the gateway's NBD listener outlived it")
	}
}

// TestNBDFollowsAnotherProcess: 'cairn nbd' holds its index for as long as it runs, so what
// another process with its own index (another gateway or host on the repository) stores
// must reach it through the repository: a backup stored there is exported by id and as its
// volume's latest at once, and one deleted there is refused.
func TestNBDFollowsAnotherProcess(t *testing.T) {
	testutil.RequireCommand(t, "qemu-img")
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	img := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, img, 2*mib, 91, testutil.Mixed)
	r.mustRun("volume", "manage", img, "--name", "vm")
	first := r.createBackup("vm")
	s := startNBD(t, r)
	if got, want := qemuConvert(t, s.uri("vm/latest"), filepath.Join(dir, "first.raw")), testutil.SHA256File(t, img); got != want {
		t.Fatalf("vm/latest: sha256 %s, want %s", got, want)
	}

	other := r.elsewhere()
	testutil.ScatterWrites(t, img, 92, 0.2, 4<<10, 64<<10)
	want := testutil.SHA256File(t, img)
	second := other.createBackup(img)
	other.mustRun("backup", "delete", "--yes", first.ID)
	if got := qemuConvert(t, s.uri(second.ID), filepath.Join(dir, "second.raw")); got != want {
		t.Errorf("export %s stored by another process: sha256 %s, want the source's %s", second.ID, got, want)
	}
	if got := qemuConvert(t, s.uri("vm/latest"), filepath.Join(dir, "latest.raw")); got != want {
		t.Errorf("vm/latest after another process stored a newer backup: sha256 %s, want the source's %s", got, want)
	}
	if out, err := exec.Command("qemu-img", "info", s.uri(first.ID)).CombinedOutput(); err == nil {
		t.Errorf("export %s deleted by another process: qemu-img info succeeded: %s", first.ID, out)
	}
}

// TestNBDServesCommands: while a plain 'cairn nbd' runs, other commands on the repository
// work (the server owns the index and serves them on the socket, as a mount does), and a
// backup made beside it is served at once. Before (found by hand, 2026-12-07), each waited its
// --lock-wait for the index and failed, told to reach the holder through a socket it lacked.
func TestNBDServesCommands(t *testing.T) {
	testutil.RequireCommand(t, "qemu-img")
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	img := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, img, 2*mib, 93, testutil.Mixed)
	r.mustRun("volume", "manage", img, "--name", "vm")
	first := r.createBackup("vm")
	s := startNBD(t, r)
	testutil.ScatterWrites(t, img, 94, 0.2, 4<<10, 64<<10)
	want := testutil.SHA256File(t, img)
	start := time.Now()
	second := r.createBackup("vm", "--incremental", "--name", "beside-nbd")
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("the backup beside the NBD server took %v: it waited for the index", took)
	}
	if !second.IsIncremental || second.ParentID != first.ID {
		t.Fatalf("backup beside the NBD server: %+v, want an incremental of %s", second, first.ID)
	}
	for _, export := range []string{second.ID, "vm/latest"} {
		if got := qemuConvert(t, s.uri(export), filepath.Join(dir, strings.ReplaceAll(export, "/", "-")+".raw")); got != want {
			t.Errorf("export %s of the backup made beside the server: sha256 %s, want the source's %s", export, got, want)
		}
	}
	r.mustRun("backup", "delete", "--yes", second.ID)
	if out, err := exec.Command("qemu-img", "info", s.uri(second.ID)).CombinedOutput(); err == nil {
		t.Errorf("export %s deleted beside the server: qemu-img info succeeded: %s", second.ID, out)
	}
}

// TestNBDListFollowsAnotherProcess: NBD_OPT_LIST of 'cairn nbd' names a backup another
// process stored since the server started, and no longer one it deleted.
func TestNBDListFollowsAnotherProcess(t *testing.T) {
	testutil.RequireCommand(t, "qemu-nbd")
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	img := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, img, 2*mib, 93, testutil.Mixed)
	first := r.createBackup(img)
	s := startNBD(t, r)
	other := r.elsewhere()
	testutil.ScatterWrites(t, img, 94, 0.2, 4<<10, 64<<10)
	second := other.createBackup(img)
	other.mustRun("backup", "delete", "--yes", first.ID)
	host, port, _ := net.SplitHostPort(s.addr)
	out, err := exec.Command("qemu-nbd", "--list", "-b", host, "-p", port).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-nbd --list: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "export: '"+second.ID+"'\n") {
		t.Errorf("qemu-nbd --list lacks %s, stored by another process:\n%s", second.ID, out)
	}
	if strings.Contains(string(out), "export: '"+first.ID+"'\n") {
		t.Errorf("qemu-nbd --list names %s, deleted by another process:\n%s", first.ID, out)
	}
}

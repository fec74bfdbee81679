package gateway_test

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
)

// Gateway a runs a backup and a restore and shares its services, all under the name of a real
// process of this host (a child the test starts). While that process runs, b shows them as a
// live gateway's (creating, restoring-backup, up), well within the ages that would make them
// stale; once it is killed, b's next catch-up shows them as a crash left them: the backup
// interrupted, the restore's volume in error, the services down, naming the process. Before, b
// judged by age alone and showed them running for ten minutes (one for the services).
func TestGatewayProcessGoneShowsAtOnceOnTheSameHost(t *testing.T) {
	dir := t.TempDir()
	a, b, _, bk := backedUpOnA(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	gateway.SetVolumeRecordGraceForTest(t, 0)
	child := exec.Command("sleep", "600")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = child.Wait(); close(exited) }()
	t.Cleanup(func() { _ = child.Process.Kill(); <-exited })
	gateway.SetProcessForTest(a, child.Process.Pid)

	running, _, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "two.img", 64<<10)})
	if err != nil {
		t.Fatal(err)
	}
	res, _, err := a.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, Name: "restored"})
	if err != nil {
		t.Fatal(err)
	}
	gateway.ShareServicesForTest(a)
	show := func() (backup *index.Backup, volume *index.Volume, services []gateway.ServiceStatus) {
		t.Helper()
		catchUp(t, b)
		backup = listed(t, b, running.ID)
		volume, err := b.VolumeByID(adminCtx(), res.VolumeID)
		if err != nil {
			t.Fatal(err)
		}
		return backup, volume, peerRows(t, b)
	}
	l, v, rows := show()
	if l == nil || l.Status != index.BackupCreating || v.Status != index.VolumeRestoringBackup || len(rows) != 3 {
		t.Fatalf("b while a's process runs: backup %+v, volume %s, %d services of a; want creating, restoring-backup, 3", l, v.Status, len(rows))
	}
	for _, st := range rows {
		if st.State != "up" {
			t.Fatalf("b while a's process runs: a's %s %+v, want up", st.Binary, st)
		}
	}

	_ = child.Process.Kill()
	<-exited
	pid := child.Process.Pid
	l, v, rows = show()
	if l == nil || l.Status != index.BackupError || !strings.Contains(l.FailReason, "is gone") {
		t.Fatalf("b after a's process is gone: backup %+v, want error, interrupted", l)
	}
	if v.Status != index.VolumeError {
		t.Fatalf("b after a's process is gone: the restore's volume %s, want error, as the crash left it", v.Status)
	}
	if len(rows) != 3 {
		t.Fatalf("b after a's process is gone lists %d of its services, want 3", len(rows))
	}
	for _, st := range rows {
		if st.State != "down" || !strings.Contains(st.DisabledReason, "process "+strconv.Itoa(pid)+" is gone") {
			t.Fatalf("b after a's process is gone: a's %s %+v, want down, process %d gone", st.Binary, st, pid)
		}
	}
}

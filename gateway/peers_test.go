package gateway_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
)

// peerRows returns the rows of s's service list that are not its own.
func peerRows(t *testing.T, s *gateway.Service) []gateway.ServiceStatus {
	t.Helper()
	host, _ := os.Hostname()
	var out []gateway.ServiceStatus
	for _, st := range s.Services(context.Background()) {
		if st.Host != host {
			out = append(out, st)
		}
	}
	return out
}

// A gateway's services show on every gateway on the repository: up while it reports, down
// ("no heartbeat since") once it stops reporting without stopping cleanly, which `cairn
// status` and cairn_attention then name; a gateway stopped cleanly is gone from the list.
// Before, each gateway listed its own services only, and a dead gateway was seen by no one.
func TestGatewayThatDiesShowsDownOnTheOthers(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	host, _ := os.Hostname()
	gateway.ShareServicesForTest(a)
	rows := peerRows(t, b)
	if len(rows) != 3 {
		t.Fatalf("b lists %d services of a, want its three: %+v", len(rows), rows)
	}
	for _, st := range rows {
		if st.State != "up" || !strings.HasPrefix(st.Host, host+"@") {
			t.Fatalf("b lists a's %s as %+v, want up on %s@ID", st.Binary, st, host)
		}
	}

	gateway.SetPeerTimesForTest(t, time.Hour, 50*time.Millisecond) // a stops reporting
	time.Sleep(100 * time.Millisecond)
	for _, st := range peerRows(t, b) {
		if st.State != "down" || !strings.Contains(st.DisabledReason, "no heartbeat since") {
			t.Fatalf("b lists a's %s, which stopped reporting, as %+v, want down", st.Binary, st)
		}
	}
	ov, err := b.Overview(adminCtx(), gateway.OverviewOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	down := 0
	for _, c := range ov.Concerns {
		if c.Kind == gateway.ConcernServiceDown && strings.Contains(c.Message, host+"@") {
			down++
		}
	}
	if down != 3 {
		t.Fatalf("b's overview names %d of a's services down, want 3: %+v", down, ov.Concerns)
	}

	// a runs its heartbeat, which reports again, then stops cleanly: gone from b's list.
	gateway.SetPeerTimesForTest(t, time.Millisecond, 500*time.Millisecond)
	time.Sleep(600 * time.Millisecond) // what a stored before is down by now
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.RunHeartbeats(ctx); close(done) }()
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if rows := peerRows(t, b); len(rows) == 3 && rows[0].State == "up" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b lists a, whose heartbeat runs again, as %+v", peerRows(t, b))
		}
	}
	stop()
	<-done
	time.Sleep(10 * time.Millisecond) // b reads the others again at most every two shares
	if rows := peerRows(t, b); len(rows) != 0 {
		t.Fatalf("b lists a after it stopped cleanly: %+v", rows)
	}
}

// A gateway whose clock runs 15 minutes ahead of the store's judges the others' objects by the
// store's clock, measured on the write of its own services object: another gateway's services
// up, the backup it is creating creating, its restore restoring. Before, all three showed as
// if that gateway had died: services down, the backup interrupted, the restore as its records
// stand.
func TestAgesAreJudgedByTheStoresClock(t *testing.T) {
	dir := t.TempDir()
	a, b, _, bk := backedUpOnA(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	gateway.SetClockSkewForTest(t, 15*time.Minute)
	gateway.ShareServicesForTest(a)
	gateway.ShareServicesForTest(b)
	rows := peerRows(t, b)
	if len(rows) != 3 {
		t.Fatalf("b lists %d services of a, want its three: %+v", len(rows), rows)
	}
	for _, st := range rows {
		if st.State != "up" {
			t.Fatalf("b, 15 minutes ahead of the store, lists a's %s as %+v, want up", st.Binary, st)
		}
	}
	creating, _, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: bk.VolumePath})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, Name: "restored"}); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	if got, err := b.Backup(adminCtx(), creating.ID); err != nil || got.Status != index.BackupCreating {
		t.Fatalf("b shows the backup a is creating as %+v %v, want creating", got, err)
	}
	if got, err := b.Backup(adminCtx(), bk.ID); err != nil || got.Status != index.BackupRestoring {
		t.Fatalf("b shows the backup a is restoring as %+v %v, want restoring", got, err)
	}
}

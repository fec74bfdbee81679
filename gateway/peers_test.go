package gateway_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
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

package gateway_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
)

// A policy's calendar without a time zone is read in the server's local zone, as systemd
// reads a timer's and as the keep rules make their buckets; one that names a zone keeps it.
// The gateway's clock is UTC, so without the rule '02:00' ran at 02:00 UTC. Not parallel: it
// sets time.Local (the zone is never UTC, whatever the host's).
func TestPolicyScheduleInTheServersZone(t *testing.T) {
	loc, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	old := time.Local
	time.Local = loc
	t.Cleanup(func() { time.Local = old }) // after the service's Close, registered below
	s, dir := newService(t)
	ctx := adminCtx()
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm.img", 64<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		schedule string
		zone     *time.Location
	}{
		{"02:00", loc},
		{"Mon..Fri 02:00", loc},
		{"02:00 UTC", time.UTC},
	} {
		name := fmt.Sprintf("p%d", i)
		if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: name, Schedule: tc.schedule,
			Keep: gateway.KeepRules{Last: 2}}, VolumeRefs: []string{"vm"}}); err != nil {
			t.Fatal(err)
		}
		st, err := s.PolicyStatus(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if at := st.NextRun.In(tc.zone); at.Hour() != 2 || at.Minute() != 0 {
			t.Errorf("next run of %q is %s, %s: want 02:00 in %s", tc.schedule, st.NextRun.Format(time.RFC3339),
				at.Format("15:04 MST"), tc.zone)
		}
	}
}

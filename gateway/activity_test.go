package gateway_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
)

// A backup's job is listed while it runs and afterwards with its result, progress and log;
// another project's caller does not see it; checks and gcs are kept as the last results and
// exported as metrics.
func TestJobsAndMaintenanceHistory(t *testing.T) {
	s, dir := newService(t)
	s.StartWorkers(1)
	t.Cleanup(func() { _ = s.StopWorkers(context.Background()) })
	p1 := as("alice", "p1", false)
	v := image(t, dir, "vol.img", 3<<20)
	if _, err := s.ManageVolume(as("admin", "p1", true), gateway.ManageRequest{Path: v, Name: "vol"}); err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: "vol"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WaitBackup(p1, b.ID); err != nil {
		t.Fatal(err)
	}
	var j *gateway.JobInfo
	deadline := time.Now().Add(10 * time.Second)
	for {
		j, err = s.Job(p1, "backup/"+b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != gateway.JobRunning && j.State != gateway.JobQueued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job still %s", j.State)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if j.State != gateway.JobSucceeded || j.Done != 3<<20 || j.Total != 3<<20 || j.VolumeName != "vol" || j.Percent() != 100 {
		t.Fatalf("job %+v", j)
	}
	if log := strings.Join(j.Log, "\n"); !strings.Contains(log, "accepted: full backup of volume vol") || !strings.Contains(log, "available:") {
		t.Fatalf("job log:\n%s", log)
	}
	if _, recent, _ := s.Jobs(as("bob", "p2", false)); len(recent) != 0 {
		t.Fatalf("p2 sees p1's jobs: %+v", recent)
	}
	if _, err := s.Job(as("bob", "p2", false), "backup/"+b.ID); err == nil {
		t.Fatal("p2 found p1's job")
	}

	if _, err := s.Maintenance(p1); err == nil {
		t.Fatal("a member read the maintenance record")
	}
	admin := adminCtx()
	id, err := s.StartCheck(admin, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	for {
		cj, err := s.Job(admin, id)
		if err != nil {
			t.Fatal(err)
		}
		if cj.State == gateway.JobSucceeded {
			break
		}
		if cj.State == gateway.JobFailed || time.Now().After(deadline) {
			t.Fatalf("check job %+v", cj)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := s.GC(admin, repo.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	m, err := s.Maintenance(admin)
	if err != nil {
		t.Fatal(err)
	}
	if m.LastCheck == nil || !m.LastCheck.OK() || !m.LastCheck.ReadData || m.LastGC == nil || m.LastGC.Error != "" || len(m.Samples) < 2 {
		t.Fatalf("maintenance %+v", m)
	}
	if got := m.Samples[len(m.Samples)-1].StoredBytes; got <= 0 {
		t.Fatalf("stored bytes sample %d", got)
	}
	mfs, err := s.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			got[mf.GetName()] = mt.GetGauge().GetValue()
		}
	}
	for name, want := range map[string]float64{"cairn_check_last_problems": 0, "cairn_check_last_success": 1, "cairn_gc_last_success": 1} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (exported: %v), want %v", name, v, ok, want)
		}
	}
	if got["cairn_gc_last_run_timestamp_seconds"] < float64(time.Now().Add(-time.Hour).Unix()) || got["cairn_repository_stored_bytes"] <= 0 {
		t.Errorf("gc timestamp %v, stored bytes %v", got["cairn_gc_last_run_timestamp_seconds"], got["cairn_repository_stored_bytes"])
	}
}

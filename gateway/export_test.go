package gateway

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// SetFullCatchUpEveryForTest sets how often CatchUp runs the full catch-up, until the test
// ends.
func SetFullCatchUpEveryForTest(t interface{ Cleanup(func()) }, d time.Duration) {
	old := fullCatchUpEvery
	fullCatchUpEvery = d
	t.Cleanup(func() { fullCatchUpEvery = old })
}

// LeaveRunningPolicyForTest records policy name's run as a gateway killed during it leaves
// it: started at, still running.
func LeaveRunningPolicyForTest(s *Service, name string, at time.Time) {
	p, err := s.storedPolicy(context.Background(), name)
	if err != nil {
		panic(err)
	}
	s.storeRun(context.Background(), p, PolicyRun{LastRun: at, LastResult: RunRunning})
}

// WrapBackendAtOpenForTest makes every Open until the test ends wrap the backend it opens.
func WrapBackendAtOpenForTest(t testing.TB, wrap func(backend.Backend) backend.Backend) {
	wrapOpened = wrap
	t.Cleanup(func() { wrapOpened = nil })
}

// WrapBackendForTest reopens s's repository over wrap(its backend), keeping its index: a
// gateway whose backend misbehaves (faulty.New) for the rest of the test.
func WrapBackendForTest(t testing.TB, s *Service, wrap func(backend.Backend) backend.Backend) {
	t.Helper()
	ctx := context.Background()
	be := wrap(s.be)
	u, err := repo.Unlock(ctx, be, s.cfg.Password)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.OpenUnlocked(ctx, be, s.idx, u, repo.Options{Lock: s.cfg.Lock})
	if err != nil {
		t.Fatal(err)
	}
	s.repo = r
}

// BeforePutForTest wraps be so that before runs ahead of every Put, with the key.
func BeforePutForTest(be backend.Backend, before func(key string)) backend.Backend {
	return &beforePut{Backend: be, before: before}
}

// SetPolicyReloadForTest sets how often the scheduler reads the policies and their state
// again, until the test ends.
func SetPolicyReloadForTest(t interface{ Cleanup(func()) }, d time.Duration) {
	old := policyReload
	policyReload = d
	t.Cleanup(func() { policyReload = old })
}

// HoldPolicyClaimForTest takes policy name's claim through s and records its run started, as
// a gateway running it does; release drops the claim and leaves the run recorded running, as
// a gateway killed during the run leaves it once its claim is broken.
func HoldPolicyClaimForTest(t testing.TB, s *Service, name string) (release func()) {
	t.Helper()
	lk, _, err := s.claim(context.Background(), name, false)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.storedPolicy(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	s.storeRun(context.Background(), p, PolicyRun{LastRun: now(), LastResult: RunRunning})
	t.Cleanup(lk.Unlock)
	return lk.Unlock
}

// SetVolumeRecordGraceForTest sets how recently made a volume must be for the catch-up to
// leave it when its record is missing, until the test ends.
func SetVolumeRecordGraceForTest(t interface{ Cleanup(func()) }, d time.Duration) {
	old := volumeRecordGrace
	volumeRecordGrace = d
	t.Cleanup(func() { volumeRecordGrace = old })
}

// CopyBaseForTest asks dst whether a copy read from src may be built on dst's copy of the
// source backup parent, as CopyBackup does when nothing is said to have changed.
func CopyBaseForTest(dst *Service, parent *index.Backup, src repo.Source) (base, fallback string, err error) {
	var o repo.WriteOptions
	m := &repo.Manifest{ID: parent.ID, Size: parent.Size}
	return dst.copyBase(context.Background(), m, src, nil, &o)
}

// ImageSourceForTest is backup id of s as a backup's source.
func ImageSourceForTest(t testing.TB, s *Service, id string) repo.Source {
	t.Helper()
	m, err := s.repo.GetManifest(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return s.repo.Image(m).Source(context.Background())
}

// CopyRecordForTest copies the backup whose record b a caller read earlier, as CopyBackup does
// once it has looked the backup up: what the copy meets when the backup went meanwhile.
func CopyRecordForTest(s *Service, b *index.Backup, dst *Service) (*CopyResult, error) {
	return s.copyBackup(context.Background(), b, dst, CopyOptions{})
}

// RecordRestoreForTest puts outcome into backup id's manifest as the end of a restore on s
// does (recordRestore), and reports whether the manifest now holds it or a newer one.
func RecordRestoreForTest(s *Service, id string, outcome *index.RestoreOutcome) error {
	s.recordRestore(context.Background(), id, outcome)
	m, err := s.repo.GetManifest(context.Background(), id)
	if err != nil {
		return err
	}
	if m.Restored == nil || m.Restored.At.Before(outcome.At) {
		return fmt.Errorf("the manifest's restore outcome %+v, want %+v or a newer one", m.Restored, outcome)
	}
	return nil
}

// RecordVerifyForTest records outcome as the end of a verification of backup id on s does
// (recordVerify).
func RecordVerifyForTest(s *Service, id string, outcome *index.VerifyOutcome) {
	s.recordVerify(context.Background(), id, outcome)
}

// ForgetCopiesForTest removes every record of backup id's copies, from its manifest and the
// index, as a copy made before copies were recorded left it.
func ForgetCopiesForTest(t testing.TB, s *Service, id string) {
	if _, err := s.rewriteManifest(context.Background(), id, func(m *repo.Manifest) { m.Copies = nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.idx.UpdateBackup(id, func(b *index.Backup) error { b.Copies = nil; return nil }); err != nil {
		t.Fatal(err)
	}
}

// RecordMendedForTest runs the full catch-up's look for mended backups over the records all.
func RecordMendedForTest(s *Service, all []*index.Backup) bool {
	return s.recordMended(context.Background(), all)
}

// SetCreatingTimesForTest sets how often a running backup rewrites its creating object and
// looks for a cancel request, and when another gateway shows it interrupted, until the test
// ends.
func SetCreatingTimesForTest(t interface{ Cleanup(func()) }, refresh, stale, look time.Duration) {
	r, s, l := creatingRefresh, creatingStale, cancelLook
	creatingRefresh, creatingStale, cancelLook = refresh, stale, look
	t.Cleanup(func() { creatingRefresh, creatingStale, cancelLook = r, s, l })
}

// SetPeerTimesForTest sets how often a gateway shares its services and when another
// gateway's show down, until the test ends.
func SetPeerTimesForTest(t interface{ Cleanup(func()) }, share, down time.Duration) {
	s, d := peerShareEvery, peerDownAfter
	peerShareEvery, peerDownAfter = share, down
	t.Cleanup(func() { peerShareEvery, peerDownAfter = s, d })
}

// ShareServicesForTest runs one heartbeat of s as cairn serve's, which stores its services in
// the repository.
func ShareServicesForTest(s *Service) {
	s.heartbeat(context.Background(), true)
	s.shareServices(context.Background())
}

// SetProcessForTest makes s name process pid of this host (its start unknown), instead of
// its own, in the objects of its jobs and services.
func SetProcessForTest(s *Service, pid int) {
	p := s.repo.ThisProcess()
	p.PID, p.Start = pid, 0
	s.procForTest.Store(&p)
}

// RestoreCancelledForTest says whether the restore of backup id that s runs was cancelled
// (its job's context ended) and has not yet ended.
func RestoreCancelledForTest(s *Service, id string) bool {
	s.mu.Lock()
	t := s.cancels["restore/"+id]
	s.mu.Unlock()
	if t == nil {
		return false
	}
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// SetClockSkewForTest moves every gateway's clock (now) by d from the store's until the test
// ends: hosts whose clocks are off the store's.
func SetClockSkewForTest(t interface{ Cleanup(func()) }, d time.Duration) {
	old := clockSkewForTest.Swap(int64(d))
	t.Cleanup(func() { clockSkewForTest.Store(old) })
}

// SetAfterLastCancelLookForTest runs fn in each backup's commit after its last look for a
// cancel request and before its manifest is stored, until the test ends.
func SetAfterLastCancelLookForTest(t interface{ Cleanup(func()) }, fn func(id string)) {
	afterLastCancelLookForTest.Store(&fn)
	t.Cleanup(func() { afterLastCancelLookForTest.Store(nil) })
}

// BeforeVolumeForgetForTest makes every forget of a volume call fn under volumeRecMu, before
// the index's delete, until the test ends.
func BeforeVolumeForgetForTest(t interface{ Cleanup(func()) }, fn func(id string)) {
	beforeVolumeForgetForTest = fn
	t.Cleanup(func() { beforeVolumeForgetForTest = nil })
}

// AfterForgetDamagedForTest runs fn right after repair's ForgetDamaged, until the test ends.
func AfterForgetDamagedForTest(t testing.TB, fn func()) {
	afterForgetDamaged = fn
	t.Cleanup(func() { afterForgetDamaged = nil })
}

package gateway_test

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
)

// Two restores of one backup to new volumes through two gateways, before either learned the
// other's volume, both take the default name: the project then has two volumes of one name.
// Each gateway learns the other's (before, it refused to, and answered 404 for its id for
// good), an index made anew holds both, the name names neither until one is renamed, and two
// renames to one name through two gateways are both followed. Each restored volume holds
// the backup, byte for byte.
func TestVolumesOfOneNameThroughTwoGateways(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, bk := backedUpOnA(t, dir)
	gateway.SetVolumeRecordGraceForTest(t, 0)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	ra, err := a.Restore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := b.Restore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID})
	if err != nil {
		t.Fatal(err)
	}
	if ra.VolumeName != rb.VolumeName {
		t.Fatalf("the restores' default names differ: %q and %q", ra.VolumeName, rb.VolumeName)
	}
	want := sha256File(t, bk.VolumePath)
	for _, r := range []*gateway.RestoreResult{ra, rb} {
		if got := sha256File(t, r.Path); got != want {
			t.Fatalf("volume %s restored: sha256 %s, want %s", r.VolumeID, got, want)
		}
	}
	name := ra.VolumeName
	catchUp(t, a)
	catchUp(t, b)
	c := gatewayOn(t, repoDir, dir+"/state-c") // an index made anew from the repository
	both := []string{ra.VolumeID, rb.VolumeID}
	slices.Sort(both)
	for g, s := range map[string]*gateway.Service{"a": a, "b": b, "made anew": c} {
		for _, id := range both {
			if v, err := s.VolumeByID(adminCtx(), id); err != nil || v.Name != name {
				t.Fatalf("gateway %s: volume %s: %+v %v", g, id, v, err)
			}
		}
		_, err := s.ShowVolume(adminCtx(), name)
		if !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(err.Error(), "2 volumes of project") ||
			!strings.Contains(err.Error(), both[0]) || !strings.Contains(err.Error(), both[1]) {
			t.Fatalf("gateway %s: show %s, which two volumes are named: %v", g, name, err)
		}
	}

	// Renamed through b, the name is a's volume's alone, on both.
	ren := func(s *gateway.Service, id, to string) {
		t.Helper()
		if _, err := s.UpdateVolume(adminCtx(), id, gateway.VolumeUpdate{Name: &to}); err != nil {
			t.Fatal(err)
		}
	}
	ren(b, rb.VolumeID, "mine")
	catchUp(t, a)
	for g, s := range map[string]*gateway.Service{"a": a, "b": b} {
		if v, err := s.ShowVolume(adminCtx(), name); err != nil || v.ID != ra.VolumeID {
			t.Fatalf("gateway %s: show %s after the other was renamed: %+v %v", g, name, v, err)
		}
	}
	// Through a, a's own rename to a name b's volume has is refused, as any taken name is.
	if _, err := a.UpdateVolume(adminCtx(), ra.VolumeID, gateway.VolumeUpdate{Name: ptr("mine")}); !errors.Is(err, gateway.ErrExists) {
		t.Fatalf("rename to a name another volume has: %v, want ErrExists", err)
	}
	// Two renames to one name, each through a gateway that has not seen the other: both are
	// taken by both gateways.
	ren(a, ra.VolumeID, "shared")
	ren(b, rb.VolumeID, "shared")
	catchUp(t, a)
	catchUp(t, b)
	for g, s := range map[string]*gateway.Service{"a": a, "b": b} {
		vs, err := s.Index().VolumesByName(gateway.DefaultProject, "shared")
		if err != nil || len(vs) != 2 {
			t.Fatalf("gateway %s: volumes named shared after two renames: %d %v", g, len(vs), err)
		}
	}

	// Deleted through a, b forgets it, and the name is b's volume's.
	if _, err := a.DeleteVolume(adminCtx(), ra.VolumeID, false); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	if _, err := b.Index().Volume(ra.VolumeID); !errors.Is(err, index.ErrNotFound) {
		t.Fatalf("b after a deleted its volume: %v", err)
	}
	if v, err := b.ShowVolume(adminCtx(), "shared"); err != nil || v.ID != rb.VolumeID {
		t.Fatalf("b: show shared after a's was deleted: %+v %v", v, err)
	}
}

// Two gateways that manage one image before either learned the other's volume make two
// volumes at one path. Each gateway learns the other's, as does an index made anew; the path
// then names neither (show, and a restore --to it, which would claim one volume while a backup
// of the other read the image half restored, are refused, naming both ids), while each is
// backed up and restored onto by its id. Once one is unmanaged, the path is the other's.
func TestVolumesOfOnePathThroughTwoGateways(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir := twoGateways(t, dir)
	gateway.SetVolumeRecordGraceForTest(t, 0)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	path := image(t, dir, "vm.img", 64<<10)
	va, err := a.ManageVolume(adminCtx(), gateway.ManageRequest{Path: path, Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	vb, err := b.ManageVolume(adminCtx(), gateway.ManageRequest{Path: path, Name: "vm-b"})
	if err != nil {
		t.Fatal(err)
	}
	catchUp(t, a)
	catchUp(t, b)
	c := gatewayOn(t, repoDir, dir+"/state-c")
	for g, s := range map[string]*gateway.Service{"a": a, "b": b, "made anew": c} {
		for _, id := range []string{va.ID, vb.ID} {
			if v, err := s.VolumeByID(adminCtx(), id); err != nil || v.Path != path {
				t.Fatalf("gateway %s: volume %s: %+v %v", g, id, v, err)
			}
		}
		_, err := s.ShowVolume(adminCtx(), path)
		if !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(err.Error(), "2 volumes are registered at") ||
			!strings.Contains(err.Error(), va.ID) || !strings.Contains(err.Error(), vb.ID) {
			t.Fatalf("gateway %s: show %s, where two volumes are: %v", g, path, err)
		}
	}
	if _, err := a.ManageVolume(adminCtx(), gateway.ManageRequest{Path: path, Name: "third"}); !errors.Is(err, gateway.ErrExists) {
		t.Fatalf("manage a path two volumes have: %v, want ErrExists", err)
	}
	bk, err := b.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: va.ID})
	if err != nil {
		t.Fatal(err)
	}
	want := sha256File(t, path)
	catchUp(t, a)
	_, err = a.Restore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, To: path})
	if !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(err.Error(), "restore onto one of them") {
		t.Fatalf("restore --to a path two volumes have: %v, want it refused", err)
	}
	if err := os.WriteFile(path, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Restore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, Volume: vb.ID}); err != nil {
		t.Fatal(err)
	}
	if got := sha256File(t, path); got != want {
		t.Fatalf("restored onto volume %s: sha256 %s, want %s", vb.ID, got, want)
	}
	if _, err := a.UnmanageVolume(adminCtx(), va.ID); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	if v, err := b.ShowVolume(adminCtx(), path); err != nil || v.ID != vb.ID {
		t.Fatalf("b: show %s after a unmanaged its volume there: %+v %v", path, v, err)
	}
}

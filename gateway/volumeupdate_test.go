package gateway_test

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

func ptr(s string) *string { return &s }

// TestUpdateVolume: a volume's name and description change through UpdateVolume, the name stays
// unique in its project, and only callers who see the volume change it.
func TestUpdateVolume(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	v, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "a.img", 64<<10), Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "b.img", 64<<10), Name: "b"}); err != nil {
		t.Fatal(err)
	}
	bk, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "a"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.UpdateVolume(ctx, "a", gateway.VolumeUpdate{Name: ptr("web"), Description: ptr("the web server")})
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != v.ID || got.Name != "web" || got.Description != "the web server" || got.DescribedAt.IsZero() {
		t.Fatalf("renamed volume: %+v", got)
	}
	if _, err := s.Volume(ctx, "a"); !errors.Is(err, gateway.ErrNotFound) {
		t.Fatalf("the old name still finds the volume: %v", err)
	}
	if found, err := s.Volume(ctx, "web"); err != nil || found.ID != v.ID {
		t.Fatalf("the new name finds %v, %v", found, err)
	}
	// Its backups stay its own, found by its new name.
	if bs, err := s.ListBackups(ctx, gateway.ListFilter{Volume: "web"}); err != nil || len(bs) != 1 || bs[0].ID != bk.ID {
		t.Fatalf("backups of the renamed volume: %v, %v", bs, err)
	}
	// Only the description: the name stays.
	if got, err = s.UpdateVolume(ctx, v.ID, gateway.VolumeUpdate{Description: ptr("")}); err != nil || got.Name != "web" || got.Description != "" {
		t.Fatalf("a change of the description alone: %+v, %v", got, err)
	}
	for _, c := range []struct {
		what string
		ref  string
		u    gateway.VolumeUpdate
		want error
	}{
		{"a name another volume has", "web", gateway.VolumeUpdate{Name: ptr("b")}, gateway.ErrExists},
		{"nothing to change", "web", gateway.VolumeUpdate{}, gateway.ErrInvalid},
		{"a name with a slash", "web", gateway.VolumeUpdate{Name: ptr("x/y")}, gateway.ErrInvalid},
		{"an empty name", "web", gateway.VolumeUpdate{Name: ptr("")}, gateway.ErrInvalid},
		{"a description too long", "web", gateway.VolumeUpdate{Description: ptr(strings.Repeat("d", 256))}, gateway.ErrInvalid},
		{"an unknown volume", "nope", gateway.VolumeUpdate{Name: ptr("x")}, gateway.ErrNotFound},
	} {
		if _, err := s.UpdateVolume(ctx, c.ref, c.u); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.what, err, c.want)
		}
	}
	if _, err := s.UpdateVolume(as("eve", "other", false), v.ID, gateway.VolumeUpdate{Name: ptr("mine")}); !errors.Is(err, gateway.ErrNotFound) {
		t.Fatalf("a member of another project renamed the volume: %v", err)
	}
	if got, err := s.UpdateVolume(as("bob", gateway.DefaultProject, false), v.ID, gateway.VolumeUpdate{Name: ptr("www")}); err != nil || got.Name != "www" {
		t.Fatalf("a member of the volume's project: %+v, %v", got, err)
	}
	if found, err := s.Volume(ctx, "www"); err != nil || found.ID != v.ID {
		t.Fatalf("after the member's rename: %v, %v", found, err)
	}
}

// volumeSettingsObjects lists the update objects of volume id in a local repository.
func volumeSettingsObjects(t *testing.T, repoDir, id string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(repoDir, "meta", "volume-settings"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		name, err := hex.DecodeString(e.Name())
		if err == nil && strings.HasPrefix(string(name), id+"@") {
			out = append(out, string(name))
		}
	}
	return out
}

// TestVolumeRenamedOnOneGatewayIsRenamedOnAnother: a rename through one gateway reaches every
// other at its catch-up, survives another gateway writing the volume's record with the old
// name (its backup before its catch-up), and a new index; of two renames on two gateways the
// later wins everywhere; a forget removes the rename objects.
func TestVolumeRenamedOnOneGatewayIsRenamedOnAnother(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, path, v := managedOnBoth(t, dir)
	ctx := adminCtx()
	if _, err := a.UpdateVolume(ctx, "vm", gateway.VolumeUpdate{Name: ptr("db"), Description: ptr("the database")}); err != nil {
		t.Fatal(err)
	}
	// b has not caught up: its backup of the volume writes the volume's record with the old
	// name over the renamed one.
	bk, err := b.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if restoreSHA(t, b, ctx, bk.ID) != sha256File(t, path) {
		t.Fatal("the backup through the other gateway differs from the volume")
	}
	name := func(g *gateway.Service) string {
		t.Helper()
		got, err := g.Volume(ctx, v.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.Name + " / " + got.Description
	}
	for i, g := range []*gateway.Service{a, b} {
		if err := g.SyncBackups(ctx); err != nil {
			t.Fatal(err)
		}
		if got := name(g); got != "db / the database" {
			t.Fatalf("gateway %d after its catch-up: %q, want the rename's", i, got)
		}
	}
	// A new index (a third gateway, or a rebuilt one) learns the volume from its record, which
	// says "vm" now, and then the rename.
	c := gatewayOn(t, repoDir, filepath.Join(dir, "state-c"))
	if got := name(c); got != "db / the database" {
		t.Fatalf("a new index: %q, want the rename's", got)
	}
	// Two renames on two gateways: the later one wins on both, and only its object stays.
	if _, err := b.UpdateVolume(ctx, v.ID, gateway.VolumeUpdate{Name: ptr("first")}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateVolume(ctx, v.ID, gateway.VolumeUpdate{Name: ptr("second")}); err != nil {
		t.Fatal(err)
	}
	for i, g := range []*gateway.Service{a, b, c} {
		if err := g.SyncBackups(ctx); err != nil {
			t.Fatal(err)
		}
		if got := name(g); got != "second / the database" {
			t.Fatalf("gateway %d after two renames: %q, want the later one's", i, got)
		}
	}
	if objs := volumeSettingsObjects(t, repoDir, v.ID); len(objs) != 1 {
		t.Fatalf("rename objects after three renames: %v, want the newest alone", objs)
	}
	// A rename elsewhere to a name a volume here has is taken here too, without failing the
	// catch-up: the project then has two volumes of that name, as the repository says
	// (docs/design.md, "Volumes of one name or path").
	if _, err := c.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "other.img", 64<<10), Name: "taken"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdateVolume(ctx, v.ID, gateway.VolumeUpdate{Name: ptr("taken")}); err != nil {
		t.Fatal(err)
	}
	if err := c.SyncBackups(ctx); err != nil {
		t.Fatalf("a catch-up with a rename to a name taken here: %v", err)
	}
	if got := name(c); got != "taken / the database" {
		t.Fatalf("a rename to a name taken here: %q, want the rename's", got)
	}
	if vs, err := c.Index().VolumesByName(gateway.DefaultProject, "taken"); err != nil || len(vs) != 2 {
		t.Fatalf("volumes named taken after the rename: %d %v, want 2", len(vs), err)
	}
	if _, err := a.UnmanageVolume(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if objs := volumeSettingsObjects(t, repoDir, v.ID); len(objs) != 0 {
		t.Fatalf("rename objects of a forgotten volume: %v", objs)
	}
}

// TestVolumeManagedAnewIgnoresItsOldRename: a rename object left behind by a forget that could
// not remove it does not rename the volume when it is managed anew under its old id (found
// again by its path and identity).
func TestVolumeManagedAnewIgnoresItsOldRename(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	path := image(t, dir, "k.img", 64<<10)
	v, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: path, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "k"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateVolume(ctx, "k", gateway.VolumeUpdate{Name: ptr("renamed")}); err != nil {
		t.Fatal(err)
	}
	var f *faulty.Faulty
	gateway.WrapBackendForTest(t, s, func(be backend.Backend) backend.Backend {
		f = faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.Delete, Prefix: "meta/volume-settings/"})
		return f
	})
	if _, err := s.UnmanageVolume(ctx, "renamed"); err != nil {
		t.Fatal(err)
	}
	f.Reset()
	again, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: path, Name: "k2"})
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != v.ID {
		t.Fatalf("managed anew as %s, want its old id %s (the test needs it)", again.ID, v.ID)
	}
	if err := s.SyncBackups(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Volume(ctx, v.ID); err != nil || got.Name != "k2" {
		t.Fatalf("the volume managed anew: %+v, %v; want the name it was given then, k2", got, err)
	}
}

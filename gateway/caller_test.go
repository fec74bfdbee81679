package gateway_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
)

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// restoreSHA restores backup id as ctx's caller to a new file and returns the file's sha256.
func restoreSHA(t *testing.T, s *gateway.Service, ctx context.Context, id string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored.img")
	if _, err := s.Restore(ctx, gateway.RestoreRequest{Backup: id, To: out}); err != nil {
		t.Fatalf("restore %s: %v", id, err)
	}
	return sha256File(t, out)
}

// A request that names no caller is refused with ErrDenied by every operation that acts for
// a user, and changes nothing: there is no default identity, least of all an admin.
func TestNoCallerIsRefused(t *testing.T) {
	s, dir := newService(t)
	admin := adminCtx()
	img := image(t, dir, "vm.img", 256<<10)
	v, err := s.ManageVolume(admin, gateway.ManageRequest{Path: img, Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	exp, err := s.ExportBackup(admin, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	other := image(t, dir, "other.img", 64<<10)
	target := filepath.Join(dir, "target.img")
	limit := int64(1)

	ops := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"create backup", func(ctx context.Context) error {
			_, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID})
			return err
		}},
		{"create incremental", func(ctx context.Context) error {
			_, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
			return err
		}},
		{"list backups", func(ctx context.Context) error {
			_, err := s.ListBackups(ctx, gateway.ListFilter{AllProjects: true})
			return err
		}},
		{"show backup", func(ctx context.Context) error { _, err := s.Backup(ctx, b.ID); return err }},
		{"show backup by id", func(ctx context.Context) error { _, err := s.BackupByID(ctx, b.ID); return err }},
		{"wait for backup", func(ctx context.Context) error { _, err := s.WaitBackup(ctx, b.ID); return err }},
		{"delete backup", func(ctx context.Context) error { _, err := s.DeleteBackup(ctx, b.ID, false); return err }},
		{"force-delete backup", func(ctx context.Context) error { _, err := s.DeleteBackup(ctx, b.ID, true); return err }},
		{"restore", func(ctx context.Context) error {
			_, err := s.Restore(ctx, gateway.RestoreRequest{Backup: b.ID, To: target})
			return err
		}},
		{"restore to a new volume", func(ctx context.Context) error {
			_, err := s.Restore(ctx, gateway.RestoreRequest{Backup: b.ID})
			return err
		}},
		{"export", func(ctx context.Context) error { _, err := s.ExportBackup(ctx, b.ID); return err }},
		{"import", func(ctx context.Context) error {
			_, err := s.ImportBackup(ctx, exp.BackupService, exp.BackupURL)
			return err
		}},
		{"reset state", func(ctx context.Context) error {
			_, err := s.ResetBackupState(ctx, b.ID, "error")
			return err
		}},
		{"create volume", func(ctx context.Context) error {
			_, err := s.CreateVolume(ctx, gateway.CreateVolumeRequest{Name: "new", Size: 1 << 20})
			return err
		}},
		{"manage volume", func(ctx context.Context) error {
			_, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: other})
			return err
		}},
		{"volume by path", func(ctx context.Context) error { _, err := s.Volume(ctx, other); return err }},
		{"list volumes", func(ctx context.Context) error { _, err := s.ListVolumes(ctx, true); return err }},
		{"show volume", func(ctx context.Context) error { _, err := s.Volume(ctx, v.ID); return err }},
		{"show volume by id", func(ctx context.Context) error { _, err := s.VolumeByID(ctx, v.ID); return err }},
		{"delete volume", func(ctx context.Context) error { _, err := s.DeleteVolume(ctx, v.ID, false); return err }},
		{"unmanage volume", func(ctx context.Context) error { _, err := s.UnmanageVolume(ctx, v.ID); return err }},
		{"create snapshot", func(ctx context.Context) error {
			_, err := s.CreateSnapshot(ctx, gateway.SnapshotRequest{Volume: v.ID})
			return err
		}},
		{"list snapshots", func(ctx context.Context) error { _, err := s.ListSnapshots(ctx, "", true); return err }},
		{"show snapshot", func(ctx context.Context) error { _, err := s.Snapshot(ctx, "snap"); return err }},
		{"delete snapshot", func(ctx context.Context) error { _, err := s.DeleteSnapshot(ctx, "snap"); return err }},
		{"quota show", func(ctx context.Context) error { _, err := s.QuotaShow(ctx, gateway.DefaultProject); return err }},
		{"quota usage", func(ctx context.Context) error { _, err := s.QuotaUsage(ctx, gateway.DefaultProject); return err }},
		{"quota update", func(ctx context.Context) error {
			_, err := s.QuotaUpdate(ctx, gateway.DefaultProject, &limit, nil)
			return err
		}},
		{"quota reset", func(ctx context.Context) error { return s.QuotaReset(ctx, gateway.DefaultProject) }},
		{"check", func(ctx context.Context) error { _, err := s.Check(ctx, repo.CheckOptions{}); return err }},
		{"gc", func(ctx context.Context) error { _, err := s.GC(ctx, repo.GCOptions{}); return err }},
		{"rebuild index", func(ctx context.Context) error { _, err := s.RebuildIndex(ctx, nil); return err }},
		{"stats", func(ctx context.Context) error { _, err := s.RepoStats(ctx); return err }},
	}
	callers := []struct {
		name string
		ctx  context.Context
		msg  string
	}{
		{"no caller", context.Background(), "no caller identity: refusing the request"},
		{"caller without a project", as("admin", "", true), `caller "admin" has no project: refusing the request`},
	}
	for _, c := range callers {
		for _, op := range ops {
			t.Run(c.name+"/"+op.name, func(t *testing.T) {
				err := op.call(c.ctx)
				if !errors.Is(err, gateway.ErrDenied) {
					t.Fatalf("got %v, want ErrDenied", err)
				}
				if err.Error() != c.msg {
					t.Fatalf("message %q, want %q", err.Error(), c.msg)
				}
			})
		}
	}

	// Nothing changed: one volume, one available backup, no restore target, default quota.
	if vs, err := s.ListVolumes(admin, true); err != nil || len(vs) != 1 {
		t.Fatalf("volumes after refused requests: %d, %v; want 1", len(vs), err)
	}
	bs, err := s.ListBackups(admin, gateway.ListFilter{AllProjects: true})
	if err != nil || len(bs) != 1 || bs[0].ID != b.ID || bs[0].Status != "available" {
		t.Fatalf("backups after refused requests: %+v, %v", bs, err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused restore touched its target: %v", err)
	}
	if q, err := s.QuotaShow(admin, gateway.DefaultProject); err != nil || q != gateway.Unlimited {
		t.Fatalf("quota after refused requests: %+v, %v", q, err)
	}
	if restoreSHA(t, s, admin, b.ID) != sha256File(t, img) {
		t.Fatal("the backup does not restore to its volume")
	}
}

// Maintenance is for admins: a caller of a project who is not one is refused.
func TestMaintenanceNeedsAnAdmin(t *testing.T) {
	s, _ := newService(t)
	user := as("alice", "p1", false)
	for name, call := range map[string]func() error{
		"check":         func() error { _, err := s.Check(user, repo.CheckOptions{}); return err },
		"gc":            func() error { _, err := s.GC(user, repo.GCOptions{}); return err },
		"rebuild index": func() error { _, err := s.RebuildIndex(user, nil); return err },
		"stats":         func() error { _, err := s.RepoStats(user); return err },
	} {
		if err := call(); !errors.Is(err, gateway.ErrDenied) {
			t.Errorf("%s by a non-admin: %v, want ErrDenied", name, err)
		}
	}
	if _, err := s.Check(adminCtx(), repo.CheckOptions{}); err != nil {
		t.Fatalf("check by the admin: %v", err)
	}
}

// An admin acting in a project resolves a backup's name in that project first, as a volume's:
// a member of another project who named a backup alike (cinder backup-update --name) made
// the name ambiguous to every admin command for the project ("2 backups match").
func TestAdminNamesABackupOfTheProjectItActsIn(t *testing.T) {
	s, dir := newService(t)
	p1, adminP2 := as("alice", "p1", false), as("admin", "p2", true)
	theirs, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: image(t, dir, "a.img", 64<<10)})
	if err != nil {
		t.Fatal(err)
	}
	ours, err := s.CreateBackup(adminP2, gateway.BackupRequest{Volume: image(t, dir, "b.img", 64<<10), Name: "nightly"})
	if err != nil {
		t.Fatal(err)
	}
	name := "nightly"
	if _, err := s.UpdateBackup(p1, theirs.ID, gateway.BackupUpdate{Name: &name}); err != nil {
		t.Fatal(err)
	}
	b, err := s.Backup(adminP2, "nightly")
	if err != nil || b.ID != ours.ID {
		t.Fatalf("the admin in p2 names p2's backup nightly: %v %v, want %s", b, err, ours.ID)
	}
	// p1's member still finds only its own.
	if b, err := s.Backup(p1, "nightly"); err != nil || b.ID != theirs.ID {
		t.Fatalf("p1 names its backup nightly: %v %v, want %s", b, err, theirs.ID)
	}
}

// TestMessagesNameNoPathToMembers: a member whose volume's image is gone, whose volume a
// restore is writing already, or whose volume cannot be tracked reads the volume's name; an
// admin reads the path. Before, the member read the path of the image, which for a volume cairn
// created is in the state directory, and the directory where tracking was refused.
func TestMessagesNameNoPathToMembers(t *testing.T) {
	_, fs, s := gatewayOnTmpfs(t, 128<<20) // a tmpfs makes no reflinks: tracking is refused
	member, admin := as("alice", "p1", false), as("admin", "p1", true)
	v, err := s.CreateVolume(member, gateway.CreateVolumeRequest{Name: "vol1", Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var bs []*index.Backup
	for range 2 {
		b, err := s.CreateBackup(member, gateway.BackupRequest{Volume: v.ID})
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	// check fails unless a member's err names vol1 and not fs, and an admin's names v.Path.
	check := func(what string, kind error, call func(ctx context.Context) error) {
		t.Helper()
		if err := call(member); !errors.Is(err, kind) || strings.Contains(err.Error(), fs) || !strings.Contains(err.Error(), "vol1") {
			t.Errorf("%s, as a member: %v; want %v naming the volume, not a path", what, err, kind)
		}
		if err := call(admin); !errors.Is(err, kind) || !strings.Contains(err.Error(), fs) {
			t.Errorf("%s, as an admin: %v; want %v naming %s", what, err, kind, v.Path)
		}
	}

	on := true
	check("tracking turned on where there are no reflinks", gateway.ErrInvalid, func(ctx context.Context) error {
		_, err := s.UpdateVolume(ctx, v.ID, gateway.VolumeUpdate{TrackChanges: &on})
		return err
	})

	_, job, err := s.StartRestore(member, gateway.RestoreRequest{Backup: bs[0].ID, Volume: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	check("a second restore onto the volume", gateway.ErrInUse, func(ctx context.Context) error {
		_, _, err := s.StartRestore(ctx, gateway.RestoreRequest{Backup: bs[1].ID, Volume: v.ID})
		return err
	})
	if err := job(member); err != nil {
		t.Fatal(err)
	}

	if err := os.Remove(v.Path); err != nil {
		t.Fatal(err)
	}
	check("a backup of a volume whose image is gone", gateway.ErrNotFound, func(ctx context.Context) error {
		_, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID})
		return err
	})
}

// TestRecordedReasonsNameNoPathToMembers: what cairn recorded before anyone asked (where a
// restore wrote, why it failed, why the volume is in error) reads, for a member, with the
// volume's name where the record has its image's path in the state directory; an admin reads
// the path. Before, a member read the image's path in every listing and in the console.
func TestRecordedReasonsNameNoPathToMembers(t *testing.T) {
	_, fs, s := gatewayOnTmpfs(t, 128<<20)
	member, admin := as("alice", "p1", false), as("admin", "p1", true)
	v, err := s.CreateVolume(member, gateway.CreateVolumeRequest{Name: "vol1", Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateBackup(member, gateway.BackupRequest{Volume: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	_, job, err := s.StartRestore(member, gateway.RestoreRequest{Backup: b.ID, Volume: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	// A directory where the image was, once the restore is accepted: it fails, naming the
	// path it could not write.
	if err := os.Remove(v.Path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(v.Path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := job(member); err == nil {
		t.Fatal("a restore onto a directory succeeded")
	}

	texts := func(ctx context.Context) []string {
		t.Helper()
		got, err := s.Backup(ctx, b.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.LastRestore == nil {
			t.Fatal("no restore recorded")
		}
		out := []string{got.LastRestore.Target, got.LastRestore.Reason}
		list, err := s.ListBackups(ctx, gateway.ListFilter{})
		if err != nil || len(list) != 1 || list[0].LastRestore == nil {
			t.Fatalf("list: %v, %v", list, err)
		}
		out = append(out, list[0].LastRestore.Target, list[0].LastRestore.Reason)
		vol, err := s.ShowVolume(ctx, v.ID)
		if err != nil {
			t.Fatal(err)
		}
		vols, err := s.ListVolumes(ctx, false)
		if err != nil || len(vols) != 1 {
			t.Fatalf("volumes: %v, %v", vols, err)
		}
		byID, err := s.VolumeByID(ctx, v.ID)
		if err != nil {
			t.Fatal(err)
		}
		return append(out, vol.FailReason, vols[0].FailReason, byID.FailReason)
	}
	for i, text := range texts(member) {
		if strings.Contains(text, fs) || text == "" {
			t.Errorf("member's text %d: %q; want one without %s", i, text, fs)
		}
		if i%2 == 0 && i < 4 && text != "volume vol1" {
			t.Errorf("member's restore target %d: %q; want the volume's name", i, text)
		}
	}
	for i, text := range texts(admin) {
		if !strings.Contains(text, v.Path) {
			t.Errorf("admin's text %d: %q; want %s in it", i, text, v.Path)
		}
	}
}

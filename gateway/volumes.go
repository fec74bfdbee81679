package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/cairn-backup/cairn/blockio"
	"github.com/cairn-backup/cairn/blockio/nbd"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/units"
	"github.com/google/uuid"
)

// ManageRequest registers an existing block device or image file as a volume.
type ManageRequest struct {
	Path        string
	Name        string
	Description string
	Project     string // admin only: register into another project
	// TrackChanges asks for (true) or refuses (false) changed-block tracking of an image
	// file; nil tracks where the file system makes reflinks.
	TrackChanges *bool
}

// ManageVolume registers a block device or image file.
func (s *Service) ManageVolume(ctx context.Context, req ManageRequest) (*index.Volume, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	project, err := targetProject(c, req.Project)
	if err != nil {
		return nil, err
	}
	path, size, kind, err := s.probeVolume(ctx, req.Path)
	if err != nil {
		return nil, err
	}
	if kind != KindNBD && s.insideRepository(path) {
		// A restore onto such a volume would overwrite what backups are stored in.
		return nil, invalidf("%s is inside the repository or its state directory, whose files are what backups are stored in: it cannot be a volume", path)
	}
	if existing, err := s.idx.VolumesByPath(path); err != nil {
		return nil, err
	} else if len(existing) == 1 {
		return nil, wrapf(ErrExists, "%s is already volume %s (%s)", path, existing[0].Name, existing[0].ID)
	} else if len(existing) > 1 {
		return nil, wrapf(ErrExists, "%s is already %d volumes (%s)", path, len(existing), volumeIDs(existing))
	}
	name := req.Name
	if name == "" {
		name = s.freeName(project, filepath.Base(path))
	}
	if err := validName(name); err != nil {
		return nil, err
	}
	var identity string
	if kind != KindNBD {
		if identity, err = blockio.Identify(path); err != nil {
			s.log.Warn("cannot identify the volume: its backups will not be found again after it is forgotten", "path", path, "error", err)
		}
	}
	// The volume seen again after it was forgotten keeps its id, and so its backups.
	id, earlier, err := s.forgottenVolume(c, path, identity)
	if err != nil {
		return nil, err
	}
	if id == "" {
		id = uuid.NewString()
	}
	v := &index.Volume{ID: id, Name: name, Path: path, Project: project, Kind: kind, Size: size,
		Status: index.VolumeAvailable, Description: req.Description, Identity: identity, CreatedAt: now(), UpdatedAt: now()}
	if v.TrackChanges, err = trackChanges(c, v, req.TrackChanges); err != nil {
		return nil, err
	}
	if err := s.idx.CreateVolume(v); err != nil {
		if v.TrackChanges {
			_ = blockio.RemoveBaseStore(v.Path, v.ID)
		}
		if errors.Is(err, index.ErrExists) {
			return nil, wrapf(ErrExists, "a volume named %q already exists in project %s: choose another --name", name, project)
		}
		return nil, err
	}
	if err := s.saveVolume(ctx, v.ID); err != nil {
		// A Put the client saw fail may have landed: the stored record goes too, or
		// rebuild-index would bring the volume back.
		s.dropNewVolume(ctx, v, "its record could not be stored in the repository: "+err.Error())
		return nil, err
	}
	s.notifyChange()
	s.log.Info("volume managed", "volume_id", v.ID, "name", v.Name, "path", v.Path, "size", v.Size, "earlier_backups", earlier, "track_changes", v.TrackChanges)
	return v, nil
}

// forgottenVolume finds the volume that was registered at path, with the same identity, and
// then forgotten (unmanaged or deleted) while its backups stayed: its id and how many of its
// backups the caller sees, or "" when there is none. The newest such backup decides. Both
// must match: a path alone may name another disk by now, an identity alone a volume that
// moved (see docs/design.md, "Volume identity").
func (s *Service) forgottenVolume(c Caller, path, identity string) (string, int, error) {
	if identity == "" {
		return "", 0, nil
	}
	all, err := s.idx.Backups()
	if err != nil {
		return "", 0, err
	}
	id, n := "", 0
	for i := len(all) - 1; i >= 0; i-- {
		b := all[i]
		if b.VolumePath != path || b.VolumeIdentity != identity || !c.sees(b.Project) {
			continue
		}
		if id == "" {
			if _, err := s.idx.Volume(b.VolumeID); err == nil {
				continue // registered still, at another path: not forgotten
			}
			id = b.VolumeID
		}
		if b.VolumeID == id {
			n++
		}
	}
	return id, n, nil
}

// probeVolume opens what a volume path names to learn its size and kind: an NBD URI is
// connected to, a path is made absolute and opened.
func (s *Service) probeVolume(ctx context.Context, ref string) (path string, size int64, kind string, err error) {
	if nbd.IsURI(ref) {
		src, err := nbd.Open(ctx, ref, "")
		if err != nil {
			return "", 0, "", invalidf("volume %s: %v", ref, err)
		}
		size := src.Size()
		_ = src.Close() // read-only
		return ref, size, KindNBD, nil
	}
	path, err = absPath(ctx, ref)
	if err != nil {
		return "", 0, "", invalidf("volume path %q: %v", ref, err)
	}
	src, err := blockio.OpenSource(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", 0, "", invalidf("%v: give the path of a block device or an image file ('cairn volume create --size 10G --name NAME' makes a new one)", err)
	}
	if err != nil {
		return "", 0, "", invalidf("%v", err)
	}
	size, kind = src.Size(), KindFile
	if src.IsDevice() {
		kind = KindDevice
	}
	src.Close()
	return path, size, kind, nil
}

// trackChanges decides whether a new volume is tracked: a thin logical volume is (through thin
// snapshots kept in its pool), an image file is when asked, or by default when its file system
// makes reflinks; asking for tracking anything else is refused. Why an image file cannot be
// tracked names its directory, an admin's to read (Caller.shown).
func trackChanges(c Caller, v *index.Volume, want *bool) (bool, error) {
	if want != nil && !*want {
		return false, nil
	}
	if v.Kind == KindDevice && blockio.Thin(v.Path) != nil {
		return true, nil // thin snapshots kept in the pool
	}
	if v.Kind != KindFile {
		if want != nil {
			if v.Kind == KindNBD {
				return false, invalidf("volume %s is an NBD export: its server tracks changes in a dirty bitmap; back up with --incremental --bitmap NAME instead of --track-changes", v.Name)
			}
			return false, invalidf("changed-block tracking works for image files on XFS or btrfs, thin logical volumes and NBD exports with dirty bitmaps; %s is another block device", v.Path)
		}
		return false, nil
	}
	if err := trackable(v.Path, v.ID); err != nil {
		if want != nil {
			if !c.Admin { // why names the image's directory
				return false, invalidf("volume %s cannot be tracked where its image is: leave changed-block tracking off", v.Name)
			}
			return false, invalidf("volume %s cannot be tracked: %v; put it on XFS (reflink=1) or btrfs, or leave out --track-changes", v.Name, err)
		}
		return false, nil
	}
	return true, nil
}

// CreateVolumeRequest creates a sparse image file in the repository's volume directory.
type CreateVolumeRequest struct {
	Name        string
	Size        int64
	Description string
	Project     string
}

// CreateVolume creates a new, empty volume image.
func (s *Service) CreateVolume(ctx context.Context, req CreateVolumeRequest) (*index.Volume, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	project, err := targetProject(c, req.Project)
	if err != nil {
		return nil, err
	}
	if req.Size <= 0 {
		return nil, invalidf("volume size must be positive (e.g. --size 10G)")
	}
	if req.Size%512 != 0 {
		// A block device is whole sectors (losetup refuses less), and a bare number is bytes:
		// '--size 10' meant 10 GiB to a Cinder hand.
		return nil, invalidf("volume size %d bytes is not a whole number of 512-byte sectors: give a unit, like --size 10G", req.Size)
	}
	if req.Name == "" {
		return nil, invalidf("a new volume needs a --name")
	}
	if err := validName(req.Name); err != nil {
		return nil, err
	}
	if s.nameTaken(project, req.Name) {
		return nil, wrapf(ErrExists, "a volume named %q already exists in project %s: choose another --name", req.Name, project)
	}
	return s.newImageVolume(ctx, project, req.Name, req.Description, req.Size, index.VolumeAvailable)
}

// roomForIndex refuses a backup while the index's file system has less than local.Reserve
// free: a backup writes records and blob locations into the index, and Badger writes through
// memory maps of sparse files, where a full disk is a SIGBUS that kills the gateway. A local
// repository's packs keep the reserve (local.Reserve); this covers the state directory of a
// remote one, which other writers may fill [TestBackupRefusedWhileTheIndexHasNoRoom].
// Restores are not refused (they write a record or two; getting data back comes first), and
// the heartbeat reports the backup service down meanwhile. The error names the index's
// directory to c if c may read it (Caller.shown).
func (s *Service) roomForIndex(c Caller) error {
	free, _, err := blockio.FreeSpace(s.idx.Dir())
	if err != nil || free >= local.Reserve {
		return nil
	}
	return wrapf(ErrConflict, "the file system that holds %s has %s free, under the %s cairn keeps there: free space, and try again",
		c.shown("the index ("+s.idx.Dir()+")", "the gateway's index"), units.Bytes(max(free, 0)), units.Bytes(local.Reserve))
}

// roomForImage takes room for need bytes of data that a restore will write to an image file in
// dir (holes stay holes) until release is called, when the restore has ended. It refuses when
// dir's file system has not that much free beside what the restores accepted before and not
// ended have taken, and local.Reserve more when the index lives there too (the volume
// directory is in the state directory, beside the index, unless --state-dir moved one of
// them): Badger writes through memory maps of sparse files and dies of a SIGBUS on a full
// disk. Before, a restore to a new volume filled the disk and failed half-written
// [TestRestoreToANewVolumeThatCannotFitIsRefused]; one onto a volume cairn made (1 PiB and
// sparse, for a member) was not looked at, and two accepted back to back each saw the same
// free space [TestRestoreOntoAVolumeThatCannotFitIsRefused,
// TestRestoresThatFitOnlyOneAtATimeAreAcceptedOneAtATime]. A restore keeps its whole
// share until it ends, though it fills the room as it writes: the count errs on the safe side.
// what names the restore in the error ("a new volume of 1 GiB holding 200 MiB of data"), and
// next says what else to do. The error names dir to c if c may read it (Caller.shown).
func (s *Service) roomForImage(c Caller, dir, what, next string, need int64) (release func(), err error) {
	s.roomMu.Lock()
	defer s.roomMu.Unlock()
	free, dev, err := blockio.FreeSpace(dir)
	if err != nil {
		return func() {}, nil // a file system that cannot tell: the write finds out
	}
	keep := int64(0)
	if _, idev, err := blockio.FreeSpace(s.idx.Dir()); err == nil && idev == dev {
		keep = local.Reserve
	}
	taken := s.roomTaken[dev]
	if free-taken-need >= keep {
		s.roomTaken[dev] = taken + need
		return sync.OnceFunc(func() {
			s.roomMu.Lock()
			defer s.roomMu.Unlock()
			if s.roomTaken[dev] -= need; s.roomTaken[dev] <= 0 {
				delete(s.roomTaken, dev)
			}
		}), nil
	}
	msg := fmt.Sprintf("%s does not fit in %s: it has %s free", what, c.shown(dir, "the gateway's volume directory"), units.Bytes(max(free, 0)))
	if taken > 0 {
		msg += fmt.Sprintf(", %s of it taken by restores under way", units.Bytes(taken))
		next = "wait for them to end, " + next
	}
	if keep > 0 {
		msg += fmt.Sprintf(", and cairn keeps %s there for the index", units.Bytes(keep))
	}
	return nil, wrapf(ErrConflict, "%s: free space, %s", msg, next)
}

func (s *Service) newImageVolume(ctx context.Context, project, name, description string, size int64, status index.VolumeStatus) (*index.Volume, error) {
	if err := os.MkdirAll(s.volDir, 0o700); err != nil {
		return nil, fmt.Errorf("volume directory: %w", err)
	}
	id := uuid.NewString()
	path := filepath.Join(s.volDir, id+".img")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create volume image: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("create volume image of %d bytes: %w", size, err)
	}
	identity, _ := blockio.Identify(path) // a file just made: it has one
	v := &index.Volume{ID: id, Name: name, Path: path, Project: project, Kind: KindFile, Size: size, Status: status,
		Managed: true, Description: description, Identity: identity, CreatedAt: now(), UpdatedAt: now()}
	v.TrackChanges, _ = trackChanges(Caller{}, v, nil) // not asked for: never refused
	if err := s.idx.CreateVolume(v); err != nil {
		os.Remove(path)
		if errors.Is(err, index.ErrExists) {
			return nil, wrapf(ErrExists, "a volume named %q already exists in project %s", name, project)
		}
		return nil, err
	}
	if err := s.saveVolume(ctx, v.ID); err != nil {
		// A Put the client saw fail may have landed.
		s.dropNewVolume(ctx, v, "its record could not be stored in the repository: "+err.Error())
		return nil, err
	}
	s.notifyChange()
	s.log.Info("volume created", "volume_id", v.ID, "name", v.Name, "size", v.Size)
	return v, nil
}

// ListVolumes returns the volumes the caller may see.
func (s *Service) ListVolumes(ctx context.Context, allProjects bool) ([]*index.Volume, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	all, err := s.idx.Volumes()
	if err != nil {
		return nil, err
	}
	var out []*index.Volume
	w := s.wordsFor(c)
	for _, v := range all {
		if v.Project == c.Project || (allProjects && c.Admin) {
			out = append(out, volumeShownTo(s.volumeShown(v), c, w))
		}
	}
	return out, nil
}

// volumeFor is volume v as caller c is shown it: restoring-backup while a restore through
// another gateway writes it (volumeShown), and its failure in a member's words.
func (s *Service) volumeFor(c Caller, v *index.Volume) *index.Volume {
	return volumeShownTo(s.volumeShown(v), c, s.wordsFor(c))
}

// volumeShownTo is volume v as caller c may see it: a member reads why it is in error in w's
// words, without the paths the reason may name (its own image's among them).
func volumeShownTo(v *index.Volume, c Caller, w *words) *index.Volume {
	if c.Admin || v.FailReason == "" {
		return v
	}
	shown := *v // records may be shared with the index's cache: never changed in place
	shown.FailReason = w.of(v.FailReason)
	return &shown
}

// BackupsByVolume returns the backups the caller sees (with all, an admin sees every
// project's), by volume id, oldest first: what the volume listings of the CLI and the console
// count and date.
func (s *Service) BackupsByVolume(ctx context.Context, all bool) (map[string][]*index.Backup, error) {
	bs, err := s.ListBackups(ctx, ListFilter{AllProjects: all})
	if err != nil {
		return nil, err
	}
	by := map[string][]*index.Backup{}
	for _, b := range bs {
		by[b.VolumeID] = append(by[b.VolumeID], b)
	}
	return by, nil
}

// LastCommitted returns the newest of bs (oldest first) that has a stored manifest, or nil:
// a volume's last backup, failed and running ones aside.
func LastCommitted(bs []*index.Backup) *index.Backup {
	for _, b := range slices.Backward(bs) {
		if b.Status.Committed() {
			return b
		}
	}
	return nil
}

// ShowVolume is Volume as this gateway shows it: restoring-backup while a restore through
// another gateway writes it.
func (s *Service) ShowVolume(ctx context.Context, ref string) (*index.Volume, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	v, err := s.Volume(ctx, ref)
	if err != nil {
		return nil, err
	}
	return s.volumeFor(c, v), nil
}

// Volume resolves a volume by id, name or path. An unknown path of a block device or image
// file is registered on first use.
func (s *Service) Volume(ctx context.Context, ref string) (*index.Volume, error) {
	v, err := s.findVolume(ctx, ref)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return v, err
	}
	// Not a known id, name or path: a path to a device or image, or an NBD URI, registers on
	// first use.
	if nbd.IsURI(ref) {
		return s.ManageVolume(ctx, ManageRequest{Path: ref})
	}
	if p, perr := absPath(ctx, ref); perr == nil {
		if _, serr := os.Stat(p); serr == nil {
			return s.ManageVolume(ctx, ManageRequest{Path: p})
		}
	}
	return nil, err
}

func (s *Service) findVolume(ctx context.Context, ref string) (*index.Volume, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if ref == "" {
		return nil, invalidf("no volume given")
	}
	if v, err := s.idx.Volume(ref); err == nil && c.sees(v.Project) {
		return v, nil
	}
	if vs, err := s.idx.VolumesByName(c.Project, ref); err != nil {
		return nil, err
	} else if len(vs) == 1 {
		return vs[0], nil
	} else if len(vs) > 1 {
		return nil, invalidf("%d volumes of project %s are named %q (%s): give the volume's id", len(vs), c.Project, ref, volumeIDs(vs))
	}
	path := ""
	if nbd.IsURI(ref) {
		path = ref
	} else if abs, err := absPath(ctx, ref); err == nil {
		if _, err := os.Stat(abs); err == nil {
			path = abs
		}
	}
	if path != "" {
		vs, err := s.idx.VolumesByPath(path)
		if err != nil {
			return nil, err
		}
		vs = slices.DeleteFunc(vs, func(v *index.Volume) bool { return !c.sees(v.Project) })
		if len(vs) == 1 {
			return vs[0], nil
		} else if len(vs) > 1 {
			return nil, invalidf("%d volumes are registered at %s (%s): give the volume's id", len(vs), path, volumeIDs(vs))
		}
	}
	if c.Admin {
		all, err := s.idx.Volumes()
		if err != nil {
			return nil, err
		}
		var found []*index.Volume
		for _, v := range all {
			if v.Name == ref || strings.HasPrefix(v.ID, ref) && len(ref) >= 8 {
				found = append(found, v)
			}
		}
		if len(found) == 1 {
			return found[0], nil
		}
		if len(found) > 1 {
			return nil, invalidf("%d volumes match %q: use the volume id", len(found), ref)
		}
	}
	return nil, wrapf(ErrNotFound, "volume %s not found: see 'cairn volume list'", ref)
}

// DeleteVolume removes a volume: a volume cairn created loses its image file; a managed one
// is only forgotten (use Unmanage to say so explicitly). A volume with backups is deleted only
// with force, and its backups stay. Removing an image or leaving backups behind is confirmed.
func (s *Service) DeleteVolume(ctx context.Context, ref string, force bool) (*index.Volume, error) {
	v, err := s.findVolume(ctx, ref)
	if err != nil {
		return nil, err
	}
	if v.Managed {
		// Its image would go from under whoever uses it, and its data once they close it.
		if reason, err := blockio.InUse(v.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		} else if reason != "" {
			return nil, wrapf(ErrInUse, "volume %s is in use (%s): detach it first, or 'cairn volume unmanage %s' to only forget it and keep its image", v.Name, reason, v.Name)
		}
	}
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	// Deleted, the volume would leave its snapshots behind: their clones or LVs would hold
	// space under a volume no list shows. Cinder refuses the same (or deletes them first with
	// cascade=True) [TestDeleteVolumeWithSnapshotsIsRefused].
	if snaps, err := s.ListSnapshots(ctx, v.ID, true); err != nil {
		return nil, err
	} else if len(snaps) > 0 {
		ids := make([]string, 0, 3)
		for _, sn := range snaps[:min(len(snaps), 3)] {
			ids = append(ids, sn.ID)
		}
		return nil, wrapf(ErrConflict, "volume %s has %d snapshots (%s): delete them first ('cairn snapshot delete ID'; through the API, cinder delete --cascade)", v.Name, len(snaps), strings.Join(ids, ", "))
	}
	all, err := s.idx.VolumeBackups(v.ID)
	if err != nil {
		return nil, err
	}
	// Those an admin made into another project are hidden from the volume's owner (seed
	// 3.1.2): they neither count nor hold the delete up.
	var backups []*index.Backup
	for _, b := range all {
		if c.sees(b.Project) {
			backups = append(backups, b)
		}
	}
	if len(backups) > 0 && !force {
		return nil, wrapf(ErrConflict, "volume %s has %d backups: add --force to delete it anyway (its backups stay and restore as before), or 'cairn volume unmanage %s' to only forget it", v.Name, len(backups), v.Name)
	}
	var lost []string
	if v.Managed {
		lost = append(lost, "its image "+v.Path+" is removed")
	}
	if len(backups) > 0 {
		lost = append(lost, fmt.Sprintf("its %d backups stay", len(backups)))
	}
	if len(lost) > 0 {
		if err := confirm(ctx, fmt.Sprintf("delete volume %s (%s)", v.Name, strings.Join(lost, "; "))); err != nil {
			return nil, err
		}
	}
	if v, err = s.forgetVolume(ctx, v.ID); err != nil {
		return nil, err
	}
	if v.Managed {
		if err := os.Remove(v.Path); err != nil && !os.IsNotExist(err) {
			return v, fmt.Errorf("volume %s forgotten, but its image %s could not be removed: %w", v.Name, v.Path, err)
		}
	}
	s.log.Info("volume deleted", "volume_id", v.ID, "name", v.Name)
	return v, nil
}

// UnmanageVolume forgets a volume without touching its device or file.
func (s *Service) UnmanageVolume(ctx context.Context, ref string) (*index.Volume, error) {
	return s.forgetVolume(ctx, ref)
}

// forgetVolume removes a volume's record unless a backup or restore is using it.
func (s *Service) forgetVolume(ctx context.Context, ref string) (*index.Volume, error) {
	v, err := s.findVolume(ctx, ref)
	if err != nil {
		return nil, err
	}
	if err := s.dropVolumeRecords(ctx, v); err != nil {
		return nil, err
	}
	s.notifyChange()
	if v.TrackChanges {
		s.dropTrackingBase(v)
	}
	return v, nil
}

// dropTrackingBase gives back what changed-block tracking keeps of volume v (its base holds
// the blocks written since the last backup): the reflink clone of an image, the thin
// snapshots in an LV's pool. A failure is logged: the volume goes, or goes untracked, anyway.
func (s *Service) dropTrackingBase(v *index.Volume) {
	var err error
	if v.Kind != KindDevice {
		err = blockio.RemoveBaseStore(v.Path, v.ID)
	} else if tv := blockio.Thin(v.Path); tv != nil {
		err = tv.DropBases() // the thin snapshots kept in its pool
	}
	if err != nil {
		s.log.Warn("cannot remove the volume's change-tracking base", "volume_id", v.ID, "error", err)
	}
}

// dropVolumeRecords removes a volume's record from the index, then from the repository, under
// volumeRecMu (so the catch-up's learn of volumes managed elsewhere sees both or neither),
// unless a backup or restore has it: the index's delete checks that in the same transaction,
// so a claim of the volume never lands between the check and the delete
// [TestVolumeClaimedAsItIsForgottenStays]. If the repository's cannot be removed, the index's
// is put back and the volume stays.
func (s *Service) dropVolumeRecords(ctx context.Context, v *index.Volume) error {
	s.volumeRecMu.Lock()
	defer s.volumeRecMu.Unlock()
	if h := beforeVolumeForgetForTest; h != nil {
		h(v.ID)
	}
	if err := s.idx.DeleteVolumeIf(v.ID, notBusy); err != nil {
		return err
	}
	// Its record in the repository goes too, or the volume stays: rebuild-index and every
	// other gateway would bring a volume back that this one said was deleted. Dropped from the
	// index first, so a write-through meanwhile (saveVolume) finds it gone and stores nothing.
	if err := s.repo.DeleteMeta(ctx, metaVolumes, v.ID); err != nil && !errors.Is(err, backend.ErrNotFound) {
		// A Delete the client saw fail may have happened: the kept volume's record is stored
		// again. It is learned as any recorded volume is: its name may be another's by now.
		if rerr := s.idx.LearnVolume(v); rerr != nil {
			s.log.Error("cannot keep the record of a volume whose delete failed", "volume_id", v.ID, "error", rerr)
		} else {
			s.saveVolumeHeld(ctx, v.ID, false)
		}
		return fmt.Errorf("volume %s is kept: its record in the repository cannot be removed (%w); try again", v.Name, err)
	}
	s.dropVolumeSettings(ctx, v.ID, time.Time{})
	return nil
}

// notBusy refuses a forget of a volume that a backup or restore has (DeleteVolumeIf).
func notBusy(v *index.Volume) error {
	if v.Status == index.VolumeBackingUp || v.Status == index.VolumeRestoringBackup {
		return wrapf(ErrConflict, "volume %s is %s: wait for it to finish or cancel it", v.Name, v.Status)
	}
	return nil
}

// beforeVolumeForgetForTest, when set, runs in dropVolumeRecords under volumeRecMu, before the
// index's delete.
var beforeVolumeForgetForTest func(id string)

func targetProject(c Caller, requested string) (string, error) {
	if requested == "" || requested == c.Project {
		return c.Project, nil
	}
	if !c.Admin {
		return "", wrapf(ErrDenied, "only an admin may act in project %s", requested)
	}
	return requested, nil
}

// validName refuses names that would be ambiguous or unsafe in paths and tables.
func validName(name string) error {
	if name == "" || len(name) > 255 {
		return invalidf("a name must be 1 to 255 characters")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return invalidf("name %q contains a control character", name)
		}
	}
	// Names become directory names in the FUSE tree and parts of paths in messages.
	if strings.ContainsRune(name, '/') || name == "." || name == ".." {
		return invalidf("name %q: a name cannot contain '/' or be '.' or '..'", name)
	}
	return nil
}

// freeName returns base, or base-2, base-3... whichever is free in the project.
func (s *Service) freeName(project, base string) string {
	name := base
	for i := 2; s.nameTaken(project, name); i++ {
		name = fmt.Sprintf("%s-%d", base, i)
	}
	return name
}

// volumeIDs is the ids of vs, for a message.
func volumeIDs(vs []*index.Volume) string {
	ids := make([]string, len(vs))
	for i, v := range vs {
		ids[i] = v.ID
	}
	return strings.Join(ids, ", ")
}

// nameTaken reports whether a volume of the project has the name (or the index cannot say).
func (s *Service) nameTaken(project, name string) bool {
	vs, err := s.idx.VolumesByName(project, name)
	return err != nil || len(vs) > 0
}

package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/blockio"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/stack"
	"github.com/cairn-backup/cairn/units"
)

// How a copy read its backup (Backup.ReadMode of the copy in the destination).
const (
	ReadCopy     = "copy"      // every data extent of the backup in the source repository
	ReadCopyDiff = "copy-diff" // only the blocks whose addresses differ from its parent's there
)

// copyProbes is how many blocks outside a copy's changed ranges are read from the source
// and compared with the destination's copy of the parent before that copy is built on.
const copyProbes = 32

// CopyResult is what copying one backup to another repository did.
type CopyResult struct {
	Backup *index.Backup `json:"backup"` // the copy, as the destination records it
	// Copied is false when the destination had the backup already, or (Skipped) deleted it
	// after an earlier copy: nothing was done.
	Copied bool `json:"copied"`
	// Skipped says why a backup the destination lacks was not copied (SkipDeletedThere).
	Skipped string `json:"skipped,omitempty"`
	// Base is the destination's copy of the backup's parent the copy was built on (only the
	// blocks that differ from it were read); empty when the copy read the backup in full.
	Base string `json:"base,omitempty"`
	// DryRun: nothing was copied; Backup is the source's, which a copy would copy (on Base,
	// the destination's copy of its parent, when there is one).
	DryRun  bool          `json:"dry_run,omitempty"`
	Seconds float64       `json:"seconds"`
	Took    time.Duration `json:"-"`
}

// CopyOptions tune CopyBackup.
type CopyOptions struct {
	// DryRun says what would be copied, and copies nothing.
	DryRun bool
	// SkipDeletedThere leaves a backup the destination deleted after an earlier copy of it
	// (its manifest here records that copy): a copy of every backup (--all, a policy's copy
	// target) does not undo the destination's deletes. A copy of a backup named by its id
	// copies it again.
	SkipDeletedThere bool
	Progress         func(done, total int64)
}

// CopyBackup copies a backup of this repository into dst, another repository with its own
// keys: a backup of the backup, verified as it is read, deduplicated against what dst holds,
// and built on dst's copy of its parent where there is one (design.md, "Copies to another
// repository"). A backup dst has already is left as it is (Copied false). For admins: the
// copy keeps its project, which may not be the caller's.
func (s *Service) CopyBackup(ctx context.Context, ref string, dst *Service, o CopyOptions) (*CopyResult, error) {
	if _, err := adminOf(ctx, "copy a backup to another repository"); err != nil {
		return nil, err
	}
	b, err := s.backupHere(ctx, ref)
	if err != nil {
		return nil, err
	}
	return s.copyBackup(ctx, b, dst, o)
}

// copyBackup is CopyBackup for a caller already allowed to copy b.
func (s *Service) copyBackup(ctx context.Context, b *index.Backup, dst *Service, o CopyOptions) (*CopyResult, error) {
	if s.repo.Config().ID == dst.repo.Config().ID {
		return nil, invalidf("the destination is this repository (%s): copy to another one, made with 'cairn repo init' there", dst.be.Location())
	}
	if b.Status != index.BackupAvailable {
		return nil, wrapf(ErrConflict, "backup %s is %s: only an available backup can be copied", b.ID, b.Status)
	}
	start := time.Now()
	dstID := dst.repo.Config().ID
	// The record of b says where it was copied to, as its manifest does (recordCopy writes
	// both; a catch-up and a rebuilt index take the manifest's).
	recorded := b.Copies.To(dstID)
	if have, err := dst.hasBackup(ctx, b.ID); err != nil {
		return nil, err
	} else if have != nil {
		if !have.Status.Committed() {
			// Being deleted there (a delete that did not finish), or failed, or reset to
			// error: no copy to take for one, nor to record. Taken for "already there", it
			// was recorded, and every copy of all after it skipped the backup as deleted
			// there [TestCopyOverOneBeingDeletedThereSaysSo]. A copy of all skips one it
			// recorded, as it skips one deleted there.
			if o.SkipDeletedThere && recorded != nil {
				return &CopyResult{Backup: b, Skipped: fmt.Sprintf("%s in the destination since its copy of %s", have.Status, recorded.At.UTC().Format(time.RFC3339))}, nil
			}
			return nil, wrapf(ErrConflict, "backup %s is %s in %s: delete it there ('cairn backup delete %s'), or reset its state there if its copy is whole, then copy it", b.ID, have.Status, dst.be.Location(), b.ID)
		}
		// A copy made before copies were recorded (or whose record did not land) is
		// recorded now, once, so that a later delete there is left too.
		if recorded == nil && !o.DryRun {
			s.recordCopy(ctx, b.ID, repo.CopyRecord{Repository: dstID, Location: dst.be.Location(), At: cmp.Or(have.UpdatedAt, now())})
		}
		return &CopyResult{Backup: have}, nil
	}
	if o.SkipDeletedThere && recorded != nil {
		return &CopyResult{Backup: b, Skipped: fmt.Sprintf("deleted in the destination after its copy of %s: 'cairn backup copy %s' copies it again",
			recorded.At.UTC().Format(time.RFC3339), b.ID)}, nil
	}
	if o.DryRun {
		res := &CopyResult{Backup: b, DryRun: true}
		if p, err := dst.idx.Backup(b.ParentID); b.ParentID != "" && err == nil && p.Status == index.BackupAvailable && p.Size == b.Size {
			res.Base = p.ID
		}
		return res, nil
	}
	// The copy shows among the gateway's jobs (the console's Jobs page) while it runs and
	// after: a repository job, for admins, as its destination is theirs to know. It runs in
	// the caller (a CLI through the socket): the caller's end cancels it.
	id := "copy/" + b.ID
	s.jobs.add(JobInfo{ID: id, Kind: "copy", Subject: b.ID, VolumeID: b.VolumeID, VolumeName: b.VolumeName, Target: dst.be.Location()})
	var res *CopyResult
	err := s.runJob(ctx, "copy", b.ID, s.jobs.entry(id), func(ctx context.Context) (err error) {
		o.Progress = s.jobProgress(id, o.Progress)
		res, err = s.copyManifest(ctx, b, dst, o)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.recordCopy(ctx, b.ID, repo.CopyRecord{Repository: dstID, Location: dst.be.Location(), At: now()})
	res.Took = time.Since(start)
	res.Seconds = res.Took.Seconds()
	s.log.Info("backup copied", "backup_id", b.ID, "to", dst.be.Location(), "base", res.Base,
		"read_bytes", res.Backup.Stats.ReadBytes, "new_bytes", res.Backup.Stats.NewBytes, "seconds", res.Seconds)
	return res, nil
}

// copyManifest copies backup b, which dst does not have, under the source's lock.
func (s *Service) copyManifest(ctx context.Context, b *index.Backup, dst *Service, o CopyOptions) (*CopyResult, error) {
	// A copy of a large backup takes long: it waits out a restart of either store, as a
	// backup and a restore do.
	ctx = backend.Patient(ctx)
	// Under the source's lock no gc removes the backup's blocks while they are read, once its
	// manifest is seen there under it (as a restore does).
	lk, err := s.repo.Lock(ctx, repo.LockShared, "copy")
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	m, err := s.repo.GetManifest(ctx, b.ID)
	if errors.Is(err, backend.ErrNotFound) {
		return nil, wrapf(ErrConflict, "backup %s was deleted meanwhile", b.ID)
	} else if err != nil {
		return nil, fmt.Errorf("backup %s: %w", b.ID, err)
	}
	var parent *repo.Manifest
	var changed blockio.Changes
	if m.ParentID != "" {
		// The parent's block map in the source says what the backup changed; without it
		// (pruned, damaged) the copy reads in full.
		if pm, perr := s.repo.GetManifest(ctx, m.ParentID); perr == nil && pm.Size == m.Size {
			if ranges, cerr := s.repo.Changed(ctx, m, pm); cerr == nil {
				parent = pm
				for _, r := range ranges {
					changed = append(changed, blockio.Extent{Start: r[0], End: r[1]})
				}
			} else if ctx.Err() != nil {
				return nil, cerr
			} else {
				s.log.Warn("copy: cannot compare a backup with its parent: it is read in full", "backup_id", m.ID, "parent_id", pm.ID, "error", cerr)
			}
		}
	}
	src := s.repo.Image(m).Source(ctx)
	res, err := dst.storeCopy(ctx, m, src, parent, changed, lk, o.Progress)
	if errors.Is(err, repo.ErrCorrupt) {
		return nil, fmt.Errorf("%w; nothing was copied: the backup is damaged in this repository ('cairn backup verify %s' lists what it lost)", err, m.ID)
	}
	return res, err
}

// hasBackup returns the backup with that id when this repository has it (in the index, or a
// manifest the index has not adopted yet: then as the manifest says).
func (s *Service) hasBackup(ctx context.Context, id string) (*index.Backup, error) {
	if b, err := s.idx.Backup(id); err == nil {
		return b, nil
	} else if !errors.Is(err, index.ErrNotFound) {
		return nil, err
	}
	has, err := s.repo.HasManifest(ctx, id)
	if err != nil || !has {
		return nil, err
	}
	m, err := s.repo.GetManifest(ctx, id)
	if err != nil {
		return nil, err
	}
	b := recordOf(m)
	if deleted, err := s.repo.Deleted(ctx, id); err != nil {
		return nil, err
	} else if deleted {
		b.Status = index.BackupDeleting // its delete began there and did not finish
	}
	return b, nil
}

// storeCopy writes the backup m, read from src (the source repository's verified image of
// it), into this repository, built on this repository's copy of parent (m's parent in the
// source) when there is one and changed says what differs from it. srcLock is the source's
// lock: a copy whose source lock was lost is not committed.
func (s *Service) storeCopy(ctx context.Context, m *repo.Manifest, src repo.Source, parent *repo.Manifest, changed blockio.Changes,
	srcLock *repo.Lock, progress func(done, total int64)) (*CopyResult, error) {
	lk, err := s.repo.Lock(ctx, repo.LockShared, "copy")
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	project := m.Project
	if project == "" {
		project = DefaultProject
	}
	// As an import: the copy counts against the project's quota here, and over it nothing
	// is stored. This service is the copy's own, so holding the quota lock until the record
	// is written (release) keeps no other backup waiting.
	release, drop, err := s.reserveQuota(ctx, project, m.ID, m.Size)
	if err != nil {
		return nil, fmt.Errorf("copy backup %s: %w", m.ID, err)
	}
	defer release()
	committed := false
	defer func() {
		if !committed {
			drop()
		}
	}()
	o := repo.WriteOptions{Lock: lk, Workers: s.cfg.Workers, Uploads: s.cfg.transfers(), Progress: progress}
	mode, fallback, base := ReadCopy, "", ""
	if parent != nil {
		if base, fallback, err = s.copyBase(ctx, parent, src, changed, &o); err != nil {
			return nil, fmt.Errorf("copy backup %s: %w", m.ID, err)
		}
		if base != "" {
			mode = ReadCopyDiff
		}
	}
	var out *index.Backup
	copied := true
	_, err = s.repo.Write(ctx, src, o, func(res repo.WriteResult) error {
		if err := srcLock.Confirm(ctx); err != nil {
			return fmt.Errorf("the source repository's lock: %w", err)
		}
		// One commit of the backup here at a time, from the look for its manifest to its store
		// or withdrawal: two copies of it that both found it missing (a policy's and an
		// admin's, on two gateways) both stored it, and the one whose store failed, or whose
		// lock was lost, withdrew the other's committed copy (the id is the source's, not a
		// new one), which the source had recorded as copied
		// [TestACopyDoesNotWithdrawAnotherCommittedMeanwhile].
		cl, err := s.claimManifest(ctx, m.ID)
		if err != nil {
			return err
		}
		defer cl.Unlock()
		if have, err := s.repo.HasManifest(ctx, m.ID); err != nil {
			return err
		} else if have {
			// Another copy committed it meanwhile: found here, as one here before. The blocks
			// this one stored are garbage, gc's to reclaim.
			copied = false
			out, err = s.adoptStored(ctx, m.ID)
			return err
		}
		c := *m
		c.Root, c.RootLevel, c.Stats, c.CommittedAt, c.UpdatedAt = res.Root, res.RootLevel, res.Stats, now(), time.Time{}
		c.ReadMode, c.ReadFallback, c.Error, c.Verified, c.Restored = mode, fallback, "", nil, nil // neither verified nor restored there
		// The repositories the source backup was copied to are the source's to know.
		c.Copies = nil
		if base != "" {
			c.ParentID, c.Incremental = base, true
		}
		if err := cl.Check(); err != nil {
			return fmt.Errorf("its commit claim: %w", err)
		}
		// Copied on purpose: a tombstone of an earlier delete here must not undo it.
		if err := s.repo.Undelete(ctx, c.ID); err != nil {
			return err
		}
		if err := s.repo.PutManifest(ctx, &c); err != nil {
			// It may have landed all the same (a lost reply): withdrawn, as a backup's is;
			// under the claim it is this copy's own.
			return s.withdrawManifest(c.ID, err)
		}
		// As a backup's commit: a Put that landed after the lock may have gone stale is
		// withdrawn (design.md, "A manifest that lands late").
		if err := lk.Check(); err != nil {
			return s.withdrawManifest(c.ID, err)
		}
		b, err := s.adoptManifest(ctx, &c)
		if errors.Is(err, ErrExists) {
			b, err = s.idx.Backup(c.ID) // the catch-up adopted it first
		}
		out = b
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("copy backup %s: %w", m.ID, err)
	}
	if !copied {
		s.log.Info("backup copied in meanwhile by another copy", "backup_id", out.ID)
		return &CopyResult{Backup: out}, nil
	}
	committed = true
	time.AfterFunc(reservationGrace, drop)
	s.notifyChange()
	s.syncIndex()
	s.log.Info("backup copied in", "backup_id", out.ID, "base", base, "read_mode", mode, "new_bytes", out.Stats.NewBytes)
	return &CopyResult{Backup: out, Copied: true, Base: base}, nil
}

// adoptStored records the backup whose manifest this repository holds, committed by another
// gateway's copy or import of it, unless this gateway's index has it already.
func (s *Service) adoptStored(ctx context.Context, id string) (*index.Backup, error) {
	m, err := s.repo.GetManifest(ctx, id)
	if err != nil {
		return nil, err
	}
	b, err := s.adoptManifest(ctx, m)
	if errors.Is(err, ErrExists) {
		b, err = s.idx.Backup(id) // the catch-up adopted it first
	}
	return b, err
}

// copyBase sets o up to build the copy on this repository's copy of parent, when there is
// one to trust, and returns its id; else the reason the copy reads in full, if any.
func (s *Service) copyBase(ctx context.Context, parent *repo.Manifest, src repo.Source, changed blockio.Changes, o *repo.WriteOptions) (base, fallback string, err error) {
	b, err := s.idx.Backup(parent.ID)
	if err != nil || b.Status != index.BackupAvailable || b.Size != parent.Size {
		return "", "", nil // the parent was not copied here: nothing to build on
	}
	if lv := b.LastVerify; lv.Damaged() {
		// As for a backup's incremental (StartBackup): a copy built on it keeps its unchanged
		// blocks without reading them, so it would be damaged the same way. A full copy looks
		// every block up and stores again those whose copy a reader marked damaged here, once
		// this gateway knows the marks (another gateway's verification may have set them).
		if _, err := s.repo.LearnDamaged(ctx); err != nil {
			return "", "", fmt.Errorf("learn the repository's damaged copies before a full copy: %w", err)
		}
		return "", fmt.Sprintf("the copy of parent backup %s here was found damaged (%s lost, verified %s): read in full, which stores the lost blocks again",
			b.ID, units.Bytes(lv.LostBytes), lv.At.UTC().Format("2006-01-02 15:04 MST")), nil
	}
	// Under this lock no gc removes the base's blocks, once its manifest is seen.
	if has, err := s.repo.HasManifest(ctx, b.ID); err != nil || !has {
		return "", fmt.Sprintf("the copy of parent backup %s is being deleted here: read in full", b.ID), nil
	}
	rp := &repo.Parent{Root: b.Root, RootLevel: b.RootLevel, Size: b.Size, DataBlocks: b.Stats.DataBlocks}
	probes := unchangedBlocks(changed, b.Size, int64(s.repo.Config().BlockSize), copyProbes)
	differ, _, err := s.repo.DifferFromParent(ctx, src, rp, probes)
	if err != nil {
		return "", fmt.Sprintf("cannot compare with the copy of parent backup %s: %v: read in full", b.ID, err), nil
	}
	if len(differ) > 0 {
		s.log.Error("a copy here of a backup differs from the backup", "backup_id", b.ID, "blocks", len(differ), "of", len(probes))
		return "", fmt.Sprintf("the copy of parent backup %s differs from it in %d of %d sampled blocks: read in full; check it with 'cairn backup verify %s'",
			b.ID, len(differ), len(probes), b.ID), nil
	}
	o.Parent, o.Changes = rp, changed
	return b.ID, "", nil
}

// unchangedBlocks picks up to n blocks at random outside changed, of a volume of size bytes.
func unchangedBlocks(changed blockio.Changes, size, bs int64, n int) []int64 {
	blocks := (size + bs - 1) / bs
	var out []int64
	for try := 0; try < 8*n && len(out) < n && blocks > 0; try++ {
		b := rand.Int64N(blocks)
		if s, _, err := changed.NextChange(b * bs); err == nil && s < min((b+1)*bs, size) {
			continue // the block is (partly) changed
		}
		out = append(out, b)
	}
	return out
}

// Destination is another repository copies go to (CopyBackup) and how to reach it: empty S3
// settings are the source service's.
type Destination struct {
	Repo, StateDir, Password                          string
	Endpoint, Region, AccessKey, SecretKey, PathStyle string
}

// ReadDestination reads a destination from a cairn configuration file (the keys of
// contrib/config.example.json that say where a repository is: repo, endpoint, region,
// path_style, access_key, secret_key, state_dir, password_file, whose passphrase it reads; other
// keys are left to the file's other users), so another repository's S3 service and keys,
// secret ones included, stay in a file of their own.
func ReadDestination(path string) (Destination, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Destination{}, fmt.Errorf("destination's configuration: %w", err)
	}
	var f struct {
		Repo         string `json:"repo"`
		Endpoint     string `json:"endpoint"`
		Region       string `json:"region"`
		PathStyle    string `json:"path_style"`
		AccessKey    string `json:"access_key"`
		SecretKey    string `json:"secret_key"`
		StateDir     string `json:"state_dir"`
		PasswordFile string `json:"password_file"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return Destination{}, invalidf("destination's configuration %s: not a JSON object of settings (as contrib/config.example.json): %v", path, err)
	}
	d := Destination{Repo: f.Repo, StateDir: f.StateDir, Endpoint: f.Endpoint, Region: f.Region, AccessKey: f.AccessKey,
		SecretKey: f.SecretKey, PathStyle: f.PathStyle}
	if f.PasswordFile != "" {
		if d.Password, err = readPassphrase(f.PasswordFile); err != nil {
			return Destination{}, fmt.Errorf("destination's configuration %s: %w", path, err)
		}
	}
	return d, nil
}

// readPassphrase reads a passphrase file (its last line end is not the passphrase's).
func readPassphrase(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("passphrase file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// OpenDestination opens another repository for copies (CopyBackup), with this service's
// settings (S3 endpoint and keys where d gives none, workers, locks, logger) and its bandwidth
// limits, shared with its own jobs. The caller closes it. Only an admin may: copies are, and a
// member would otherwise be asked for the destination's passphrase only to be refused.
func (s *Service) OpenDestination(ctx context.Context, d Destination) (*Service, error) {
	if _, err := adminOf(ctx, "copy backups to another repository"); err != nil {
		return nil, err
	}
	return s.openDestination(ctx, d)
}

// openDestination is OpenDestination for a policy's copies, whose target an admin gave.
func (s *Service) openDestination(ctx context.Context, d Destination) (*Service, error) {
	if d.Repo == "" {
		return nil, invalidf("no destination repository: give one (a directory or s3://BUCKET/PREFIX)")
	}
	c := s.cfg
	c.Repo, c.StateDir, c.Password, c.ReadOnly, c.ChunkCacheBytes = d.Repo, d.StateDir, d.Password, false, 0
	// Its uploads and reads count against this service's limits, with every other job's
	// [TestCopySharesTheGatewaysLimits].
	c.sharedMeters = &s.meters
	sameService := !stack.IsRemote(c.Repo) || d.Endpoint == "" || d.Endpoint == s.cfg.Endpoint
	if SameRepository(c.Repo, s.cfg.Repo) && sameService {
		return nil, invalidf("%s is the repository the backups are in: copy them to another one, made with 'cairn repo init'", d.Repo)
	}
	for _, o := range []struct {
		to   *string
		from string
	}{{&c.Endpoint, d.Endpoint}, {&c.Region, d.Region}, {&c.AccessKey, d.AccessKey},
		{&c.SecretKey, d.SecretKey}, {&c.PathStyle, d.PathStyle}} {
		if o.from != "" {
			*o.to = o.from
		}
	}
	return Open(ctx, c)
}

// CopyTarget is where a policy copies its volumes' backups after each run: another
// repository (CopyTo), or a configuration file that says where and how to reach it
// (CopyConfig, ReadDestination; CopyTo then only names the repository instead of its repo),
// the passphrase file that opens it, and the state dir of its index there ("": the default).
// The gateway that runs the policy reads the files at each run. Admins only.
type CopyTarget struct {
	CopyTo           string `json:"copy_to,omitempty"`
	CopyConfig       string `json:"copy_config,omitempty"`
	CopyPasswordFile string `json:"copy_password_file,omitempty"`
	CopyStateDir     string `json:"copy_state_dir,omitempty"`
}

// hiddenTarget stands for a copy target a member is not shown.
const hiddenTarget = "another repository (set by an admin)"

// shownTo is t as caller c may see it: an admin sees where and how, a member only that the
// backups are copied (the destination is an admin's to know, as a copy's job is).
func (t CopyTarget) shownTo(c Caller) CopyTarget {
	if c.Admin || t == (CopyTarget{}) {
		return t
	}
	return CopyTarget{CopyTo: hiddenTarget}
}

// Where says where the copies go, for people.
func (t CopyTarget) Where() string {
	switch {
	case t.CopyTo != "":
		return t.CopyTo
	case t.CopyConfig != "":
		return "as " + t.CopyConfig + " says"
	}
	return ""
}

// validate checks a copy target an admin gives a policy.
func (t CopyTarget) validate(c Caller) error {
	if t == (CopyTarget{}) {
		return nil
	}
	if !c.Admin {
		return wrapf(ErrDenied, "only an admin may make a policy copy its backups to another repository")
	}
	if t.CopyTo == "" && t.CopyConfig == "" {
		return invalidf("--copy-password-file and --copy-state-dir go with --copy-to REPO or --copy-config FILE")
	}
	if t.CopyTo != "" {
		if _, err := stack.ParseURL(t.CopyTo); err != nil {
			return invalidf("--copy-to %q: give a directory or s3://BUCKET/PREFIX: %v", t.CopyTo, err)
		}
		if !stack.IsRemote(t.CopyTo) && !filepath.IsAbs(strings.TrimPrefix(t.CopyTo, "file://")) {
			return invalidf("--copy-to %q: give an absolute path (the gateway that runs the policy opens it)", t.CopyTo)
		}
	}
	for _, p := range []struct{ flag, path string }{{"--copy-config", t.CopyConfig}, {"--copy-password-file", t.CopyPasswordFile}, {"--copy-state-dir", t.CopyStateDir}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			return invalidf("%s %q: give an absolute path (the gateway that runs the policy reads it)", p.flag, p.path)
		}
	}
	return nil
}

// Destination reads the target's files into the destination they say: the configuration
// file's settings, with CopyTo, CopyStateDir and the passphrase file's over them.
func (t CopyTarget) Destination() (Destination, error) {
	var d Destination
	if t.CopyConfig != "" {
		var err error
		if d, err = ReadDestination(t.CopyConfig); err != nil {
			return d, err
		}
	}
	d.Repo = cmp.Or(t.CopyTo, d.Repo)
	d.StateDir = cmp.Or(t.CopyStateDir, d.StateDir)
	if t.CopyPasswordFile != "" {
		var err error
		if d.Password, err = readPassphrase(t.CopyPasswordFile); err != nil {
			return d, err
		}
	}
	return d, nil
}

// policyCopies copies every available backup of the policy's volumes that the policy's copy
// target lacks, oldest first; one failing stops none.
func (s *Service) policyCopies(ctx context.Context, p *Policy, vols []*index.Volume) error {
	where := p.Where()
	d, err := p.CopyTarget.Destination()
	if err != nil {
		return fmt.Errorf("copy to %s: %w", where, err)
	}
	dst, err := s.openDestination(ctx, d)
	if err != nil {
		return fmt.Errorf("copy to %s: %w", where, err)
	}
	defer dst.Close()
	var todo []*index.Backup
	for _, v := range vols {
		bs, err := s.idx.VolumeBackups(v.ID)
		if err != nil {
			return err
		}
		for _, b := range bs {
			if b.Project == p.Project && b.Status == index.BackupAvailable {
				todo = append(todo, b)
			}
		}
	}
	slices.SortFunc(todo, func(a, b *index.Backup) int { return a.CreatedAt.Compare(b.CreatedAt) })
	var first error
	copied, skipped := 0, 0
	for _, b := range todo {
		if ctx.Err() != nil {
			return cmp.Or(first, ctx.Err())
		}
		res, err := s.copyBackup(ctx, b, dst, CopyOptions{SkipDeletedThere: true})
		if err != nil {
			s.log.Warn("policy copy failed", "policy", p.Name, "backup_id", b.ID, "to", where, "error", err)
			first = cmp.Or(first, fmt.Errorf("copy of backup %s to %s: %w", b.ID, where, err))
			continue
		}
		if res.Copied {
			copied++
		}
		if res.Skipped != "" {
			skipped++
		}
	}
	s.log.Info("policy copies", "policy", p.Name, "to", where, "copied", copied, "deleted_there", skipped, "backups", len(todo))
	return first
}

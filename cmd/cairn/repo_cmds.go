package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"

	"github.com/cairn-backup/cairn/units"
)

// RepoCmd groups repository commands.
type RepoCmd struct {
	Init         RepoInitCmd     `cmd:"" help:"Create a repository."`
	Check        RepoCheckCmd    `cmd:"" help:"Check that the index and the backend agree."`
	Stats        RepoStatsCmd    `cmd:"" help:"Show sizes, dedup and compression ratios."`
	Gc           RepoGCCmd       `cmd:"" name:"gc" help:"Reclaim the space that no stored backup needs."`
	RebuildIndex RepoRebuildCmd  `cmd:"" name:"rebuild-index" help:"Rebuild the index from the backend alone."`
	Locks        RepoLocksCmd    `cmd:"" help:"List the repository's locks (every process and host that uses it)."`
	Unlock       RepoUnlockCmd   `cmd:"" help:"Remove stale repository locks (with --force, all of them)."`
	Repair       RepoRepairCmd   `cmd:"" help:"Verify every blob, store lost blocks again from registered volumes that still hold them, list what each damaged backup has lost, and forget the ones named."`
	Passwd       RepoPasswdCmd   `cmd:"" help:"Change the passphrase of an encrypted repository."`
	Key          RepoKeyCmd      `cmd:"" help:"List, add or remove the repository's keys (a passphrase each, for admins or gateway hosts)."`
	Settings     RepoSettingsCmd `cmd:"" help:"Show or change repository-wide settings (--min-age)."`
}

// RepoInitCmd creates a repository.
type RepoInitCmd struct {
	BlockSize   string `help:"Block size: the unit of change tracking and dedup." default:"16K"`
	Compression string `help:"Compression: ${enum}." enum:"zstd,lz4,none" default:"zstd"`
	Encryption  string `help:"Encryption at rest: ${enum}; aes-256-gcm under a passphrase (--password-file, CAIRN_PASSWORD or a prompt)." enum:"aes-256-gcm,none" default:"aes-256-gcm"`
	ObjectLock  string `help:"Make every backup immutable for --retention with S3 Object Lock (the bucket must have object lock enabled): ${enum}; compliance cannot be lifted by anyone, the bucket's owner included." enum:"none,governance,compliance" default:"none"`
	Retention   string `help:"How long each object stays locked after it is written or extended by gc (with --object-lock): 30d, 12h, 90s." placeholder:"DURATION"`
	KeyLabel    string `help:"A label for the passphrase's key in 'repo key list' (whose it is)." placeholder:"LABEL"`
}

// objectLock reads --object-lock and --retention.
func (c *RepoInitCmd) objectLock() (*repo.ObjectLock, error) {
	if c.ObjectLock == "none" {
		if c.Retention != "" {
			return nil, gateway.Errorf(gateway.ErrInvalid, "--retention needs --object-lock governance or compliance")
		}
		return nil, nil
	}
	if c.Retention == "" {
		return nil, gateway.Errorf(gateway.ErrInvalid, "--object-lock needs --retention (30d, 12h, 90s)")
	}
	d, err := parseRetention(c.Retention)
	if err != nil {
		return nil, gateway.Errorf(gateway.ErrInvalid, "--retention: %v", err)
	}
	return &repo.ObjectLock{Mode: backend.LockMode(c.ObjectLock), RetentionSeconds: int64(d / time.Second)}, nil
}

// Run creates the repository.
func (c *RepoInitCmd) Run(ctx context.Context, g *Globals) error {
	bs, err := parseSize(c.BlockSize)
	if err != nil {
		return gateway.Errorf(gateway.ErrInvalid, "--block-size: %v", err)
	}
	var password string
	o := repo.InitOptions{BlockSize: int(bs), Compression: repo.Compression(c.Compression), Encryption: c.Encryption, KeyLabel: c.KeyLabel}
	if o.ObjectLock, err = c.objectLock(); err != nil {
		return err
	}
	o.AskPassword = func() (string, error) {
		p, err := g.readPassword("new repository passphrase: ", true)
		password = p
		if errors.Is(err, repo.ErrPasswordRequired) {
			return "", usageError("a new repository is encrypted (aes-256-gcm) and there is no terminal to ask for its passphrase: give --password-file FILE or CAIRN_PASSWORD, or choose --encryption none")
		}
		if err == nil && p == "" {
			err = usageError("the passphrase is empty: a repository needs one to be encrypted")
		}
		return p, err
	}
	cfg, err := g.config()
	if err != nil {
		return err
	}
	made := false // a directory this command made goes again when init fails
	if !strings.Contains(cfg.Repo, "://") {
		if _, err := os.Stat(cfg.Repo); os.IsNotExist(err) {
			made = true
		}
		if err := os.MkdirAll(cfg.Repo, 0o700); err != nil {
			return fmt.Errorf("create repository directory: %w", err)
		}
	}
	rc, err := gateway.Init(ctx, cfg, o)
	if err != nil {
		if made {
			_ = os.Remove(cfg.Repo) // only if still empty
		}
		return err
	}
	s, err := gateway.Open(ctx, withPassword(cfg, password))
	if err != nil {
		return err
	}
	defer g.closeService(s)
	if rc.Encryption != repo.EncryptionNone && !g.Quiet && !g.json() {
		fmt.Fprintln(g.stderr, "keep the passphrase safe: without it no backup in this repository can be restored")
	}
	if g.json() {
		out := map[string]any{"id": rc.ID, "location": s.Location(), "block_size": rc.BlockSize,
			"compression": rc.Compression, "encryption": rc.Encryption, "index": cfg.IndexDir()}
		if l := rc.ObjectLock; l != nil {
			out["object_lock"] = l
		}
		return writeJSON(g.stdout, out)
	}
	props := [][2]string{{"id", rc.ID}, {"location", s.Location()}, {"block_size", units.Bytes(int64(rc.BlockSize))},
		{"compression", string(rc.Compression)}, {"encryption", rc.Encryption}}
	if l := rc.ObjectLock; l != nil {
		props = append(props, [2]string{"object_lock", string(l.Mode)}, [2]string{"retention", humanDuration(l.Period())})
	}
	return properties(g.stdout, append(props, [2]string{"index", cfg.IndexDir()}))
}

func withPassword(c gateway.Config, p string) gateway.Config {
	c.Password = p
	return c
}

// RepoCheckCmd checks the repository.
type RepoCheckCmd struct {
	ReadData bool    `help:"Also read every pack and verify every block against its address."`
	Sample   percent `help:"Read and verify only this percentage of the packs (above 0, at most 100, like 2.5), chosen at random; implies --read-data." placeholder:"PERCENT"`
}

// percent is a flag's share above 0 and at most 100, like 2.5; the zero value means the flag
// was not given.
type percent float64

// Decode reads the flag's value, so that every bad one gets the same usage error (exit 2).
func (p *percent) Decode(ctx *kong.DecodeContext) error {
	var s string
	if err := ctx.Scan.PopValueInto("percent", &s); err != nil {
		return err
	}
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil || !(v > 0 && v <= 100) {
		return fmt.Errorf("%q is not a percentage above 0 and at most 100, like 2.5", s)
	}
	*p = percent(v)
	return nil
}

// Run checks; problems make the exit code non-zero.
func (c *RepoCheckCmd) Run(ctx context.Context, g *Globals) error {
	o := repo.CheckOptions{ReadData: c.ReadData || c.Sample != 0, SamplePercent: float64(c.Sample)}
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	rep, err := s.Check(ctx, o)
	if err != nil {
		return err
	}
	if g.json() {
		if err := writeJSON(g.stdout, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(g.stdout, "checked %d backups, %d packs, %d blobs", rep.Backups, rep.Packs, rep.Blobs)
		switch {
		case rep.SamplePercent > 0:
			fmt.Fprintf(g.stdout, ", read %d packs (a %v%% sample), %s", rep.PacksRead, rep.SamplePercent, units.Bytes(rep.BytesRead))
		case rep.ReadData:
			fmt.Fprintf(g.stdout, ", read %d packs, %s", rep.PacksRead, units.Bytes(rep.BytesRead))
		}
		fmt.Fprintln(g.stdout)
		for _, n := range rep.Notes {
			fmt.Fprintln(g.stdout, "note:", n)
		}
		for _, p := range rep.Problems {
			fmt.Fprintln(g.stdout, "problem:", p)
		}
	}
	if !rep.OK() {
		return fmt.Errorf("%w: check found %d problems in %s", repo.ErrCorrupt, rep.ProblemCount, s.Location())
	}
	if !g.json() {
		fmt.Fprintln(g.stdout, "no problems found")
	}
	return nil
}

// RepoStatsCmd prints repository statistics.
type RepoStatsCmd struct{}

// Run prints the statistics.
func (c *RepoStatsCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	st, err := s.RepoStats(ctx)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, st)
	}
	return properties(g.stdout, statsProperties(st))
}

// statsProperties are the rows of repo stats.
func statsProperties(st *gateway.Stats) [][2]string {
	props := [][2]string{
		{"location", st.Location}, {"backup_service", st.Driver}, {"block_size", units.Bytes(int64(st.BlockSize))},
		{"compression", st.Compression}, {"encryption", st.Encryption},
		{"volumes", fmt.Sprint(st.Volumes)}, {"backups", fmt.Sprint(st.Backups)},
		{"logical_bytes", units.Bytes(st.LogicalBytes)}, {"data_bytes", units.Bytes(st.DataBytes)},
		{"unique_bytes", units.Bytes(st.UniquePlainBytes)}, {"stored_bytes", units.Bytes(st.StoredBytes)},
		{"pack_bytes", units.Bytes(st.PackBytes)}, {"packs", fmt.Sprint(st.Packs)}, {"blobs", fmt.Sprint(st.Blobs)},
		{"dedup_ratio", fmt.Sprintf("%.2f", st.DedupRatio)}, {"compression_ratio", fmt.Sprintf("%.2f", st.CompressionRatio)},
		{"index_bytes", units.Bytes(st.IndexBytes)},
	}
	l := st.ObjectLock
	if l == nil {
		return props
	}
	date := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	return append(props, [][2]string{
		{"object_lock", l.Mode}, {"retention", humanDuration(time.Duration(l.RetentionSeconds) * time.Second)},
		{"locked_objects", fmt.Sprint(l.Objects - l.Unprotected)}, {"unprotected_objects", fmt.Sprint(l.Unprotected)},
		{"oldest_retain_until", date(l.Oldest)}, {"newest_retain_until", date(l.Newest)},
	}...)
}

// RepoGCCmd reclaims space.
type RepoGCCmd struct {
	DryRun bool `help:"Say what would be reclaimed; delete nothing."`
}

// Run collects garbage.
func (c *RepoGCCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	st, err := s.GC(ctx, repo.GCOptions{DryRun: c.DryRun, Log: g.logf})
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, st)
	}
	props := [][2]string{{"backups", fmt.Sprint(st.Backups)}, {"live_blobs", fmt.Sprint(st.LiveBlobs)},
		{"packs_deleted", fmt.Sprint(st.PacksDeleted)}, {"packs_repacked", fmt.Sprint(st.PacksRepacked)},
		{"packs_kept_young", fmt.Sprint(st.PacksKept)}, {"stale_locks_broken", fmt.Sprint(st.LocksBroken)},
		{"blobs_reclaimed", fmt.Sprint(st.BlobsReclaimed)}, {"bytes_freed", units.Bytes(st.BytesFreed)},
		{"temp_files_removed", fmt.Sprint(st.TempFilesRemoved)}, {"log_objects_removed", fmt.Sprint(st.LogObjectsRemoved)}}
	if st.PacksNotRepacked > 0 {
		props = append(props, [2]string{"packs_not_repacked", fmt.Sprintf("%d (no room for the packs they would be rewritten to: run gc again once there is)", st.PacksNotRepacked)})
	}
	if st.CopyBytes > 0 {
		props = append(props, [2]string{"copy_bytes", units.Bytes(st.CopyBytes) + " (copies of blobs stored in other packs, counted dead)"})
	}
	if st.DryRun {
		props = append([][2]string{{"dry_run", "yes: nothing was deleted or written; the figures are what gc would do"}}, props...)
	}
	if st.VersionsKept {
		props = append(props, [2]string{"versions_kept", "yes: the bucket keeps versions, so what gc deleted stays stored (and billed) until a lifecycle rule expires noncurrent versions (docs/reliability.md)"})
	}
	if s.Repository().Config().ObjectLock != nil {
		props = append(props, [2]string{"packs_kept_locked", fmt.Sprint(st.PacksLocked)},
			[2]string{"objects_extended", fmt.Sprint(st.ObjectsExtended)}, [2]string{"versions_removed", fmt.Sprint(st.VersionsRemoved)})
	}
	return properties(g.stdout, props)
}

// RepoLocksCmd lists the repository's locks.
type RepoLocksCmd struct{}

// Run lists the locks.
func (c *RepoLocksCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	locks, err := s.Locks(ctx)
	if err != nil {
		return err
	}
	return printLocks(g, locks)
}

func printLocks(g *Globals, locks []repo.LockInfo) error {
	if g.json() {
		if locks == nil {
			locks = []repo.LockInfo{}
		}
		return writeJSON(g.stdout, locks)
	}
	t := &table{header: []string{"ID", "Kind", "Operation", "Host", "PID", "Created", "Refreshed", "State"}}
	for _, l := range locks {
		state := "live"
		if l.Stale {
			state = "stale: " + l.Why
		}
		t.add(l.ID, string(l.Kind), l.Operation, l.Host, fmt.Sprint(l.PID),
			l.Created.Format(time.RFC3339), l.Refreshed.UTC().Format(time.RFC3339), state)
	}
	return t.write(g.stdout)
}

// RepoUnlockCmd removes stale locks.
type RepoUnlockCmd struct {
	Force bool `help:"Remove every lock, live ones too: only when no process that holds one still runs."`
}

// Run removes the locks.
func (c *RepoUnlockCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	removed, err := s.Unlock(ctx, c.Force)
	if err != nil {
		return err
	}
	if g.json() {
		return printLocks(g, removed)
	}
	fmt.Fprintf(g.stdout, "removed %d locks\n", len(removed))
	return nil
}

func (g *Globals) logf(format string, args ...any) {
	if !g.Quiet {
		fmt.Fprintf(g.stderr, format+"\n", args...)
	}
}

// RepoRebuildCmd rebuilds the index.
type RepoRebuildCmd struct{}

// Run rebuilds the index from the backend.
func (c *RepoRebuildCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	res, err := s.RebuildIndex(ctx, g.logf)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, res)
	}
	return properties(g.stdout, [][2]string{{"packs", fmt.Sprint(res.Packs)}, {"backups", fmt.Sprint(res.Backups)},
		{"volumes", fmt.Sprint(res.Volumes)}, {"snapshots", fmt.Sprint(res.Snapshots)}, {"quotas", fmt.Sprint(res.Quotas)},
		{"skipped", fmt.Sprint(res.Skipped)}, {"blobs relearned", fmt.Sprint(res.Relearned)},
		{"records corrected", fmt.Sprint(res.Corrected)}})
}

// RepoRepairCmd lists damaged backups and forgets the ones the admin names.
type RepoRepairCmd struct {
	Forget        []string `help:"Forget this damaged backup (its manifest goes; gc can then run). Repeatable." placeholder:"BACKUP"`
	ForgetDamaged bool     `help:"Forget every damaged backup, remove every lost metadata object (damaged, and its second copy too), and the second copy of every missing one."`
	RestoreMeta   bool     `help:"Store again, from its intact second copy, every metadata object that is missing (a policy, a volume's settings, a quota removed outside cairn)."`
}

// Run repairs.
func (c *RepoRepairCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	rep, err := s.Repair(ctx, gateway.RepairOptions{Forget: c.Forget, ForgetDamaged: c.ForgetDamaged, RestoreMeta: c.RestoreMeta})
	if err != nil {
		return err
	}
	if g.json() {
		if err := writeJSON(g.stdout, rep); err != nil {
			return err
		}
	} else {
		t := &table{header: []string{"Backup", "Lost", "Ranges", "Action"}}
		for _, b := range rep.Backups {
			lost, ranges := units.Bytes(b.LostBytes), byteRanges(b.Lost, 3)
			if b.Whole {
				lost, ranges = "all", "its manifest is damaged"
			}
			action := "kept: restore what survives, or --forget it"
			if b.Forgotten {
				action = "forgotten"
			}
			t.add(b.ID, lost, ranges, action)
		}
		if len(rep.Backups) > 0 {
			if err := t.write(g.stdout); err != nil {
				return err
			}
		}
		for _, id := range rep.WholeAgain {
			fmt.Fprintf(g.stdout, "backup %s restores whole again (a backup stored its lost blocks again since the check): kept\n", id)
		}
		if rep.Trailers > 0 {
			fmt.Fprintf(g.stdout, "rewrote %d packs whose trailer was damaged\n", rep.Trailers)
		}
		if rep.PackIndexes > 0 {
			fmt.Fprintf(g.stdout, "wrote %d pack index objects again from their packs' trailers\n", rep.PackIndexes)
		}
		switch rep.Config {
		case "config":
			fmt.Fprintln(g.stdout, "wrote the config again from its second copy (it was damaged or missing)")
		case "config-copy":
			fmt.Fprintln(g.stdout, "wrote the config's second copy again (damaged or missing)")
		}
		// What repair wrote again from the other copy, one line for each kind of object.
		for _, l := range []struct {
			n      int
			format string
		}{
			{rep.Keys, "mended %d key objects and their second copies\n"},
			{rep.Manifests, "wrote %d damaged manifests again from their second copies\n"},
			{rep.LostManifests, "stored %d lost manifests again from their second copies (missing, though no delete of their backups began)\n"},
			{rep.ManifestCopies, "wrote %d second copies of manifests again (damaged, missing or older than the manifest)\n"},
			{rep.Meta, "wrote %d damaged metadata objects again from their second copies\n"},
			{rep.MetaCopies, "wrote %d second copies of metadata objects again (damaged, missing, different or older than the object)\n"},
		} {
			if l.n > 0 {
				fmt.Fprintf(g.stdout, l.format, l.n)
			}
		}
		if rep.GoodCopies > 0 {
			fmt.Fprintf(g.stdout, "%d blocks whose indexed copy was damaged or missing are read from a good copy in another pack\n", rep.GoodCopies)
		}
		if rep.Forgotten > 0 {
			fmt.Fprintf(g.stdout, "%d lost blocks are in no volume here: the next full backup of a volume that holds them stores them again\n", rep.Forgotten)
		}
		switch {
		case rep.HealedNodes > 0:
			fmt.Fprintf(g.stdout, "stored again %d lost blocks and %d lost block map nodes found in volumes %s\n", rep.Healed, rep.HealedNodes, strings.Join(rep.HealedFrom, ", "))
		case rep.Healed > 0:
			fmt.Fprintf(g.stdout, "stored again %d lost blocks found in volumes %s\n", rep.Healed, strings.Join(rep.HealedFrom, ", "))
		}
	}
	left, lostMeta := 0, 0
	for _, b := range rep.Backups {
		if !b.Forgotten {
			left++
		}
	}
	for _, m := range rep.LostMeta {
		if !g.json() {
			action := "kept: 'cairn repo repair --forget-damaged' removes it"
			if m.Forgotten {
				action = "forgotten"
			}
			fmt.Fprintf(g.stdout, "metadata object %s is lost (damaged, and its second copy too): %s\n", m.MetaObject, action)
		}
		if !m.Forgotten {
			lostMeta++
		}
	}
	missing := 0
	for _, m := range rep.MissingMeta {
		if !g.json() {
			action := "kept: 'cairn repo repair --restore-meta' stores it again from the copy, '--forget-damaged' removes the copy"
			switch {
			case m.Restored:
				action = "stored again from its second copy"
			case m.Refused != "":
				action = "kept, not stored again: " + m.Refused
			case m.Forgotten:
				action = "its second copy removed"
			}
			fmt.Fprintf(g.stdout, "metadata object %s is missing while its second copy is left (removed outside cairn, or by a cairn from before 2026-12-07): %s\n", m.MetaObject, action)
		}
		if !m.Restored && !m.Forgotten {
			missing++
		}
	}
	switch {
	case missing > 0 && lostMeta+left > 0:
		return repo.Damage(fmt.Sprintf("%d backups are damaged, %d metadata objects are lost and %d are missing while their second copies are left: store the missing again with 'cairn repo repair --restore-meta' if they were lost, then forget what cannot be saved with '--forget-damaged'", left, lostMeta, missing))
	case missing > 0:
		return repo.Damage(fmt.Sprintf("%d metadata objects are missing while their second copies are left: store them again with 'cairn repo repair --restore-meta' if they were lost, or remove the copies with '--forget-damaged' if they were removed on purpose", missing))
	case lostMeta > 0 && left > 0:
		return fmt.Errorf("%w: %d backups are damaged and %d metadata objects are lost: forget them with 'cairn repo repair --forget-damaged' (or a backup with --forget ID), then run 'cairn repo gc'", repo.ErrCorrupt, left, lostMeta)
	case lostMeta > 0:
		return fmt.Errorf("%w: %d metadata objects are lost (a policy, a volume's record, a setting): remove them with 'cairn repo repair --forget-damaged', then create what they held again", repo.ErrCorrupt, lostMeta)
	case left > 0:
		return fmt.Errorf("%w: %d backups are damaged: forget those that cannot be saved with 'cairn repo repair --forget ID', then run 'cairn repo gc'", repo.ErrCorrupt, left)
	case len(rep.Backups) > 0 && !g.json():
		fmt.Fprintf(g.stdout, "forgot %d damaged backups: run 'cairn repo gc' to reclaim their space\n", len(rep.Backups))
	case len(rep.Backups) == 0 && !g.json():
		fmt.Fprintln(g.stdout, "no damaged backups")
	}
	return nil
}

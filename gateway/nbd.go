package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/cairn-backup/cairn/blockio/lvm"
	"github.com/cairn-backup/cairn/blockio/nbd"
	"github.com/cairn-backup/cairn/index"
)

// NBDOptions choose which backups the NBD server exports, and to whom.
type NBDOptions struct {
	// Project exports only that project's backups; empty exports every project's.
	Project string
	// Tokens, when set, checks every export name as TOKEN@BACKUP_ID or TOKEN@VOLUME/latest
	// (and their /lvm/VG/LV forms):
	// the token's caller must see the backup, as in the API (an admin sees every project),
	// and with Project the backup must be that project's too.
	// NBD_OPT_LIST then lists nothing, since it carries no credentials.
	Tokens func(token string) (Caller, bool)
}

// CheckNBDListen refuses an NBD address beyond loopback that nothing guards: NBD has no
// authentication of its own, so beyond loopback exports need tokens or a project the admin
// chose to open to anyone who can connect.
func CheckNBDListen(addr string, o NBDOptions) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return invalidf("NBD address %q: %v: give HOST:PORT, e.g. 127.0.0.1:10809", addr, err)
	}
	if o.Tokens != nil || o.Project != "" || isLoopback(host) {
		return nil
	}
	return invalidf("NBD address %s reaches beyond loopback, and NBD has no authentication of its own: give --tokens FILE (export names are then TOKEN@BACKUP_ID) or --project P to export one project's backups to anyone who can connect", addr)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ServeNBD serves every available backup over NBD on l until ctx ends: export names are
// backup ids and VOLUME/latest, and the logical volumes inside them as .../lvm/VG/LV (see
// NBDExports).
func (s *Service) ServeNBD(ctx context.Context, l net.Listener, o NBDOptions) error {
	return nbd.NewServer(s.NBDExports(o), s.log).Serve(ctx, l)
}

// NBDExports resolves NBD export names to backups: a backup id names that backup, and
// VOLUME/latest (a volume's name or id) the volume's newest committed backup. Either followed
// by /lvm/VG/LV names a logical volume inside that backup's image, found by blockio/lvm under
// the names the FUSE tree shows in lvm/ (the VG's name, with "-<short uuid>" where two share
// it): its size is the LV's and its reads and block status follow the LV's mapping. Only
// committed backups (available or being restored) are exported; each is read through repo.Image, so holes stay holes and a
// block that fails verification fails the read.
type NBDExports struct {
	s *Service
	o NBDOptions
}

var _ nbd.Exports = (*NBDExports)(nil)

// NBDExports returns the exports the NBD server serves.
func (s *Service) NBDExports(o NBDOptions) *NBDExports { return &NBDExports{s: s, o: o} }

const latestSuffix = "/latest"

// unknownf is a refusal the client sees as NBD_REP_ERR_UNKNOWN.
func unknownf(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), nbd.ErrUnknownExport)
}

// Lookup returns the image a name exports.
func (e *NBDExports) Lookup(ctx context.Context, name string) (nbd.Export, error) {
	visible := e.visible
	ref := name
	if e.o.Tokens != nil {
		token, rest, ok := strings.Cut(name, "@")
		c, known := e.o.Tokens(token)
		if !ok || !known {
			// The name is not echoed: it may hold a token.
			return nil, unknownf("this server checks tokens: name the export TOKEN@BACKUP_ID or TOKEN@VOLUME/latest with a valid token")
		}
		visible = func(b *index.Backup) bool { return e.visible(b) && c.sees(b.Project) }
		ref = rest
	}
	ref, vg, lv := parseExportName(ref)
	// What another process stored since this index last looked is exported at once: a
	// volume's latest is resolved after a catch-up, and an id this index does not know is
	// looked up again after one ('cairn nbd' runs no other catch-up).
	latest := strings.HasSuffix(ref, latestSuffix)
	if latest {
		e.catchUp(ctx)
	}
	b, err := e.backup(ref, visible)
	if errors.Is(err, nbd.ErrUnknownExport) && !latest {
		e.catchUp(ctx)
		b, err = e.backup(ref, visible)
	}
	if err != nil {
		return nil, err
	}
	m, err := e.s.manifestOf(ctx, b)
	if err != nil {
		return nil, err
	}
	img := e.s.repo.Image(m)
	if vg == "" {
		return img, nil
	}
	v, err := lvm.OpenVolume(ctx, img, vg, lv)
	switch {
	case errors.Is(err, lvm.ErrNoVolume):
		return nil, unknownf("backup %s holds no logical volume %s/%s: names are those of lvm/ in 'cairn mount' (%v)", b.ID, vg, lv, err)
	case errors.Is(err, lvm.ErrNotExposed):
		return nil, unknownf("backup %s: %v", b.ID, err)
	case err != nil:
		return nil, fmt.Errorf("backup %s: %w", b.ID, err)
	}
	return v, nil
}

// catchUp brings the index up to date with what other processes stored and deleted; when it
// cannot, the export is resolved from the index as it is.
func (e *NBDExports) catchUp(ctx context.Context) {
	if err := e.s.CatchUp(ctx); err != nil && ctx.Err() == nil {
		e.s.log.Warn("cannot catch up with the repository", "error", err)
	}
}

// lvmSuffix ends a backup's export name where a logical volume's VG/LV follows.
const lvmSuffix = "/lvm"

// parseExportName splits REF/lvm/VG/LV into the backup's reference and the logical volume;
// any other name is a backup's reference with vg and lv empty. VG and LV names never hold
// a '/' (lvm.PathName), so the last two components are theirs; REF must be a backup id
// (no '/') or end in /latest. A volume whose name itself looks like X/lvm/Y is reached by
// VOLUME_ID/latest.
func parseExportName(name string) (ref, vg, lv string) {
	rest, lv, ok := cutLast(name)
	if !ok {
		return name, "", ""
	}
	rest, vg, ok = cutLast(rest)
	if !ok {
		return name, "", ""
	}
	ref, ok = strings.CutSuffix(rest, lvmSuffix)
	if !ok || ref == "" || vg == "" || lv == "" || (strings.Contains(ref, "/") && !strings.HasSuffix(ref, latestSuffix)) {
		return name, "", ""
	}
	return ref, vg, lv
}

// cutLast splits s at its last '/'.
func cutLast(s string) (before, after string, ok bool) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

// visible says whether a backup is exported without tokens: a committed one, being restored
// or not. When only available backups were, VOLUME/latest served the backup before the
// newest while the newest was restored [TestNBDExportsABackupBeingRestored].
func (e *NBDExports) visible(b *index.Backup) bool {
	return b.Status.Committed() && (e.o.Project == "" || b.Project == e.o.Project)
}

// backup resolves a backup id or VOLUME/latest among the visible backups.
func (e *NBDExports) backup(ref string, visible func(*index.Backup) bool) (*index.Backup, error) {
	idx := e.s.idx
	if vol, ok := strings.CutSuffix(ref, latestSuffix); ok {
		vs, err := e.volumes(vol, visible)
		if err != nil {
			return nil, err
		}
		switch len(vs) {
		case 0:
			return nil, unknownf("no volume %s with an available backup", vol)
		case 1:
			return vs[0].latest, nil
		}
		return nil, unknownf("%d volumes are named %s: use VOLUME_ID%s", len(vs), vol, latestSuffix)
	}
	b, err := idx.Backup(ref)
	if err != nil && !errors.Is(err, index.ErrNotFound) {
		return nil, err
	}
	// Another project's backup is not found, not forbidden, as in the API.
	if err != nil || !visible(b) {
		return nil, unknownf("no available backup %s: export names are backup ids and VOLUME%s, either followed by /lvm/VG/LV for a logical volume inside ('cairn backup list' shows them)", ref, latestSuffix)
	}
	return b, nil
}

// exportedVolume is a volume and its newest visible backup.
type exportedVolume struct {
	v      *index.Volume
	latest *index.Backup
}

// volumes returns the volumes with that id, or else that name, that have a visible backup;
// ref "" returns every such volume.
func (e *NBDExports) volumes(ref string, visible func(*index.Backup) bool) ([]exportedVolume, error) {
	all, err := e.s.idx.Volumes()
	if err != nil {
		return nil, err
	}
	var byID, byName []exportedVolume
	for _, v := range all {
		if ref != "" && v.ID != ref && v.Name != ref {
			continue
		}
		bs, err := e.s.idx.VolumeBackups(v.ID)
		if err != nil {
			return nil, err
		}
		for i := len(bs) - 1; i >= 0; i-- {
			if visible(bs[i]) {
				ev := exportedVolume{v, bs[i]}
				if v.ID == ref {
					byID = append(byID, ev)
				} else {
					byName = append(byName, ev)
				}
				break
			}
		}
	}
	// A volume that is gone (deleted, unmanaged) keeps its backups, and is named by its id,
	// as the FUSE tree lists it [TestNBDExportsTheLatestBackupOfADeletedVolume].
	gone, err := e.s.idx.GoneVolumes(visible)
	if err != nil {
		return nil, err
	}
	for _, g := range gone {
		if ref == "" || g.ID == ref {
			byID = append(byID, exportedVolume{&index.Volume{ID: g.ID, Name: g.ID}, g.Backups[len(g.Backups)-1]})
		}
	}
	if len(byID) > 0 {
		return byID, nil
	}
	return byName, nil
}

// List names every exported backup by id and every volume with one as NAME/latest (or
// VOLUME_ID/latest where names repeat). It does not list the logical volumes inside them:
// that would read every image's LVM metadata for one listing. With tokens it refuses: a
// listing has no credentials.
func (e *NBDExports) List(ctx context.Context) ([]string, error) {
	if e.o.Tokens != nil {
		return nil, errors.New("this server checks tokens and NBD_OPT_LIST carries none: name the export TOKEN@BACKUP_ID ('cairn backup list' shows the ids)")
	}
	e.catchUp(ctx) // as Lookup: name what other processes stored, not what they deleted
	bs, err := e.s.idx.Backups()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, b := range bs {
		if e.visible(b) {
			names = append(names, b.ID)
		}
	}
	vs, err := e.volumes("", e.visible)
	if err != nil {
		return nil, err
	}
	count := map[string]int{}
	for _, ev := range vs {
		count[ev.v.Name]++
	}
	for _, ev := range vs {
		name := ev.v.Name
		if count[name] > 1 || name == "" || strings.Contains(name, "@") {
			name = ev.v.ID
		}
		names = append(names, name+latestSuffix)
	}
	slices.Sort(names)
	return names, nil
}

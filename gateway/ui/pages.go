package ui

import (
	"cmp"
	"errors"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
)

// volumeRow is a line of the volumes page.
type volumeRow struct {
	*index.Volume
	InUse    string
	Last     *index.Backup
	Backups  int
	Policies []string
}

func (s *server) volumesPage(w http.ResponseWriter, r *request) error {
	inv, err := s.svc.Inventory(r.ctx, r.all)
	if err != nil {
		return err
	}
	// The gone volumes below are the page's own: the inventory's list stays as it was.
	vols, byVolume, policies := slices.Clone(inv.Volumes), inv.ByVolume, inv.Policies
	type key struct{ project, name string }
	covered := map[key][]string{}
	for _, p := range policies {
		for _, n := range p.VolumeNames {
			covered[key{p.Project, n}] = append(covered[key{p.Project, n}], p.Name)
		}
	}
	var rows []volumeRow
	known := make(map[string]bool, len(vols))
	for _, v := range vols {
		known[v.ID] = true
	}
	// A deleted volume's backups stay: it is listed (status deleted, linked by its id), or
	// they could not be reached here at all [TestConsoleShowsTheBackupsOfADeletedVolume].
	for id, bs := range byVolume {
		if !known[id] && id != "" {
			vols = append(vols, goneVolume(id, bs))
		}
	}
	for _, v := range vols {
		row := volumeRow{Volume: v, Policies: covered[key{v.Project, v.Name}], Backups: len(byVolume[v.ID]), Last: gateway.LastCommitted(byVolume[v.ID])}
		if v.Status != volumeGone {
			row.InUse, _ = s.svc.VolumeInUse(r.ctx, v)
		}
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Project != rows[j].Project {
			return rows[i].Project < rows[j].Project
		}
		return rows[i].Name < rows[j].Name
	})
	var projects []string
	if r.sess.caller.Admin {
		projects = s.projects(r)
	}
	// What needs attention heads the first page an admin sees; the page stands without it.
	var concerns []gateway.Concern
	if ov, err := s.svc.Overview(r.ctx, gateway.OverviewOptions{All: r.all, Inventory: inv}); err == nil {
		concerns = ov.Concerns
	}
	s.render(w, r.Request, r.sess, http.StatusOK, "volumes", view{Title: "Volumes", Nav: "volumes",
		Data: map[string]any{"Rows": rows, "Projects": projects, "Concerns": concerns}})
	return nil
}

// projects are the projects an admin may switch to: those that hold volumes or backups.
func (s *server) projects(r *request) []string {
	ctx := r.ctx
	seen := map[string]bool{r.sess.caller.Project: true, r.sess.project: true}
	if vols, err := s.svc.ListVolumes(ctx, true); err == nil {
		for _, v := range vols {
			seen[v.Project] = true
		}
	}
	if bs, err := s.svc.ListBackups(ctx, gateway.ListFilter{AllProjects: true}); err == nil {
		for _, b := range bs {
			seen[b.Project] = true
		}
	}
	var out []string
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// backupRow is a backup on its volume's page, numbered as in the drawing.
type backupRow struct {
	*index.Backup
	N       int
	ParentN int
	Job     *gateway.JobInfo
}

// volumeGone is the status the console shows a volume in that has no record any more
// (deleted or unmanaged) but has backups.
const volumeGone index.VolumeStatus = "deleted"

// goneVolume stands in for a volume without a record that has the backups bs (oldest
// first): named as its newest backup recorded (else by its id), sized as that backup.
func goneVolume(id string, bs []*index.Backup) *index.Volume {
	last := bs[len(bs)-1]
	name := cmp.Or(last.VolumeName, id)
	return &index.Volume{ID: id, Name: name, Project: last.Project, Size: last.Size, Status: volumeGone, CreatedAt: bs[0].CreatedAt}
}

func (s *server) volumePage(w http.ResponseWriter, r *request) error {
	v, err := s.svc.VolumeByID(r.ctx, r.PathValue("id"))
	if err != nil && !errors.Is(err, gateway.ErrNotFound) {
		return err
	}
	// An admin sees the volume's backups of every project; everyone else those of their own.
	id := r.PathValue("id")
	if v != nil {
		id = v.ID
	}
	bs, lerr := s.svc.ListBackups(r.ctx, gateway.ListFilter{Volume: id, AllProjects: r.sess.caller.Admin})
	if lerr != nil {
		return lerr
	}
	if v == nil {
		// Only a volume id: the list resolves names too, which are a live volume's.
		bs = slices.DeleteFunc(bs, func(b *index.Backup) bool { return b.VolumeID != id })
		if len(bs) == 0 {
			return err // no volume, and no backups of one by that id
		}
		v = goneVolume(id, bs)
	}
	running, _, err := s.svc.Jobs(r.ctx)
	if err != nil {
		return err
	}
	jobs := map[string]*gateway.JobInfo{}
	for i := range running {
		jobs[running[i].Subject] = &running[i]
	}
	num := map[string]int{}
	var rows []backupRow
	live := false
	for i, b := range bs {
		num[b.ID] = i + 1
		row := backupRow{Backup: b, N: i + 1, ParentN: num[b.ParentID], Job: jobs[b.ID]}
		live = live || b.Status == index.BackupCreating || b.Status == index.BackupRestoring
		rows = append(rows, row)
	}
	slices.Reverse(rows)
	var inUse string
	if v.Status != volumeGone {
		inUse, _ = s.svc.VolumeInUse(r.ctx, v)
	}
	hasAvailable := slices.ContainsFunc(bs, func(b *index.Backup) bool { return b.Status.Committed() && b.Project == r.sess.project })
	s.render(w, r.Request, r.sess, http.StatusOK, "volume", view{Title: "Volume " + v.Name, Nav: "volumes", Live: live,
		Data: map[string]any{"Volume": v, "Gone": v.Status == volumeGone, "InUse": inUse, "Rows": rows, "Chain": drawChains(bs), "CanIncremental": hasAvailable}})
	return nil
}

func (s *server) backupPage(w http.ResponseWriter, r *request) error {
	b, err := s.svc.BackupByID(r.ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	v, err := s.svc.VolumeByID(r.ctx, b.VolumeID)
	if err != nil {
		v = &index.Volume{ID: b.VolumeID, Name: b.VolumeID}
	}
	var parent *index.Backup
	if b.ParentID != "" {
		parent, _ = s.svc.BackupByID(r.ctx, b.ParentID)
	}
	parents, err := s.svc.Parents()
	if err != nil {
		return err
	}
	// Restore targets: the caller's volumes, other than the backup's own while it is being read.
	vols, err := s.svc.ListVolumes(r.ctx, false)
	if err != nil {
		return err
	}
	var job *gateway.JobInfo
	for _, kind := range []string{"backup/", "restore/"} {
		if j, err := s.svc.Job(r.ctx, kind+b.ID); err == nil && (j.State == gateway.JobRunning || j.State == gateway.JobQueued) {
			job = j
		}
	}
	s.render(w, r.Request, r.sess, http.StatusOK, "backup", view{Title: "Backup " + b.ID[:8], Nav: "volumes",
		Live: b.Status == index.BackupCreating || b.Status == index.BackupRestoring,
		Data: map[string]any{"Backup": b, "Volume": v, "Parent": parent, "HasDependants": parents[b.ID], "Targets": vols, "Job": job}})
	return nil
}

func (s *server) jobsPage(w http.ResponseWriter, r *request) error {
	running, recent, err := s.svc.Jobs(r.ctx)
	if err != nil {
		return err
	}
	s.render(w, r.Request, r.sess, http.StatusOK, "jobs", view{Title: "Jobs", Nav: "jobs", Live: len(running) > 0,
		Data: map[string]any{"Running": running, "Recent": recent}})
	return nil
}

func (s *server) jobPage(w http.ResponseWriter, r *request) error {
	j, err := s.svc.Job(r.ctx, r.PathValue("kind")+"/"+r.PathValue("subject"))
	if err != nil {
		return err
	}
	live := j.State == gateway.JobRunning || j.State == gateway.JobQueued
	s.render(w, r.Request, r.sess, http.StatusOK, "job", view{Title: "Job " + j.Kind, Nav: "jobs", Live: live, Data: j})
	return nil
}

func (s *server) policiesPage(w http.ResponseWriter, r *request) error {
	ps, err := s.svc.Policies(r.ctx)
	if err != nil {
		return err
	}
	if !r.all {
		ps = slices.DeleteFunc(ps, func(p *gateway.PolicyStatus) bool {
			return p.Project != r.sess.project && r.sess.caller.Admin && p.Damaged == ""
		})
	}
	s.render(w, r.Request, r.sess, http.StatusOK, "policies", view{Title: "Policies", Nav: "policies", Data: ps})
	return nil
}

func (s *server) repositoryPage(w http.ResponseWriter, r *request) error {
	st, err := s.svc.RepoStats(r.ctx)
	if err != nil {
		return err
	}
	m, err := s.svc.Maintenance(r.ctx)
	if err != nil {
		return err
	}
	locks, err := s.svc.Locks(r.ctx)
	if err != nil {
		locks = nil // the page still shows the rest; the error is said in place
	}
	var lockErr string
	if err != nil {
		lockErr = err.Error()
	}
	settings, _ := s.svc.Settings(r.ctx)
	s.render(w, r.Request, r.sess, http.StatusOK, "repository", view{Title: "Repository", Nav: "repository",
		Data: map[string]any{"Stats": st, "Maintenance": m, "Chart": drawStored(m.Samples), "Locks": locks, "LockErr": lockErr,
			"MinAge": time.Duration(settings.MinAge), "CheckOptions": repo.CheckOptions{}}})
	return nil
}

// servicesPage shows every caller the services' state, and only admins why one is down: the
// reason is the backend's error, which names the repository's path, endpoint or bucket (the
// API's os-services and /healthz keep it for operators too).
func (s *server) servicesPage(w http.ResponseWriter, r *request) error {
	svcs := s.svc.Services(r.ctx)
	if !r.sess.caller.Admin {
		for i := range svcs {
			svcs[i].DisabledReason = ""
		}
	}
	s.render(w, r.Request, r.sess, http.StatusOK, "services", view{Title: "Services", Nav: "services", Data: svcs})
	return nil
}

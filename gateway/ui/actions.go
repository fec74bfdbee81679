package ui

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/retention"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"

	"github.com/cairn-backup/cairn/units"
)

// Every action is two POSTs of the same form: the first shows what will happen on a
// confirmation page (for prune, the dry run's decisions), whose button posts it again with
// confirm=yes; only then the gateway acts.

// field is a hidden form field carried from the first POST to the confirmation.
type field struct{ Name, Value string }

// confirmView is the confirmation page.
type confirmView struct {
	Question string
	Details  []string
	Action   string
	Fields   []field
	Button   string
	Back     string
	Danger   bool
	Prune    *gateway.PruneResult
}

// confirmed reports whether the form was posted from the confirmation page.
func confirmed(r *request) bool { return r.PostFormValue("confirm") == "yes" }

// askConfirm shows the confirmation page for the form r posted.
func (s *server) askConfirm(w http.ResponseWriter, r *request, c confirmView) error {
	c.Action = r.URL.Path
	var names []string
	for k := range r.PostForm {
		if k != "csrf" && k != "confirm" {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		c.Fields = append(c.Fields, field{k, r.PostForm.Get(k)})
	}
	s.render(w, r.Request, r.sess, http.StatusOK, "confirm", view{Title: "Confirm", Data: c})
	return nil
}

func redirect(w http.ResponseWriter, r *request, to string) error {
	http.Redirect(w, r.Request, to, http.StatusSeeOther)
	return nil
}

// backupNow starts a full or incremental backup of a volume.
func (s *server) backupNow(w http.ResponseWriter, r *request) error {
	v, err := s.svc.VolumeByID(r.ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	incremental := false
	switch mode := r.PostFormValue("mode"); mode {
	case "full", "":
	case "incremental":
		incremental = true
	default:
		return badForm("backup mode %q: full or incremental", mode)
	}
	name := strings.TrimSpace(r.PostFormValue("name"))
	if !confirmed(r) {
		kind := "a full backup"
		if incremental {
			kind = "an incremental backup (only the blocks changed since its last backup)"
		}
		q := fmt.Sprintf("Back up volume %s (%s) now, as %s?", v.Name, units.Bytes(v.Size), kind)
		return s.askConfirm(w, r, confirmView{Question: q, Details: []string{"The backup runs in the background; its progress is on the jobs page.",
			"The backup belongs to project " + r.sess.project + "."}, Button: "Back up now", Back: prefix + "volumes/" + v.ID})
	}
	b, err := s.svc.CreateBackup(r.ctx, gateway.BackupRequest{Volume: v.ID, Name: name, Incremental: incremental})
	if err != nil {
		return err
	}
	s.flash(r, "backup %s of volume %s accepted", b.ID, v.Name)
	return redirect(w, r, prefix+"jobs/backup/"+b.ID)
}

// restore writes a backup to a new volume or onto one of the caller's volumes.
func (s *server) restore(w http.ResponseWriter, r *request) error {
	b, err := s.svc.BackupByID(r.ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	req := gateway.RestoreRequest{Backup: b.ID}
	target := "a new volume"
	switch r.PostFormValue("target") {
	case "new", "":
		req.Name = strings.TrimSpace(r.PostFormValue("name"))
		if req.Name != "" {
			target = "a new volume named " + req.Name
		}
	case "existing":
		// Ids only, resolved strictly: the console never lets a form name a path.
		v, err := s.svc.VolumeByID(r.ctx, r.PostFormValue("volume"))
		if err != nil {
			return err
		}
		req.Volume = v.ID
		target = fmt.Sprintf("volume %s (%s), overwriting all of its contents", v.Name, v.ID)
	default:
		return badForm("restore target %q: new or existing", r.PostFormValue("target"))
	}
	if !confirmed(r) {
		return s.askConfirm(w, r, confirmView{Question: fmt.Sprintf("Restore backup %s (%s, %s) to %s?", b.ID, units.Bytes(b.Size), stamp(b.CreatedAt), target),
			Details: []string{"The restore runs in the background; its progress is on the jobs page."},
			Button:  "Restore", Back: prefix + "backups/" + b.ID, Danger: req.Volume != ""})
	}
	res, err := s.svc.Restore(r.ctx, req)
	if err != nil {
		return err
	}
	s.flash(r, "restore of backup %s to volume %s accepted", b.ID, res.VolumeName)
	return redirect(w, r, prefix+"jobs/restore/"+b.ID)
}

// cancel stops a running backup and removes it (an admin's force delete).
func (s *server) cancel(w http.ResponseWriter, r *request) error {
	b, err := s.svc.BackupByID(r.ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	if b.Status != index.BackupCreating {
		return &statusError{http.StatusConflict, fmt.Sprintf("backup %s is %s, not running: there is nothing to cancel", b.ID, b.Status)}
	}
	if !confirmed(r) {
		return s.askConfirm(w, r, confirmView{Question: fmt.Sprintf("Cancel backup %s, which is %s, and delete it?", b.ID, b.Status),
			Details: []string{"This is a force delete: what the backup stored so far is left for gc."},
			Button:  "Cancel the backup", Back: prefix + "backups/" + b.ID, Danger: true})
	}
	if _, err := s.svc.DeleteBackup(r.ctx, b.ID, true); err != nil {
		return err
	}
	s.flash(r, "backup %s cancelled and deleted", b.ID)
	return redirect(w, r, prefix+"volumes/"+b.VolumeID)
}

// rename gives a volume the name, description and changed-block tracking of the volume page's
// settings form. It asks nothing: it changes no backup, and the next one undoes it.
func (s *server) rename(w http.ResponseWriter, r *request) error {
	v, err := s.svc.VolumeByID(r.ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	name, description := strings.TrimSpace(r.PostFormValue("name")), strings.TrimSpace(r.PostFormValue("description"))
	u := gateway.VolumeUpdate{Name: &name, Description: &description}
	if track := r.PostFormValue("track-changes") == "yes"; r.PostFormValue("track-offered") == "yes" && track != v.TrackChanges {
		u.TrackChanges = &track
	}
	out, err := s.svc.UpdateVolume(r.ctx, v.ID, u)
	if err != nil {
		return err
	}
	var said []string
	if out.Name != v.Name {
		said = append(said, "now called "+out.Name)
	}
	if out.Description != v.Description {
		said = append(said, "description changed")
	}
	if out.TrackChanges != v.TrackChanges {
		said = append(said, map[bool]string{true: "changed-block tracking on: the next backup keeps a base", false: "changed-block tracking off: its base is given back"}[out.TrackChanges])
	}
	if len(said) == 0 {
		said = append(said, "nothing changed")
	}
	s.flash(r, "volume %s: %s", v.Name, strings.Join(said, "; "))
	return redirect(w, r, prefix+"volumes/"+v.ID)
}

// protect sets or clears a backup's protection.
func (s *server) protect(w http.ResponseWriter, r *request) error {
	b, err := s.svc.BackupByID(r.ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	on := r.PostFormValue("protect") == "yes"
	if !confirmed(r) {
		q := fmt.Sprintf("Protect backup %s? Delete, force delete and prune will refuse it until it is unprotected.", b.ID)
		if !on {
			q = fmt.Sprintf("Unprotect backup %s? Delete and prune may then remove it.", b.ID)
		}
		button := map[bool]string{true: "Protect", false: "Unprotect"}[on]
		return s.askConfirm(w, r, confirmView{Question: q, Button: button, Back: prefix + "backups/" + b.ID, Danger: !on})
	}
	if _, err := s.svc.ProtectBackup(r.ctx, b.ID, on); err != nil {
		return err
	}
	s.flash(r, "backup %s is %s", b.ID, map[bool]string{true: "protected", false: "no longer protected"}[on])
	return redirect(w, r, prefix+"backups/"+b.ID)
}

// export shows a backup's export record (backup_service and backup_url).
func (s *server) export(w http.ResponseWriter, r *request) error {
	b, err := s.svc.BackupByID(r.ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	if !confirmed(r) {
		return s.askConfirm(w, r, confirmView{Question: fmt.Sprintf("Show the export record of backup %s?", b.ID),
			Details: []string{"With it, 'cairn backup import' brings the backup back after the index is lost. Anyone with the repository's key and this record can restore the backup: keep it safe."},
			Button:  "Show the record", Back: prefix + "backups/" + b.ID})
	}
	rec, err := s.svc.ExportBackup(r.ctx, b.ID)
	if err != nil {
		return err
	}
	s.render(w, r.Request, r.sess, http.StatusOK, "export", view{Title: "Export record", Nav: "volumes",
		Data: map[string]any{"Backup": b, "Record": rec}})
	return nil
}

// pruneRules reads the keep rules of the prune form.
func pruneRules(r *request) (retention.Rules, error) {
	var rules retention.Rules
	for name, dst := range map[string]*int{"keep-last": &rules.Last, "keep-hourly": &rules.Hourly, "keep-daily": &rules.Daily,
		"keep-weekly": &rules.Weekly, "keep-monthly": &rules.Monthly, "keep-yearly": &rules.Yearly} {
		v := strings.TrimSpace(r.PostFormValue(name))
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return rules, badForm("%s: %q is not a count", name, v)
		}
		*dst = n
	}
	return rules, nil
}

// prune shows the dry run's decisions, and on confirmation prunes the volume by them.
func (s *server) prune(w http.ResponseWriter, r *request) error {
	v, err := s.svc.VolumeByID(r.ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	rules, err := pruneRules(r)
	if err != nil {
		return err
	}
	req := gateway.PruneRequest{Volumes: []string{v.ID}, Rules: rules, DryRun: !confirmed(r)}
	if !req.DryRun {
		// What the confirmation page listed, and nothing else, may go.
		req.Shown = []string{}
		for _, id := range strings.Split(r.PostFormValue("shown"), ",") {
			if id != "" {
				req.Shown = append(req.Shown, id)
			}
		}
	}
	res, err := s.svc.Prune(r.ctx, req)
	if err != nil {
		return err
	}
	if req.DryRun {
		var shown []string
		for _, d := range res.Backups {
			if d.Action == gateway.PruneRemove {
				shown = append(shown, d.ID)
			}
		}
		r.PostForm.Set("shown", strings.Join(shown, ","))
		c := confirmView{Question: fmt.Sprintf("Prune volume %s keeping %s? This removes %d of its %d backups:", v.Name, res.Rules, res.Removed, res.Kept+res.Removed),
			Details: []string{"Kept incrementals whose parent goes are re-linked to the nearest older kept backup; gc reclaims the space later."},
			Button:  "Prune", Back: prefix + "volumes/" + v.ID, Danger: res.Removed > 0, Prune: res}
		if res.Removed == 0 {
			c.Question = fmt.Sprintf("Prune volume %s keeping %s? Nothing would be removed.", v.Name, res.Rules)
		}
		return s.askConfirm(w, r, c)
	}
	s.flash(r, "pruned volume %s: %d kept, %d removed, %d failed", v.Name, res.Kept, res.Removed, res.Failed)
	return redirect(w, r, prefix+"volumes/"+v.ID)
}

// verify starts a verification of a backup: every block read and checked, nothing written.
func (s *server) verify(w http.ResponseWriter, r *request) error {
	b, err := s.svc.BackupByID(r.ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	if !confirmed(r) {
		return s.askConfirm(w, r, confirmView{Question: fmt.Sprintf("Verify backup %s (%s)?", b.ID, units.Bytes(b.Size)),
			Details: []string{"Every block is read from the repository and checked against its address, as a restore would; nothing is written. It runs in the background; lost ranges, if any, are in the job's log."},
			Button:  "Verify", Back: prefix + "backups/" + b.ID})
	}
	id, err := s.svc.StartVerify(r.ctx, b.ID)
	if err != nil {
		return err
	}
	s.flash(r, "verification accepted")
	return redirect(w, r, prefix+"jobs/"+id)
}

// check starts a check of the repository (admins).
func (s *server) check(w http.ResponseWriter, r *request) error {
	var o repo.CheckOptions
	switch mode := r.PostFormValue("mode"); mode {
	case "metadata", "":
	case "data":
		o.ReadData = true
	case "sample":
		o.ReadData = true
		p, err := strconv.ParseFloat(strings.TrimSpace(r.PostFormValue("sample")), 64)
		if err != nil {
			return badForm("sample %q: give a share of the packs like 2.5", r.PostFormValue("sample"))
		}
		o.SamplePercent = p
	default:
		return badForm("check mode %q: metadata, data or sample", mode)
	}
	if !confirmed(r) {
		what := "the repository's metadata (every manifest and block map, no data read)"
		if o.ReadData {
			what = "every block of data against its address (reads the whole repository)"
			if o.SamplePercent > 0 {
				what = fmt.Sprintf("the data of a random %v %% of the packs", o.SamplePercent)
			}
		}
		return s.askConfirm(w, r, confirmView{Question: "Check " + what + "?",
			Details: []string{"The check runs in the background; its result is kept as the last check."},
			Button:  "Run the check", Back: prefix + "repository"})
	}
	id, err := s.svc.StartCheck(r.ctx, o)
	if err != nil {
		return err
	}
	s.flash(r, "check accepted")
	return redirect(w, r, prefix+"jobs/"+id)
}

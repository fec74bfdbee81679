package gateway

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cairn-backup/cairn/index"
)

// metaVolumeSettings holds each update of a volume, meta/volume-settings/<id>@<t>: the newest
// one of a volume is the truth for its name, description and changed-block tracking
// (docs/design.md, "Volume updates").
const metaVolumeSettings = "volume-settings"

// VolumeUpdate changes a volume's name, description or changed-block tracking; nil leaves one
// as it is.
type VolumeUpdate struct {
	Name         *string
	Description  *string
	TrackChanges *bool
}

// volumeSettings is an update's object: the settings it gave the volume, and when by its
// writer's clock.
type volumeSettings struct {
	Name         string    `json:"name"`
	Description  string    `json:"description,omitempty"`
	TrackChanges bool      `json:"track_changes,omitempty"`
	At           time.Time `json:"at"`
}

func (set *volumeSettings) applyTo(v *index.Volume) {
	v.Name, v.Description, v.TrackChanges, v.DescribedAt = set.Name, set.Description, set.TrackChanges, set.At
}

// volumeSettingsKey names an update's object: the volume's id and the update's time in
// nanoseconds, 20 digits, so a volume's objects sort by time.
func volumeSettingsKey(id string, at time.Time) string {
	return fmt.Sprintf("%s@%020d", id, at.UnixNano())
}

func parseVolumeSettingsKey(name string) (id string, at time.Time, ok bool) {
	i := strings.LastIndexByte(name, '@')
	if i <= 0 {
		return "", time.Time{}, false
	}
	ns, err := strconv.ParseInt(name[i+1:], 10, 64)
	if err != nil || ns <= 0 {
		return "", time.Time{}, false
	}
	return name[:i], time.Unix(0, ns).UTC(), true
}

// UpdateVolume renames a volume, changes its description, or turns its changed-block tracking
// on or off (volume update, cinder rename). The name stays unique in the volume's project.
// The update's object is stored before the index changes, so every gateway and every rebuilt
// index takes it [TestVolumeRenamedOnOneGatewayIsRenamedOnAnother,
// TestTrackingTurnedOffAndOnAgain].
func (s *Service) UpdateVolume(ctx context.Context, ref string, u VolumeUpdate) (*index.Volume, error) {
	if u.Name == nil && u.Description == nil && u.TrackChanges == nil {
		return nil, invalidf("say what to change: a new name, a description, or changed-block tracking on or off")
	}
	if u.Name != nil {
		if err := validName(*u.Name); err != nil {
			return nil, err
		}
	}
	if u.Description != nil && utf8.RuneCountInString(*u.Description) > maxField {
		return nil, invalidf("a description must be at most %d characters", maxField)
	}
	found, err := s.findVolume(ctx, ref)
	if err != nil {
		return nil, err
	}
	// A forget holds it from the index's delete to the repository's: the update's object is
	// never left behind a volume forgotten meanwhile.
	s.volumeRecMu.Lock()
	defer s.volumeRecMu.Unlock()
	v, err := s.idx.Volume(found.ID)
	if errors.Is(err, index.ErrNotFound) {
		return nil, wrapf(ErrNotFound, "volume %s was forgotten meanwhile: see 'cairn volume list'", ref)
	} else if err != nil {
		return nil, err
	}
	set := volumeSettings{Name: v.Name, Description: v.Description, TrackChanges: v.TrackChanges, At: time.Now().UTC()}
	if u.Name != nil {
		set.Name = *u.Name
	}
	if u.Description != nil {
		set.Description = *u.Description
	}
	if u.TrackChanges != nil && *u.TrackChanges != v.TrackChanges {
		c, _ := CallerFrom(ctx) // findVolume asked for one
		if set.TrackChanges, err = trackChanges(c, v, u.TrackChanges); err != nil {
			return nil, err
		}
	}
	busy := func() error {
		return wrapf(ErrConflict, "volume %s is being backed up: its tracking changes once that backup ends; try again then", v.Name)
	}
	if v.TrackChanges && !set.TrackChanges && v.Status == index.VolumeBackingUp {
		return nil, busy() // its backup is bringing the base forward
	}
	taken := func() error {
		return wrapf(ErrExists, "a volume named %q already exists in project %s: choose another name", set.Name, v.Project)
	}
	if set.Name != v.Name {
		if s.nameTaken(v.Project, set.Name) {
			return nil, taken()
		}
	}
	if !set.At.After(v.DescribedAt) {
		set.At = v.DescribedAt.Add(time.Nanosecond) // a clock behind the last update's
	}
	key := volumeSettingsKey(v.ID, set.At)
	if err := s.repo.PutMeta(ctx, metaVolumeSettings, key, &set); err != nil {
		return nil, fmt.Errorf("volume %s is unchanged: %w", v.Name, err)
	}
	errBusy := errors.New("busy")
	out, err := s.idx.UpdateVolume(v.ID, func(rec *index.Volume) error {
		if rec.TrackChanges && !set.TrackChanges && rec.Status == index.VolumeBackingUp {
			return errBusy // a backup began meanwhile
		}
		set.applyTo(rec)
		return nil
	})
	if err != nil {
		// Another volume took the name meanwhile, a backup began (or the index failed): the
		// object goes, or every other gateway would take an update this one refused.
		if derr := s.repo.DeleteMeta(context.WithoutCancel(ctx), metaVolumeSettings, key); derr != nil {
			s.log.Error("cannot remove the object of a refused volume update", "volume_id", v.ID, "key", key, "error", derr)
		}
		switch {
		case errors.Is(err, index.ErrExists):
			return nil, taken()
		case errors.Is(err, errBusy):
			return nil, busy()
		}
		return nil, err
	}
	if u.TrackChanges != nil && !out.TrackChanges {
		// A backup that claims the volume from now on keeps none: one that planned with
		// tracking on is refused at its claim.
		s.dropTrackingBase(out)
	}
	s.saveVolumeHeld(ctx, v.ID, true)
	s.dropVolumeSettings(ctx, v.ID, set.At)
	s.notifyChange()
	s.syncIndex()
	s.log.Info("volume updated", "volume_id", v.ID, "name", out.Name, "was", v.Name, "track_changes", out.TrackChanges)
	return out, nil
}

// dropVolumeSettings removes the update objects of volume id older than before (all of them
// for the zero time and after). It only tidies: an update takes the newest object, and a volume
// made anew after an object ignores it, so a failure is logged.
func (s *Service) dropVolumeSettings(ctx context.Context, id string, before time.Time) {
	var old []string
	// Its own objects alone: their names start with "<id>@".
	err := s.repo.ListMetaNamesFrom(ctx, metaVolumeSettings, id+"@", func(name string) error {
		if vid, at, ok := parseVolumeSettingsKey(name); ok && vid == id && (before.IsZero() || at.Before(before)) {
			old = append(old, name)
		}
		return nil
	})
	for _, name := range old {
		if err == nil {
			err = s.repo.DeleteMeta(context.WithoutCancel(ctx), metaVolumeSettings, name)
		}
	}
	if err != nil {
		s.log.Warn("cannot remove a volume's earlier update objects", "volume_id", id, "error", err)
	}
}

// syncVolumeSettings gives each volume of the index the settings (name, description, tracking)
// of its newest update object when that is newer than the index's and than the volume itself:
// updates through other gateways, and through any gateway before this index was rebuilt. A
// volume whose tracking goes off here gives back its base. It reports whether it changed a
// volume.
func (s *Service) syncVolumeSettings(ctx context.Context) (bool, error) {
	newest := map[string]time.Time{}
	keys := map[string]string{}
	err := s.repo.ListMetaNames(ctx, metaVolumeSettings, func(name string) error {
		if id, at, ok := parseVolumeSettingsKey(name); ok && at.After(newest[id]) {
			newest[id], keys[id] = at, name
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	changed := false
	for id, at := range newest {
		v, err := s.idx.Volume(id)
		if err != nil || !at.After(v.DescribedAt) || !at.After(v.CreatedAt) {
			continue // not here, taken already, or a volume made anew under its old id since
		}
		var set volumeSettings
		if err := s.repo.GetMeta(ctx, metaVolumeSettings, keys[id], &set); err != nil || !set.At.Equal(at) {
			s.log.Warn("a volume's update in the repository unreadable", "volume_id", id, "key", keys[id], "error", err)
			continue
		}
		var untracked bool
		// What the repository records is taken, also a name another volume here has
		// (docs/design.md, "Volumes of one name or path").
		out, err := s.idx.UpdateVolumeAsRecorded(id, func(rec *index.Volume) error {
			if !set.At.After(rec.DescribedAt) {
				return errUnchanged
			}
			if rec.TrackChanges && !set.TrackChanges && rec.Status == index.VolumeBackingUp {
				return errUnchanged // its backup is bringing the base forward: the next catch-up
			}
			untracked = rec.TrackChanges && !set.TrackChanges
			set.applyTo(rec)
			return nil
		})
		switch {
		case errors.Is(err, errUnchanged) || errors.Is(err, index.ErrNotFound):
			continue
		case err != nil:
			return changed, err
		}
		if untracked {
			s.dropTrackingBase(out)
		}
		s.log.Info("volume updated elsewhere", "volume_id", id, "name", set.Name, "was", v.Name, "track_changes", set.TrackChanges)
		changed = true
	}
	return changed, nil
}

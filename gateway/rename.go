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

// metaVolumeNames holds each rename of a volume, meta/volume-names/<id>@<t>: the newest one of
// a volume is the truth for its name and description (docs/design.md, "Volume renames").
const metaVolumeNames = "volume-names"

// VolumeUpdate changes a volume's name or description; nil leaves one as it is.
type VolumeUpdate struct {
	Name        *string
	Description *string
}

// volumeNames is a rename's object: what it named the volume, and when by its writer's clock.
type volumeNames struct {
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	At          time.Time `json:"at"`
}

func (n *volumeNames) applyTo(v *index.Volume) {
	v.Name, v.Description, v.DescribedAt = n.Name, n.Description, n.At
}

// volumeNamesKey names a rename's object: the volume's id and the rename's time in
// nanoseconds, 20 digits, so a volume's objects sort by time.
func volumeNamesKey(id string, at time.Time) string {
	return fmt.Sprintf("%s@%020d", id, at.UnixNano())
}

func parseVolumeNamesKey(name string) (id string, at time.Time, ok bool) {
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

// UpdateVolume renames a volume or changes its description (volume update, cinder rename).
// The name stays unique in the volume's project. The rename's object is stored before the
// index changes, so every gateway and every rebuilt index takes the rename
// [TestVolumeRenamedOnOneGatewayIsRenamedOnAnother].
func (s *Service) UpdateVolume(ctx context.Context, ref string, u VolumeUpdate) (*index.Volume, error) {
	if u.Name == nil && u.Description == nil {
		return nil, invalidf("say what to change: a new name or a description")
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
	// A forget holds it from the index's delete to the repository's: the rename's object is
	// never left behind a volume forgotten meanwhile.
	s.volumeRecMu.Lock()
	defer s.volumeRecMu.Unlock()
	v, err := s.idx.Volume(found.ID)
	if errors.Is(err, index.ErrNotFound) {
		return nil, wrapf(ErrNotFound, "volume %s was forgotten meanwhile: see 'cairn volume list'", ref)
	} else if err != nil {
		return nil, err
	}
	names := volumeNames{Name: v.Name, Description: v.Description, At: time.Now().UTC()}
	if u.Name != nil {
		names.Name = *u.Name
	}
	if u.Description != nil {
		names.Description = *u.Description
	}
	taken := func() error {
		return wrapf(ErrExists, "a volume named %q already exists in project %s: choose another name", names.Name, v.Project)
	}
	if names.Name != v.Name {
		if _, err := s.idx.VolumeByName(v.Project, names.Name); err == nil {
			return nil, taken()
		}
	}
	if !names.At.After(v.DescribedAt) {
		names.At = v.DescribedAt.Add(time.Nanosecond) // a clock behind the last rename's
	}
	key := volumeNamesKey(v.ID, names.At)
	if err := s.repo.PutMeta(ctx, metaVolumeNames, key, &names); err != nil {
		return nil, fmt.Errorf("volume %s is unchanged: %w", v.Name, err)
	}
	out, err := s.idx.UpdateVolume(v.ID, func(rec *index.Volume) error {
		names.applyTo(rec)
		return nil
	})
	if err != nil {
		// Another volume took the name meanwhile (or the index failed): the object goes, or
		// every other gateway would take a rename this one refused.
		if derr := s.repo.DeleteMeta(context.WithoutCancel(ctx), metaVolumeNames, key); derr != nil {
			s.log.Error("cannot remove the object of a refused rename", "volume_id", v.ID, "key", key, "error", derr)
		}
		if errors.Is(err, index.ErrExists) {
			return nil, taken()
		}
		return nil, err
	}
	s.saveVolumeLogged(ctx, v.ID)
	s.dropVolumeNames(ctx, v.ID, names.At)
	s.notifyChange()
	s.syncIndex()
	s.log.Info("volume updated", "volume_id", v.ID, "name", out.Name, "was", v.Name)
	return out, nil
}

// dropVolumeNames removes the rename objects of volume id older than before (all of them for
// the zero time and after). It only tidies: a rename takes the newest object, and a volume
// made anew after an object ignores it, so a failure is logged.
func (s *Service) dropVolumeNames(ctx context.Context, id string, before time.Time) {
	var old []string
	err := s.repo.ListMetaNames(ctx, metaVolumeNames, func(name string) error {
		if vid, at, ok := parseVolumeNamesKey(name); ok && vid == id && (before.IsZero() || at.Before(before)) {
			old = append(old, name)
		}
		return nil
	})
	for _, name := range old {
		if err == nil {
			err = s.repo.DeleteMeta(context.WithoutCancel(ctx), metaVolumeNames, name)
		}
	}
	if err != nil {
		s.log.Warn("cannot remove a volume's earlier rename objects", "volume_id", id, "error", err)
	}
}

// syncVolumeNames gives each volume of the index the name and description of its newest rename
// object when that is newer than the index's and than the volume itself: renames through other
// gateways, and through any gateway before this index was rebuilt. It reports whether it
// changed a volume.
func (s *Service) syncVolumeNames(ctx context.Context) (bool, error) {
	newest := map[string]time.Time{}
	keys := map[string]string{}
	err := s.repo.ListMetaNames(ctx, metaVolumeNames, func(name string) error {
		if id, at, ok := parseVolumeNamesKey(name); ok && at.After(newest[id]) {
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
		var names volumeNames
		if err := s.repo.GetMeta(ctx, metaVolumeNames, keys[id], &names); err != nil || !names.At.Equal(at) {
			s.log.Warn("a volume's rename in the repository unreadable", "volume_id", id, "key", keys[id], "error", err)
			continue
		}
		_, err = s.idx.UpdateVolume(id, func(rec *index.Volume) error {
			if !names.At.After(rec.DescribedAt) {
				return errUnchanged
			}
			names.applyTo(rec)
			return nil
		})
		switch {
		case errors.Is(err, errUnchanged) || errors.Is(err, index.ErrNotFound):
			continue
		case errors.Is(err, index.ErrExists):
			s.log.Warn("a volume renamed elsewhere keeps its name here: another volume of its project has the new one; rename one of them",
				"volume_id", id, "volume", v.Name, "new_name", names.Name, "project", v.Project)
			continue
		case err != nil:
			return changed, err
		}
		s.log.Info("volume renamed elsewhere", "volume_id", id, "name", names.Name, "was", v.Name)
		changed = true
	}
	return changed, nil
}

package lvm

import (
	"errors"
	"fmt"
	"io"
	"slices"
)

// Device is a byte range of an image that may hold a physical volume: the whole image or
// one of its partitions. Name is for messages ("p2", "disk").
type Device struct {
	Name         string
	Offset, Size int64
}

// maxDevices bounds how many devices one Scan looks at.
const maxDevices = 256

// Scan looks for physical volumes on each device of the image r, reads their metadata and
// returns the volume groups it describes, each from the copy with the highest sequence
// number, with their PVs located by uuid across the devices. A device without a label is
// skipped; a damaged label or metadata area is skipped and reported in err, which comes
// with the VGs that could be read.
func Scan(r io.ReaderAt, devs []Device) ([]*VG, error) {
	if len(devs) > maxDevices {
		devs = devs[:maxDevices]
	}
	type found struct {
		dev Device
		hdr *PVHeader
	}
	var pvs []found
	newest := map[string]*VG{} // by VG uuid
	var order []string
	var errs []error
	for _, d := range devs {
		sr := io.NewSectionReader(r, d.Offset, d.Size)
		hdr, err := ReadLabel(sr, d.Size)
		if errors.Is(err, ErrNoLabel) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", d.Name, err))
			continue
		}
		pvs = append(pvs, found{d, hdr})
		for _, a := range hdr.Metadata {
			vg, err := readVG(sr, d.Size, a)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", d.Name, err))
				continue
			}
			if vg == nil {
				continue
			}
			old, seen := newest[vg.UUID]
			if !seen {
				order = append(order, vg.UUID)
			}
			if !seen || vg.Seqno > old.Seqno {
				newest[vg.UUID] = vg
			}
		}
	}
	out := make([]*VG, 0, len(order))
	for _, id := range order {
		vg := newest[id]
		for _, pv := range vg.PVs {
			// A PV whose label is on two devices (a disk or partition copied with dd keeps
			// its uuids) is not placed on either: the newest metadata may describe the copy
			// while the first device is the original, and every block of the wrong one
			// verifies, so nothing else would tell [TestDuplicatePVIsNotPlaced].
			var on []found
			for _, f := range pvs {
				// Two devices at one offset (a partition table listing the same bytes twice)
				// are one PV, not a copy.
				if f.hdr.UUID == pv.UUID && !slices.ContainsFunc(on, func(o found) bool { return o.dev.Offset == f.dev.Offset }) {
					on = append(on, f)
				}
			}
			switch len(on) {
			case 0:
			case 1:
				pv.Found, pv.Offset, pv.Size = true, on[0].dev.Offset, on[0].dev.Size
			default:
				for _, f := range on {
					pv.OnDevices = append(pv.OnDevices, f.dev.Name)
				}
			}
		}
		vg.resolve()
		out = append(out, vg)
	}
	return out, errors.Join(errs...)
}

// readVG reads one metadata area and builds the VG it holds; nil when the area is empty.
func readVG(r io.ReaderAt, size int64, a Area) (*VG, error) {
	text, ok, err := ReadMetadata(r, size, a)
	if err != nil || !ok {
		return nil, err
	}
	return ParseVG(text)
}

// ParseVG parses a metadata text (as in a metadata area, or a file under
// /etc/lvm/backup) into the VG it describes: the one top-level section with an
// extent_size. Its PVs are not located (Scan does that), so no LV is exposed.
func ParseVG(text []byte) (*VG, error) {
	top, err := ParseText(text)
	if err != nil {
		return nil, err
	}
	for i, k := range top.Keys {
		s := top.Values[i].Sect
		if s == nil {
			continue
		}
		if _, ok := s.Int("extent_size"); ok {
			vg, err := buildVG(k, s)
			if err == nil {
				vg.resolve()
			}
			return vg, err
		}
	}
	return nil, fmt.Errorf("lvm metadata describes no volume group")
}

package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/cairn-backup/cairn/blockio/lvm"
	"github.com/cairn-backup/cairn/repo"
)

// ErrNoVolume says an image holds no logical volume of the asked name.
var ErrNoVolume = errors.New("no such logical volume")

// ImageDevices are the places in an image of the given size that may hold an LVM physical
// volume: the whole image and each partition of its MBR or GPT.
func ImageDevices(r io.ReaderAt, size int64) ([]lvm.Device, error) {
	_, devs, err := imageDevices(r, size)
	return devs, err
}

func imageDevices(r io.ReaderAt, size int64) ([]partition, []lvm.Device, error) {
	devs := []lvm.Device{{Name: "disk", Offset: 0, Size: size}}
	_, parts, err := readPartitions(r, size)
	for _, p := range parts {
		devs = append(devs, lvm.Device{Name: fmt.Sprintf("p%d", p.Number), Offset: p.Start, Size: p.Length})
	}
	return parts, devs, err
}

// hasPV says whether any of the devices carries an LVM label: one sector read each, so
// a backup's listing can show lvm/ without reading metadata.
func hasPV(r io.ReaderAt, devs []lvm.Device) bool {
	for _, d := range devs {
		if _, err := lvm.ReadLabel(io.NewSectionReader(r, d.Offset, d.Size), d.Size); err == nil {
			return true
		}
	}
	return false
}

// VolumeGroups finds the LVM volume groups inside a backup's image (on the whole image or
// any of its partitions) and names them as lvm/ does: by VG name, with "-<short uuid>"
// when two share a name. An error with groups is a damaged label or metadata area that
// was skipped.
func VolumeGroups(ctx context.Context, img *repo.Image) (map[string]*lvm.VG, error) {
	r := readerCtx{ctx, img}
	devs, perr := ImageDevices(r, img.Size())
	vgs, err := lvm.Scan(r, devs)
	return vgNames(vgs), errors.Join(perr, err)
}

// vgNames names each VG by its sanitised name, adding its uuid's start where names collide.
func vgNames(vgs []*lvm.VG) map[string]*lvm.VG {
	count := map[string]int{}
	for _, vg := range vgs {
		count[sanitize(vg.Name)]++
	}
	out := make(map[string]*lvm.VG, len(vgs))
	for _, vg := range vgs {
		name := sanitize(vg.Name)
		if count[name] > 1 {
			name += "-" + shortID(vg.UUID)
		}
		out[name] = vg
	}
	return out
}

// OpenLogicalVolume finds the logical volume vg/lv (names as lvm/ shows them) in a
// backup's image and returns a reader of it: the reader behind lvm/<vg>/<lv>.img, for
// other consumers such as an NBD export of <backup id>/lvm/<vg>/<lv>. A volume that is
// there but cannot be read returns lvm.ErrNotExposed with the reason; one that is not
// there, ErrNoVolume.
func OpenLogicalVolume(ctx context.Context, img *repo.Image, vg, lv string) (*lvm.Reader, error) {
	vgs, err := VolumeGroups(ctx, img)
	g := vgs[vg]
	if g == nil {
		if err != nil {
			return nil, fmt.Errorf("lvm/%s/%s: %w (%w)", vg, lv, ErrNoVolume, err)
		}
		return nil, fmt.Errorf("lvm/%s/%s: %w", vg, lv, ErrNoVolume)
	}
	for _, l := range g.LVs {
		if sanitize(l.Name) == lv {
			return l.ReaderAt(img)
		}
	}
	return nil, fmt.Errorf("lvm/%s/%s: %w", vg, lv, ErrNoVolume)
}

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
// backup's image and returns it: what lvm/<vg>/<lv>.img reads, for other consumers such as
// an NBD export of <backup id>/lvm/<vg>/<lv>. A volume that is there but cannot be read
// returns lvm.ErrNotExposed with the reason; one that is not there, ErrNoVolume.
func OpenLogicalVolume(ctx context.Context, img *repo.Image, vg, lv string) (*LogicalVolume, error) {
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
			return newLogicalVolume(img, l)
		}
	}
	return nil, fmt.Errorf("lvm/%s/%s: %w", vg, lv, ErrNoVolume)
}

// LogicalVolume is an exposed LV inside a backup's image, read like the image itself:
// ReadAtContext, and NextData for the holes (SEEK_DATA/SEEK_HOLE, NBD block status).
type LogicalVolume struct {
	LV  *lvm.LV
	img *repo.Image
}

var _ io.ReaderAt = (*LogicalVolume)(nil)

func newLogicalVolume(img *repo.Image, lv *lvm.LV) (*LogicalVolume, error) {
	if _, err := lv.ReaderAt(img); err != nil {
		return nil, err
	}
	return &LogicalVolume{LV: lv, img: img}, nil
}

// Size is the LV's size in bytes.
func (v *LogicalVolume) Size() int64 { return v.LV.Size }

// ReadAt implements io.ReaderAt.
func (v *LogicalVolume) ReadAt(p []byte, off int64) (int, error) {
	return v.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext reads len(p) bytes of the LV at off, piece by piece where its extents are
// in the image; at the LV's end it returns io.EOF. As for the image, a block that fails
// verification fails the read.
func (v *LogicalVolume) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	r, err := v.LV.ReaderAt(readerCtx{ctx, v.img})
	if err != nil {
		return 0, err
	}
	return r.ReadAt(p, off)
}

// maxSeekRuns bounds how many pieces of the mapping (segments, or stripe chunks) one
// search for data or a hole looks at; past that it answers as if the rest were data,
// which is never wrong (only slower for the caller).
const maxSeekRuns = 4096

// NextData returns the next extent [start, end) at or after off that is not a hole in the
// image, following the LV's mapping; past the last data it returns io.EOF.
func (v *LogicalVolume) NextData(ctx context.Context, off int64) (start, end int64, err error) {
	start, err = v.seek(ctx, off, true)
	if err != nil {
		return 0, 0, err
	}
	end, err = v.seek(ctx, start, false)
	return start, end, err
}

// seek finds the first data (data) or the first hole (!data) at or after off: the LV's
// size for a hole past the last data, io.EOF for data past the last data.
func (v *LogicalVolume) seek(ctx context.Context, off int64, data bool) (int64, error) {
	size := v.LV.Size
	pos := off
	for range maxSeekRuns {
		if pos >= size {
			if data {
				return size, io.EOF
			}
			return size, nil
		}
		at, run, _ := v.LV.Map(pos)
		run = min(run, size-pos)
		start, end, err := v.img.NextData(ctx, at)
		if err == io.EOF {
			start, end, err = at+run, at+run, nil // nothing more in the image: a hole
		}
		if err != nil {
			return 0, fmt.Errorf("lv %s at %d: %w", v.LV.Name, pos, err)
		}
		switch {
		case data && start < at+run:
			return pos + max(0, start-at), nil
		case !data && start > at:
			return pos, nil // pos is in a hole
		case !data && end < at+run:
			return pos + end - at, nil
		}
		pos += run
	}
	if data {
		return pos, nil
	}
	return size, nil
}

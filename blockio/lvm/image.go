package lvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cairn-backup/cairn/blockio/part"
)

// Image is a volume image that logical volumes are read from, with its holes: a backup's
// image (repo.Image fits) or anything else that can say where its data is.
type Image interface {
	Size() int64
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
	// NextData returns the next extent [start, end) at or after off that is not a hole;
	// past the last data it returns io.EOF.
	NextData(ctx context.Context, off int64) (start, end int64, err error)
}

// ErrNoVolume says an image holds no logical volume of the asked name.
var ErrNoVolume = errors.New("no such logical volume")

// readerCtx reads an Image with a context, as an io.ReaderAt.
type readerCtx struct {
	ctx context.Context
	img Image
}

func (r readerCtx) ReadAt(p []byte, off int64) (int, error) {
	return r.img.ReadAtContext(r.ctx, p, off)
}

// ImageDevices returns the partitions of an image's MBR or GPT and the places that may
// hold a physical volume: the whole image ("disk") and each partition ("p1", ...). An
// error is an unreadable partition table; the whole image is still returned.
func ImageDevices(ctx context.Context, img Image) ([]part.Partition, []Device, error) {
	size := img.Size()
	devs := []Device{{Name: "disk", Offset: 0, Size: size}}
	_, parts, err := part.Read(readerCtx{ctx, img}, size)
	for _, p := range parts {
		devs = append(devs, Device{Name: fmt.Sprintf("p%d", p.Number), Offset: p.Start, Size: p.Length})
	}
	return parts, devs, err
}

// HasPV says whether any of the devices carries an LVM label: one sector read each, so a
// listing can show that an image holds volume groups without reading their metadata.
func HasPV(ctx context.Context, img Image, devs []Device) bool {
	r := readerCtx{ctx, img}
	for _, d := range devs {
		if _, err := ReadLabel(io.NewSectionReader(r, d.Offset, d.Size), d.Size); err == nil {
			return true
		}
	}
	return false
}

// ImageVGs finds the volume groups inside an image (on the whole image or any of its
// partitions) and names them as Names does. An error with groups is a damaged partition
// table, label or metadata area that was skipped.
func ImageVGs(ctx context.Context, img Image) (map[string]*VG, error) {
	_, devs, perr := ImageDevices(ctx, img)
	vgs, err := Scan(readerCtx{ctx, img}, devs)
	return Names(vgs), errors.Join(perr, err)
}

// Names names each VG as one path component (PathName of its name), adding the start of
// its uuid where two share a name (two disks' VGs in one image, or a clone). These are the
// names of lvm/<vg>/ in the FUSE tree and of <backup>/lvm/<vg>/<lv> NBD exports.
func Names(vgs []*VG) map[string]*VG {
	count := map[string]int{}
	for _, vg := range vgs {
		count[PathName(vg.Name)]++
	}
	out := make(map[string]*VG, len(vgs))
	for _, vg := range vgs {
		name := PathName(vg.Name)
		if count[name] > 1 {
			id := PathName(vg.UUID)
			if len(id) > 8 {
				id = id[:8]
			}
			name += "-" + id
		}
		out[name] = vg
	}
	return out
}

// maxPathName leaves room for a "-<short uuid>" suffix within Linux's 255-byte names.
const maxPathName = 255 - 10

// PathName makes a name from a backup (a VG or LV name here; the FUSE tree's volume and
// backup names too) safe as one path component: separators and control characters become
// '_', "." and ".." and "" get a prefix, and long names are cut at a rune, leaving room for a
// "-<short id>" suffix. LVM itself allows none of these; metadata in a backed-up image may
// hold anything.
func PathName(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r == '/' || r == '\\' || r == utf8.RuneError || unicode.IsControl(r):
			b.WriteByte('_')
		default:
			b.WriteRune(r)
		}
	}
	s := b.String()
	if s == "" || s == "." || s == ".." {
		s = "_" + s
	}
	for len(s) > maxPathName {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// OpenVolume finds the logical volume vg/lv (names as Names and PathName give them) in an
// image and returns it. A volume that is there but cannot be read returns ErrNotExposed
// with the reason (thin, RAID, a missing PV, ...); one that is not there, ErrNoVolume.
func OpenVolume(ctx context.Context, img Image, vg, lv string) (*Volume, error) {
	vgs, err := ImageVGs(ctx, img)
	g := vgs[vg]
	if g == nil {
		if err != nil {
			return nil, fmt.Errorf("lvm/%s/%s: %w (%w)", vg, lv, ErrNoVolume, err)
		}
		return nil, fmt.Errorf("lvm/%s/%s: %w", vg, lv, ErrNoVolume)
	}
	for _, l := range g.LVs {
		if PathName(l.Name) == lv {
			return l.Volume(img)
		}
	}
	return nil, fmt.Errorf("lvm/%s/%s: %w", vg, lv, ErrNoVolume)
}

// Volume is an exposed LV inside an image, read like the image itself: ReadAtContext, and
// NextData for the holes (SEEK_DATA/SEEK_HOLE, NBD block status). Safe for concurrent use
// when the image is.
type Volume struct {
	LV  *LV
	img Image
}

var _ io.ReaderAt = (*Volume)(nil)

// Volume returns the LV as read from img (an image over the same bytes Scan read). It
// returns ErrNotExposed, with the reason, for an LV that cannot be read.
func (lv *LV) Volume(img Image) (*Volume, error) {
	if _, err := lv.ReaderAt(readerCtx{context.Background(), img}); err != nil {
		return nil, err
	}
	return &Volume{LV: lv, img: img}, nil
}

// Size is the LV's size in bytes.
func (v *Volume) Size() int64 { return v.LV.Size }

// ReadAt implements io.ReaderAt.
func (v *Volume) ReadAt(p []byte, off int64) (int, error) {
	return v.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext reads len(p) bytes of the LV at off, piece by piece where its extents are
// in the image; at the LV's end it returns io.EOF. Errors of the image's reads (a block
// that fails verification) are returned as they are.
func (v *Volume) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
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
func (v *Volume) NextData(ctx context.Context, off int64) (start, end int64, err error) {
	start, err = v.Seek(ctx, off, true)
	if err != nil {
		return 0, 0, err
	}
	end, err = v.Seek(ctx, start, false)
	return start, end, err
}

// Seek finds the first data (data) or the first hole (!data) at or after off, as
// SEEK_DATA and SEEK_HOLE do: the LV's size for a hole past the last data, io.EOF for data
// past the last data.
func (v *Volume) Seek(ctx context.Context, off int64, data bool) (int64, error) {
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

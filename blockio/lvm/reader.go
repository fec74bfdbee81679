package lvm

import (
	"errors"
	"fmt"
	"io"
	"sort"
)

// ErrNotExposed says a logical volume cannot be read; its Reason says why.
var ErrNotExposed = errors.New("logical volume not exposed")

// Map returns where the LV's byte off lies in the image and how many bytes from there are
// contiguous there (at most to the end of the stripe chunk or segment). ok is false for an
// offset outside the LV or an LV that is not exposed.
func (lv *LV) Map(off int64) (imageOff, n int64, ok bool) {
	if !lv.Exposed() || off < 0 || off >= lv.Size {
		return 0, 0, false
	}
	es := lv.vg.ExtentSize
	ext := off / es
	i := sort.Search(len(lv.Segments), func(i int) bool { return lv.Segments[i].Start+lv.Segments[i].Count > ext })
	seg := &lv.Segments[i]
	in := off - seg.Start*es // offset within the segment
	stripes := int64(len(seg.Stripes))
	if stripes == 1 {
		st := seg.Stripes[0]
		return st.PV.Offset + st.PV.PEStart + st.Start*es + in, seg.Count*es - in, true
	}
	// dm-stripe: chunks of StripeSize go round the stripes in turn.
	chunk := in / seg.StripeSize
	within := in % seg.StripeSize
	st := seg.Stripes[chunk%stripes]
	row := chunk / stripes
	return st.PV.Offset + st.PV.PEStart + st.Start*es + row*seg.StripeSize + within, seg.StripeSize - within, true
}

// ReaderAt reads an exposed LV from the image r (the same reader, or one over the same
// bytes, that Scan read). It returns ErrNotExposed, with the reason, for the others.
func (lv *LV) ReaderAt(r io.ReaderAt) (*Reader, error) {
	if !lv.Exposed() {
		return nil, fmt.Errorf("lv %s/%s: %w: %s", lv.vg.Name, lv.Name, ErrNotExposed, lv.Reason)
	}
	return &Reader{lv: lv, r: r}, nil
}

// Reader is an io.ReaderAt over one logical volume; it reads the image piece by piece
// along the LV's mapping and is safe for concurrent use when the image reader is.
type Reader struct {
	lv *LV
	r  io.ReaderAt
}

var _ io.ReaderAt = (*Reader)(nil)

// Size is the LV's size in bytes.
func (r *Reader) Size() int64 { return r.lv.Size }

// ReadAt reads len(p) bytes of the LV from off; at the LV's end it returns io.EOF.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("lv %s: negative offset", r.lv.Name)
	}
	done := 0
	for done < len(p) {
		at, n, ok := r.lv.Map(off + int64(done))
		if !ok {
			return done, io.EOF
		}
		n = min(n, int64(len(p)-done))
		got, err := r.r.ReadAt(p[done:done+int(n)], at)
		done += got
		if err != nil && !(err == io.EOF && int64(got) == n) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return done, err
		}
	}
	return done, nil
}

package lvm

import (
	"fmt"
	"slices"
	"strings"
)

// VG is a volume group as its newest metadata describes it.
type VG struct {
	Name  string
	UUID  string
	Seqno int64
	// ExtentSize is the size of one physical extent in bytes.
	ExtentSize int64
	PVs        []*PV
	// LVs are the visible logical volumes in metadata order; hidden ones (a thin pool's
	// data and metadata, RAID images, a snapshot's internals) are left out.
	LVs []*LV
}

// PV is one physical volume of a VG and, when Scan found it, where it is in the image.
type PV struct {
	Name    string // the metadata's name for it, e.g. "pv0"
	UUID    string
	Device  string // the device path LVM last saw it on, for messages
	PEStart int64  // bytes from the PV's start to its first extent
	PECount int64
	// Found says the PV is in the image, at Offset with Size bytes.
	Found        bool
	Offset, Size int64
	// OnDevices, when the PV's label is on more than one device of the image (a copy of a
	// disk or partition), names them; the PV is then not Found.
	OnDevices []string
}

// LV is a logical volume. Reason is empty when the volume can be read (ReaderAt);
// otherwise it says, for an administrator, why not.
type LV struct {
	Name     string
	UUID     string
	Size     int64 // bytes
	Segments []Segment
	Reason   string
	vg       *VG
	// kindReason is why the LV's kind cannot be exposed, whatever the image holds.
	kindReason string
}

// Exposed says the LV can be read through ReaderAt.
func (lv *LV) Exposed() bool { return lv.Reason == "" }

// VG returns the volume group the LV belongs to.
func (lv *LV) VG() *VG { return lv.vg }

// Segment is a run of a logical volume's extents with one mapping type.
type Segment struct {
	Start, Count int64  // in extents of the LV
	Type         string // "striped" (linear is striped with one stripe), "thin", "raid1", ...
	// StripeSize is the stripe chunk in bytes, when there is more than one stripe.
	StripeSize int64
	Stripes    []Stripe
}

// Stripe is where one stripe of a segment lies: on PV from its extent Start.
type Stripe struct {
	PV    *PV
	Start int64
}

// Bounds on what one VG may hold.
const (
	maxLVs      = 1 << 14
	maxSegments = 1 << 15 // in all LVs of a VG
	maxStripes  = 128     // LVM's own limit
)

// buildVG builds the VG described by the section called name of a parsed metadata text.
func buildVG(name string, s *Section) (*VG, error) {
	vg := &VG{Name: name}
	vg.UUID, _ = s.String("id")
	vg.Seqno, _ = s.Int("seqno")
	es, ok := s.Int("extent_size")
	if !ok || es <= 0 || es > 1<<32 {
		return nil, fmt.Errorf("vg %s: bad extent_size", name)
	}
	vg.ExtentSize = es * sectorSize
	byName := map[string]*PV{}
	if pvs := s.Sub("physical_volumes"); pvs != nil {
		for i, k := range pvs.Keys {
			ps := pvs.Values[i].Sect
			if ps == nil {
				continue
			}
			pv := &PV{Name: k}
			pv.UUID, _ = ps.String("id")
			pv.Device, _ = ps.String("device")
			start, _ := ps.Int("pe_start")
			pv.PECount, _ = ps.Int("pe_count")
			if start < 0 || start > 1<<50 || pv.PECount < 0 || pv.PECount > 1<<40 {
				return nil, fmt.Errorf("vg %s: pv %s: bad pe_start or pe_count", name, k)
			}
			pv.PEStart = start * sectorSize
			vg.PVs = append(vg.PVs, pv)
			byName[k] = pv
		}
	}
	lvs := s.Sub("logical_volumes")
	if lvs == nil {
		return vg, nil
	}
	if len(lvs.Keys) > maxLVs {
		return nil, fmt.Errorf("vg %s: more than %d logical volumes", name, maxLVs)
	}
	cow := map[string]string{} // a snapshot's copy-on-write LV → its origin
	segments := 0
	var all []*LV
	visible := map[*LV]bool{}
	for i, k := range lvs.Keys {
		ls := lvs.Values[i].Sect
		if ls == nil {
			continue
		}
		lv, err := buildLV(vg, k, ls, byName, lvs, &segments)
		if err != nil {
			return nil, fmt.Errorf("vg %s: %w", name, err)
		}
		for _, seg := range lv.Segments {
			if seg.Type == "snapshot" {
				origin, _ := ls.String("origin")
				store, _ := ls.String("cow_store")
				for _, sub := range ls.Values {
					if sub.Sect != nil {
						if o, ok := sub.Sect.String("origin"); ok {
							origin = o
						}
						if c, ok := sub.Sect.String("cow_store"); ok {
							store = c
						}
					}
				}
				cow[store] = origin
			}
		}
		all = append(all, lv)
		visible[lv] = slices.Contains(ls.Strings("status"), "VISIBLE")
	}
	for _, lv := range all {
		// LVM drops VISIBLE from a snapshot's copy-on-write LV, yet lists it under the
		// snapshot's name: so does cairn.
		if _, ok := cow[lv.Name]; ok || visible[lv] {
			vg.LVs = append(vg.LVs, lv)
		}
		if origin, ok := cow[lv.Name]; ok {
			lv.kindReason = fmt.Sprintf("snapshot of %s: its contents are %s's blocks merged with a copy-on-write store, which cairn does not do; read %s for the volume as it is now", origin, origin, origin)
		}
	}
	return vg, nil
}

// buildLV reads one logical volume's segments and decides whether it can be exposed.
func buildLV(vg *VG, name string, s *Section, pvs map[string]*PV, lvs *Section, total *int) (*LV, error) {
	lv := &LV{Name: name, vg: vg}
	lv.UUID, _ = s.String("id")
	var end int64
	for i, k := range s.Keys {
		ss := s.Values[i].Sect
		if ss == nil || !strings.HasPrefix(k, "segment") {
			continue
		}
		if *total++; *total > maxSegments {
			return nil, fmt.Errorf("more than %d segments", maxSegments)
		}
		seg, reason, err := buildSegment(vg, ss, pvs, lvs)
		if err != nil {
			return nil, fmt.Errorf("lv %s: %s: %w", name, k, err)
		}
		lv.Segments = append(lv.Segments, seg)
		if lv.kindReason == "" {
			lv.kindReason = reason
		}
		end = max(end, seg.Start+seg.Count)
	}
	slices.SortFunc(lv.Segments, func(a, b Segment) int { return int(min(max(a.Start-b.Start, -1), 1)) })
	var next int64
	for _, seg := range lv.Segments {
		if seg.Start != next {
			return nil, fmt.Errorf("lv %s: segments leave a gap or overlap at extent %d", name, next)
		}
		next += seg.Count
	}
	if end > (1<<62)/vg.ExtentSize {
		return nil, fmt.Errorf("lv %s: too large", name)
	}
	lv.Size = end * vg.ExtentSize
	if len(lv.Segments) == 0 && lv.kindReason == "" {
		lv.kindReason = "it has no segments"
	}
	return lv, nil
}

// buildSegment reads one segment; reason says why it cannot be read (its type, a PV that
// is not in the image). An error is metadata that makes no sense.
func buildSegment(vg *VG, s *Section, pvs map[string]*PV, lvs *Section) (seg Segment, reason string, err error) {
	seg.Start, _ = s.Int("start_extent")
	seg.Count, _ = s.Int("extent_count")
	seg.Type, _ = s.String("type")
	if seg.Start < 0 || seg.Count <= 0 || seg.Start > 1<<40 || seg.Count > 1<<40 {
		return seg, "", fmt.Errorf("bad start_extent or extent_count")
	}
	switch seg.Type {
	case "striped":
	case "thin":
		return seg, "thin volume: its blocks are placed by the thin pool's own metadata, which cairn does not read", nil
	case "thin-pool":
		return seg, "thin pool: it holds the blocks of thin volumes, not a file system", nil
	case "snapshot":
		return seg, "snapshot", nil
	case "error", "zero", "free":
		return seg, fmt.Sprintf("segment type %s has no data", seg.Type), nil
	default:
		return seg, fmt.Sprintf("segment type %s is not exposed: cairn maps only linear and striped volumes", seg.Type), nil
	}
	n, _ := s.Int("stripe_count")
	v, _ := s.Get("stripes")
	if n < 1 || n > maxStripes || v.Kind != KindArray || len(v.Array) != 2*int(n) {
		return seg, "", fmt.Errorf("stripes do not match stripe_count %d", n)
	}
	if seg.Count%n != 0 {
		return seg, "", fmt.Errorf("%d extents do not divide into %d stripes", seg.Count, n)
	}
	if n > 1 {
		ss, _ := s.Int("stripe_size")
		seg.StripeSize = ss * sectorSize
		if ss <= 0 || vg.ExtentSize%seg.StripeSize != 0 {
			return seg, "", fmt.Errorf("bad stripe_size %d", ss)
		}
	}
	for i := 0; i < len(v.Array); i += 2 {
		pvName, at := v.Array[i], v.Array[i+1]
		if pvName.Kind != KindString || at.Kind != KindInt {
			return seg, "", fmt.Errorf("bad stripes")
		}
		pv := pvs[pvName.Str]
		if pv == nil && lvs.Sub(pvName.Str) != nil {
			return seg, fmt.Sprintf("its extents are on logical volume %s (a pvmove in progress, or a stacked volume), which cairn does not follow", pvName.Str), nil
		}
		if pv == nil {
			return seg, "", fmt.Errorf("stripe on unknown pv %q", pvName.Str)
		}
		if at.Int < 0 || at.Int+seg.Count/n > pv.PECount {
			return seg, "", fmt.Errorf("stripe beyond the end of pv %s", pvName.Str)
		}
		seg.Stripes = append(seg.Stripes, Stripe{PV: pv, Start: at.Int})
	}
	return seg, "", nil
}

// resolve decides which LVs are exposed: those of a kind cairn maps whose PVs are all
// in the image, whole. It runs again whenever Scan has located the PVs.
func (vg *VG) resolve() {
	for _, lv := range vg.LVs {
		if lv.Reason = lv.kindReason; lv.Reason != "" {
			continue
		}
	segs:
		for _, seg := range lv.Segments {
			for _, st := range seg.Stripes {
				if len(st.PV.OnDevices) > 1 {
					lv.Reason = fmt.Sprintf("pv %s is on %d devices of this image (%s), as after a copy of a disk or partition: which one the metadata describes cannot be told",
						st.PV.UUID, len(st.PV.OnDevices), strings.Join(st.PV.OnDevices, ", "))
					break segs
				}
				if !st.PV.Found {
					lv.Reason = fmt.Sprintf("pv %s is not in this image", st.PV.UUID)
					break segs
				}
				end := st.PV.PEStart + (st.Start+seg.Count/int64(len(seg.Stripes)))*vg.ExtentSize
				if end > st.PV.Size {
					lv.Reason = fmt.Sprintf("pv %s is cut short in this image: it ends before the volume's extents do", st.PV.UUID)
					break segs
				}
			}
		}
	}
}

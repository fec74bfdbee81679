package testutil

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// LVMImage is a disk image with a GPT whose partitions are LVM2 physical volumes, made by
// LVM's own tools without device-mapper (nothing is activated), and the layout those tools
// report: the oracle a parser of LVM metadata is checked against.
type LVMImage struct {
	Path string
	Size int64
	// Parts are the partitions' byte ranges in the image, in table order.
	Parts []Range
	// PVs are the partitions' loop devices while the image is being made, in Parts order.
	PVs []string
	// ExtentSize is the VG's extent size in bytes.
	ExtentSize int64
	// LVs are the logical volumes by name.
	LVs map[string]*LVMLayout

	dir      string
	pvUUID   map[string]string // loop device → PV uuid
	pvStart  map[string]int64  // loop device → pe_start in bytes
	devIndex map[string]int    // loop device → index in Parts
}

// Range is a byte range of an image.
type Range struct{ Offset, Size int64 }

// LVMLayout is one LV as `lvs --segments` reports it.
type LVMLayout struct {
	Size     int64
	Segments []LVMSegment
}

// LVMSegment is one segment of an LV: its extents and where each stripe's extents are.
type LVMSegment struct {
	StartPE, SizePE int64
	StripeSize      int64 // bytes; 0 for linear
	// Stripes are (partition index, first extent on that PV, pe_start in bytes).
	Stripes []LVMStripe
}

// LVMStripe is where one stripe of a segment lies.
type LVMStripe struct {
	Part    int
	UUID    string
	PEStart int64
	StartPE int64
}

// MakeLVMImage makes an image of size bytes at path with a GPT of the given partition
// sizes (bytes), attaches a loop device over each partition's range, runs pvcreate on them
// and then build, which runs lvm commands (vgcreate, lvcreate --activate n, ...) through
// the given function with an LVM configuration private to the test (the host's
// /etc/lvm, its cache and locks are not touched). It skips (see Skip) without root,
// losetup, sfdisk or lvm2. The loop devices are detached before it returns (PVs holds
// their names for the record), so the image is free to be backed up.
func MakeLVMImage(t testing.TB, path string, size int64, parts []int64, build func(lvm func(args ...string) string, pvs []string)) *LVMImage {
	t.Helper()
	RequireRoot(t)
	lvmBin := RequireCommand(t, "lvm")
	sfdisk := RequireCommand(t, "sfdisk")
	losetup := RequireCommand(t, "losetup")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	script := "label: gpt\n"
	for i, p := range parts {
		script += fmt.Sprintf("size=%dKiB, type=E6D6D379-F507-44C2-A23C-238F2A3DF928, name=pv%d\n", p>>10, i)
	}
	cmd := exec.Command(sfdisk, "-q", path)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	out, err := exec.Command(sfdisk, "-J", path).Output()
	if err != nil {
		t.Fatalf("sfdisk -J: %v", err)
	}
	var table struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct{ Start, Size int64 }
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &table); err != nil {
		t.Fatal(err)
	}
	im := &LVMImage{Path: path, Size: size, dir: t.TempDir(), LVs: map[string]*LVMLayout{},
		pvUUID: map[string]string{}, pvStart: map[string]int64{}, devIndex: map[string]int{}}
	ss := table.PartitionTable.SectorSize
	var detach []func()
	for i, p := range table.PartitionTable.Partitions {
		r := Range{p.Start * ss, p.Size * ss}
		im.Parts = append(im.Parts, r)
		out, err := exec.Command(losetup, "-f", "--show", "-o", strconv.FormatInt(r.Offset, 10),
			"--sizelimit", strconv.FormatInt(r.Size, 10), path).CombinedOutput()
		if err != nil {
			Skip(t, "cannot attach a loop device: %v: %s", err, strings.TrimSpace(string(out)))
		}
		dev := strings.TrimSpace(string(out))
		attached := true
		t.Cleanup(func() {
			if attached {
				detachLoop(t, losetup, dev)
			}
		})
		detach = append(detach, func() { detachLoop(t, losetup, dev); attached = false })
		im.PVs = append(im.PVs, dev)
		im.devIndex[dev] = i
	}
	var filter []string
	for _, d := range im.PVs {
		filter = append(filter, strconv.Quote("a|^"+d+"$|"))
	}
	filter = append(filter, `"r|.*|"`)
	// activation = 0: no device-mapper at all (this kernel has none); hints, udev, the
	// devices file and backups are off so nothing outside the test's directory is written.
	conf := fmt.Sprintf(`devices { obtain_device_list_from_udev = 0 use_devicesfile = 0 hints = "none" filter = [ %s ] }
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
global { activation = 0 locking_dir = %q event_activation = 0 }
backup { backup = 0 archive = 0 }
`, strings.Join(filter, ", "), filepath.Join(im.dir, "lock"))
	if err := os.WriteFile(filepath.Join(im.dir, "lvm.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		c := exec.Command(lvmBin, args...)
		c.Env = append(os.Environ(), "LVM_SYSTEM_DIR="+im.dir, "LVM_SUPPRESS_FD_WARNINGS=1")
		var stderr strings.Builder
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			t.Fatalf("lvm %s: %v: %s", strings.Join(args, " "), err, stderr.String())
		}
		return string(out)
	}
	run(append([]string{"pvcreate", "-q"}, im.PVs...)...)
	build(run, im.PVs)
	im.readLayout(t, run)
	for _, d := range detach {
		d()
	}
	return im
}

// readLayout asks pvs, vgs and lvs where everything is.
func (im *LVMImage) readLayout(t testing.TB, run func(args ...string) string) {
	t.Helper()
	type report struct {
		Report []map[string][]map[string]string `json:"report"`
	}
	rows := func(out, key string) []map[string]string {
		var r report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("lvm report: %v: %s", err, out)
		}
		return r.Report[0][key]
	}
	num := func(s string) int64 {
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(s), "B"), 10, 64)
		if err != nil {
			t.Fatalf("lvm report number %q: %v", s, err)
		}
		return n
	}
	js := []string{"--reportformat", "json", "--units", "b", "--nosuffix"}
	for _, r := range rows(run(append([]string{"pvs", "-o", "pv_name,pv_uuid,pe_start"}, js...)...), "pv") {
		im.pvUUID[r["pv_name"]], im.pvStart[r["pv_name"]] = r["pv_uuid"], num(r["pe_start"])
	}
	for _, r := range rows(run(append([]string{"vgs", "-o", "vg_extent_size"}, js...)...), "vg") {
		im.ExtentSize = num(r["vg_extent_size"])
	}
	out := run(append([]string{"lvs", "--segments", "-o", "lv_name,lv_size,seg_start_pe,seg_size_pe,seg_pe_ranges,stripe_size"}, js...)...)
	for _, r := range rows(out, "seg") {
		l := im.LVs[r["lv_name"]]
		if l == nil {
			l = &LVMLayout{Size: num(r["lv_size"])}
			im.LVs[r["lv_name"]] = l
		}
		seg := LVMSegment{StartPE: num(r["seg_start_pe"]), SizePE: num(r["seg_size_pe"]), StripeSize: num(r["stripe_size"])}
		for _, pr := range strings.Fields(r["seg_pe_ranges"]) { // "/dev/loop1:4-4"
			dev, ext, ok := strings.Cut(pr, ":")
			first, _, ok2 := strings.Cut(ext, "-")
			if !ok || !ok2 {
				t.Fatalf("lvs seg_pe_ranges %q", r["seg_pe_ranges"])
			}
			seg.Stripes = append(seg.Stripes, LVMStripe{Part: im.devIndex[dev], UUID: im.pvUUID[dev],
				PEStart: im.pvStart[dev], StartPE: num(first)})
		}
		l.Segments = append(l.Segments, seg)
	}
}

// WriteLV writes the file src into the LV's extents in the image, as device-mapper would
// map them (linear, or striped chunk by chunk), from the layout the lvm tools reported.
func (im *LVMImage) WriteLV(t testing.TB, name, src string) {
	t.Helper()
	l := im.LVs[name]
	if l == nil {
		t.Fatalf("no lv %s", name)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(im.Path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, seg := range l.Segments {
		n := int64(len(seg.Stripes))
		segBytes := seg.SizePE * im.ExtentSize
		chunk := segBytes
		if n > 1 {
			chunk = seg.StripeSize
		}
		for off := int64(0); off < segBytes; off += chunk {
			c := off / chunk
			st := seg.Stripes[c%n]
			at := im.Parts[st.Part].Offset + st.PEStart + st.StartPE*im.ExtentSize + (c/n)*chunk
			lvOff := seg.StartPE*im.ExtentSize + off
			if _, err := io.Copy(io.NewOffsetWriter(out, at), io.NewSectionReader(in, lvOff, chunk)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

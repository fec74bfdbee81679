package tests

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cairn-backup/cairn/blockio/lvm"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// TestNBDLVM: the logical volumes inside a backed-up image are NBD exports. The image is
// TestFuseLVM's (a GPT of two PVs made by the lvm tools: lv1 in two segments around lv2,
// lv3 striped over both); each LV is filled with random bytes and a run of zeros, the
// first across lv1's two segments. qemu-img convert of ID/lvm/vg0/<lv> and of
// VOLUME/latest/lvm/vg0/<lv> equals what was written into the LV, qemu-img map shows the
// zeros as holes, tokens apply as for the backup, and an unknown VG or LV and a thin LV (the
// seed pv-kinds, backed up as a second volume) are refused with what is wrong.
func TestNBDLVM(t *testing.T) {
	testutil.RequireCommand(t, "qemu-img")
	dir := t.TempDir()
	vol := filepath.Join(dir, "disk.img")
	im := testutil.MakeLVMImage(t, vol, 64*mib, []int64{24 * mib, 24 * mib}, func(lvm func(...string) string, pvs []string) {
		lvm("vgcreate", "-q", "vg0", pvs[0], pvs[1])
		lvm("lvcreate", "-q", "--activate", "n", "--zero", "n", "-n", "lv1", "-L", "8M", "vg0", pvs[0])
		lvm("lvcreate", "-q", "--activate", "n", "--zero", "n", "-n", "lv2", "-L", "4M", "vg0", pvs[0])
		lvm("lvextend", "-q", "-L", "+4M", "vg0/lv1", pvs[0])
		lvm("lvcreate", "-q", "--activate", "n", "--zero", "n", "-i", "2", "-I", "64k", "-n", "lv3", "-L", "8M", "vg0")
	})
	if n := len(im.LVs["lv1"].Segments); n != 2 {
		t.Fatalf("lvs reports %d segments of lv1, want 2", n)
	}
	if n := len(im.LVs["lv3"].Segments[0].Stripes); n != 2 {
		t.Fatalf("lvs reports %d stripes of lv3, want 2", n)
	}
	// Zeros in each LV: lv1's cross the end of its first segment (8 MiB).
	zeros := map[string][2]int64{"lv1": {6 * mib, 10 * mib}, "lv2": {1 * mib, 2 * mib}, "lv3": {2 * mib, 5 * mib}}
	sums := map[string]string{}
	for i, name := range []string{"lv1", "lv2", "lv3"} {
		data := make([]byte, im.LVs[name].Size)
		_, _ = rand.NewChaCha8([32]byte{byte(i + 40)}).Read(data)
		z := zeros[name]
		clear(data[z[0]:z[1]])
		src := filepath.Join(dir, name+".src")
		if err := os.WriteFile(src, data, 0o600); err != nil {
			t.Fatal(err)
		}
		im.WriteLV(t, name, src)
		sum := sha256.Sum256(data)
		sums[name] = hex.EncodeToString(sum[:])
	}

	// A whole-disk PV with thin, RAID and snapshot LVs beside linear ones.
	seed, err := os.ReadFile("../blockio/lvm/testdata/pv-kinds.bin")
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := lvm.ReadLabel(bytes.NewReader(seed), int64(len(seed)))
	if err != nil {
		t.Fatal(err)
	}
	kinds := filepath.Join(dir, "kinds.img")
	if err := os.WriteFile(kinds, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(kinds, int64(hdr.DeviceSize)); err != nil {
		t.Fatal(err)
	}

	r := newCairnRepo(t, nil)
	b := r.createBackup(vol)
	kb := r.createBackup(kinds)
	s := startNBD(t, r)
	for _, name := range []string{"lv1", "lv2", "lv3"} {
		for _, export := range []string{b.ID + "/lvm/vg0/" + name, "disk.img/latest/lvm/vg0/" + name} {
			if got := qemuConvert(t, s.uri(export), filepath.Join(dir, strings.ReplaceAll(export, "/", "_")+".raw")); got != sums[name] {
				t.Errorf("qemu-img convert of export %s: sha256 %s, want what was written into %s, %s", export, got, name, sums[name])
			}
		}
		// The zeros are holes of the export (where they cover whole blocks of the image;
		// LVs start on MiB boundaries and stripe in 64 KiB chunks, so these do).
		var m qemuMap
		if err := json.Unmarshal([]byte(testutil.Qemu(t, "qemu-img", "map", "--output=json", "-f", "raw", s.uri(b.ID+"/lvm/vg0/"+name))), &m); err != nil {
			t.Fatal(err)
		}
		if z := zeros[name]; !m.holeCovers(z[0], z[1]) {
			t.Errorf("qemu-img map of %s: the zeros at [%d, %d) are not a hole: %+v", name, z[0], z[1], m)
		}
		if m.holeCovers(0, 64<<10) {
			t.Errorf("qemu-img map of %s: its random first 64 KiB is a hole: %+v", name, m)
		}
		if out := testutil.Qemu(t, "qemu-img", "info", "--output=json", s.uri(b.ID+"/lvm/vg0/"+name)); !strings.Contains(out, fmt.Sprintf(`"virtual-size": %d,`, im.LVs[name].Size)) {
			t.Errorf("qemu-img info of %s: %s; want the LV's size %d", name, out, im.LVs[name].Size)
		}
	}

	// What cannot be served says why.
	for export, want := range map[string]string{
		b.ID + "/lvm/vg9/lv1":          "holds no logical volume vg9/lv1",
		b.ID + "/lvm/vg0/nope":         "holds no logical volume vg0/nope",
		"disk.img/latest/lvm/vg0/nope": "holds no logical volume vg0/nope",
		kb.ID + "/lvm/vg2/thin1":       "thin volume",
		"no-such-backup/lvm/vg0/lv1":   "no available backup no-such-backup",
		"nope/latest/lvm/vg0/lv1":      "no volume nope with an available backup",
		b.ID + "/lvm/vg0":              "no available backup " + b.ID + "/lvm/vg0",
	} {
		out, err := exec.Command("qemu-img", "info", s.uri(export)).CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("qemu-img info of export %s: %v: %s; want it refused with %q", export, err, out, want)
		}
	}
	// The linear LVs of the same VG are served.
	if out, err := exec.Command("qemu-img", "info", s.uri(kb.ID+"/lvm/vg2/root")).CombinedOutput(); err != nil {
		t.Errorf("qemu-img info of vg2/root beside the thin LV: %v: %s", err, out)
	}

	// Tokens: TOKEN@ID/lvm/VG/LV, and a caller who cannot see the backup cannot see its LVs.
	tokens := filepath.Join(dir, "tokens")
	writeFile(t, tokens, "tok-admin root admin admin\ntok-bob bob p2 member\n")
	// One server at a time holds the index.
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	<-s.done
	g := startNBD(t, r, "--tokens", tokens)
	if got := qemuConvert(t, g.uri("tok-admin@"+b.ID+"/lvm/vg0/lv3"), filepath.Join(dir, "tok-lv3.raw")); got != sums["lv3"] {
		t.Errorf("TOKEN@ID/lvm/vg0/lv3: sha256 %s, want %s", got, sums["lv3"])
	}
	for _, export := range []string{b.ID + "/lvm/vg0/lv3", "tok-bob@" + b.ID + "/lvm/vg0/lv3", "wrong@disk.img/latest/lvm/vg0/lv3"} {
		if out, err := exec.Command("qemu-img", "info", g.uri(export)).CombinedOutput(); err == nil {
			t.Errorf("export %s was served with tokens on: %s", export, out)
		}
	}
}

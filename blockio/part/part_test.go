package part

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// sfdiskTable is what `sfdisk --json` reports: the reference our parser must agree with.
type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		SectorSize int64  `json:"sectorsize"`
		Partitions []struct {
			Node  string `json:"node"`
			Start int64  `json:"start"`
			Size  int64  `json:"size"`
			Type  string `json:"type"`
			Name  string `json:"name"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

// TestPartitionsAgreeWithSfdisk writes real tables with sfdisk and compares every partition
// with what sfdisk itself reads back.
func TestPartitionsAgreeWithSfdisk(t *testing.T) {
	sfdisk := testutil.RequireCommand(t, "sfdisk")
	for _, tc := range []struct {
		name, script string
		size         int64
		kind         string
		want         int
	}{
		{"mbr", "label: dos\n,4M,83\n,2M,82\n,,83\n", 20 << 20, "mbr", 3},
		{"mbr-logical", "label: dos\n,4M,83\n,,E\n,2M,83\n,2M,82\n,1M,83\n", 20 << 20, "mbr", 4},
		{"gpt", "label: gpt\nsize=4M, type=L, name=root\nsize=2M, type=S\nsize=1M, type=L, name=\"data one\"\n", 20 << 20, "gpt", 3},
		{"gpt-128", "label: gpt\n" + strings.Repeat("size=64K, type=L\n", 40), 64 << 20, "gpt", 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.img")
			if err := os.WriteFile(img, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, tc.size); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(sfdisk, "-q", img)
			cmd.Stdin = strings.NewReader(tc.script)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("sfdisk: %v: %s", err, out)
			}
			out, err := exec.Command(sfdisk, "-J", img).Output()
			if err != nil {
				t.Fatalf("sfdisk -J: %v", err)
			}
			var ref sfdiskTable
			if err := json.Unmarshal(out, &ref); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			kind, parts, err := Read(f, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			if kind != tc.kind || len(parts) != tc.want {
				t.Fatalf("got %s with %d partitions, want %s with %d: %+v", kind, len(parts), tc.kind, tc.want, parts)
			}
			byNum := map[int]Partition{}
			for _, p := range parts {
				byNum[p.Number] = p
			}
			ss := ref.PartitionTable.SectorSize
			seen := 0
			for _, rp := range ref.PartitionTable.Partitions {
				n, _ := strconv.Atoi(strings.TrimPrefix(rp.Node, img))
				if rp.Type == "5" || rp.Type == "f" || rp.Type == "85" {
					if _, ok := byNum[n]; ok {
						t.Errorf("extended partition %d exposed", n)
					}
					continue
				}
				p, ok := byNum[n]
				if !ok {
					t.Errorf("partition %d missing", n)
					continue
				}
				seen++
				if p.Start != rp.Start*ss || p.Length != rp.Size*ss {
					t.Errorf("partition %d: start %d length %d, sfdisk says %d %d", n, p.Start, p.Length, rp.Start*ss, rp.Size*ss)
				}
				if kind == "gpt" && (p.Type != rp.Type || p.Name != rp.Name) {
					t.Errorf("partition %d: type %s name %q, sfdisk says %s %q", n, p.Type, p.Name, rp.Type, rp.Name)
				}
			}
			if seen != len(parts) {
				t.Errorf("exposed %d partitions, sfdisk knows %d", len(parts), seen)
			}
		})
	}
}

// mbrImage builds an image whose first sector holds the given primary entries.
func mbrImage(size int, entries ...[4]uint32) []byte { // boot, type, start, sectors
	img := make([]byte, size)
	for i, e := range entries {
		o := 446 + 16*i
		img[o], img[o+4] = byte(e[0]), byte(e[1])
		binary.LittleEndian.PutUint32(img[o+8:], e[2])
		binary.LittleEndian.PutUint32(img[o+12:], e[3])
	}
	img[510], img[511] = 0x55, 0xaa
	return img
}

// gptImage builds a minimal valid GPT with one partition; corrupt breaks a CRC.
func gptImage(corrupt string) []byte {
	img := mbrImage(1<<20, [4]uint32{0, 0xee, 1, 2047})
	le := binary.LittleEndian
	hdr := img[512:1024]
	copy(hdr, "EFI PART")
	le.PutUint32(hdr[8:], 0x00010000)
	le.PutUint32(hdr[12:], 92)
	le.PutUint64(hdr[24:], 1)
	le.PutUint64(hdr[72:], 2)
	le.PutUint32(hdr[80:], 128)
	le.PutUint32(hdr[84:], 128)
	table := img[1024 : 1024+128*128]
	table[0] = 1 // any non-zero type GUID
	le.PutUint64(table[32:], 100)
	le.PutUint64(table[40:], 199)
	le.PutUint32(hdr[88:], crc32.ChecksumIEEE(table))
	le.PutUint32(hdr[16:], crc32.ChecksumIEEE(hdr[:92]))
	switch corrupt {
	case "header":
		hdr[30]++
	case "entries":
		table[33]++
	}
	return img
}

func TestPartitionsSynthetic(t *testing.T) {
	noSig := mbrImage(1<<20, [4]uint32{0, 0x83, 1, 10})
	noSig[511] = 0
	bootSector := mbrImage(1<<20, [4]uint32{0x31, 0x83, 1, 10}) // a boot indicator no table has
	for _, tc := range []struct {
		name string
		img  []byte
		size int64 // 0: len(img)
		want []Partition
	}{
		{"empty", make([]byte, 1<<20), 0, nil},
		{"tiny", []byte{1, 2, 3}, 0, nil},
		{"no signature", noSig, 0, nil},
		{"boot sector", bootSector, 0, nil},
		{"mbr", mbrImage(1<<20, [4]uint32{0x80, 0x83, 1, 10}, [4]uint32{}, [4]uint32{0, 0x07, 20, 5}), 0,
			[]Partition{{Number: 1, Start: 512, Length: 5120, Type: "0x83"}, {Number: 3, Start: 10240, Length: 2560, Type: "0x07"}}},
		{"clipped to image", mbrImage(1<<20, [4]uint32{0, 0x83, 2000, 100}), 0,
			[]Partition{{Number: 1, Start: 2000 * 512, Length: 1<<20 - 2000*512, Type: "0x83"}}},
		{"beyond the end", mbrImage(1<<20, [4]uint32{0, 0x83, 5000, 100}), 0, nil},
		{"start zero", mbrImage(1<<20, [4]uint32{0, 0x83, 0, 100}), 0, nil},
		{"gpt", gptImage(""), 0, []Partition{{Number: 1, Start: 51200, Length: 51200, Type: "00000001-0000-0000-0000-000000000000"}}},
		{"gpt bad header crc", gptImage("header"), 0, nil},
		{"gpt bad entries crc", gptImage("entries"), 0, nil},
		{"gpt image shorter than its table", gptImage(""), 4096, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := tc.size
			if size == 0 {
				size = int64(len(tc.img))
			}
			_, got, err := Read(bytes.NewReader(tc.img[:min(int64(len(tc.img)), size)]), size)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("partition %d: got %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestPartitionsEBRLoop: a chain of extended boot records pointing back at itself ends.
func TestPartitionsEBRLoop(t *testing.T) {
	img := mbrImage(1<<20, [4]uint32{0, 0x05, 100, 1000})
	ebr := mbrImage(512, [4]uint32{0, 0x83, 10, 10}, [4]uint32{0, 0x05, 0 + 1, 10})
	copy(img[100*512:], ebr)
	// The second EBR (at 101) points back to 101 + ... = itself via start 1.
	copy(img[101*512:], mbrImage(512, [4]uint32{0, 0x83, 10, 10}, [4]uint32{0, 0x05, 1, 10}))
	_, got, err := Read(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Number != 5 || got[1].Number != 6 {
		t.Fatalf("got %+v, want logicals 5 and 6", got)
	}
}

// FuzzPartitions: no input panics, and every partition lies inside the image with a unique
// number. Seeds under testdata/fuzz/FuzzPartitions include sfdisk-made MBR and GPT sectors.
func FuzzPartitions(f *testing.F) {
	f.Add(mbrImage(4096, [4]uint32{0x80, 0x83, 1, 6}))
	f.Add(gptImage("")[:34*512])
	f.Fuzz(func(t *testing.T, data []byte) {
		size := int64(len(data))
		_, parts, err := Read(bytes.NewReader(data), size)
		if err != nil {
			return
		}
		seen := map[int]bool{}
		for _, p := range parts {
			if p.Start <= 0 || p.Length <= 0 || p.Start+p.Length > size || seen[p.Number] {
				t.Fatalf("bad partition %+v in an image of %d bytes", p, size)
			}
			seen[p.Number] = true
		}
	})
}

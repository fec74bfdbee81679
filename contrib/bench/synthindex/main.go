// Command synthindex measures the index at scale without real data: it fills a Badger index
// through index.AddPack with N synthetic blob entries (random 32-byte addresses, 1,024 to a
// pack, as 16 MiB packs of 16 KiB blocks hold; -per-pack fewer, for an index of many packs) and one backup record per 65,536 blobs (a
// 1 GiB volume), closes it, and reports the bytes on disk per blob, the time to open it again,
// and the latency of dedup lookups (index.Lookup) of addresses it holds (hits) and of
// addresses it does not (misses). Used for docs/benchmarks.md ("index at scale").
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
)

const blobsPerBackup = 65536

// blobsPerPack is -per-pack: fewer blobs a pack make more packs for as many blobs, which
// measures lookups whose pack serial is not in the index's cache (past 65,536 packs).
var blobsPerPack = 1024

func main() {
	dir := flag.String("dir", "", "index directory (created; reused with -reuse)")
	n := flag.Int64("n", 1_000_000, "blob entries to write")
	samples := flag.Int("samples", 200_000, "lookups to time, of hits and of misses each")
	reuse := flag.Bool("reuse", false, "measure an index this tool filled before (same -n) instead of filling one")
	flag.IntVar(&blobsPerPack, "per-pack", blobsPerPack, "blob entries to a pack")
	warm := flag.Bool("warm", false, "before timing, look up one blob of every pack (untimed), as a running gateway has")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "synthindex: -dir DIR is required")
		os.Exit(2)
	}
	if err := run(*dir, *n, *samples, *reuse, *warm); err != nil {
		fmt.Fprintln(os.Stderr, "synthindex:", err)
		os.Exit(1)
	}
}

// addrOf is the address of blob i: a seeded random function of i, so that hits can be drawn
// again without keeping the addresses. Misses use another seed.
func addrOf(seed uint64, i int64) repo.Address {
	var a repo.Address
	rng := rand.NewPCG(seed, uint64(i))
	for j := 0; j < len(a); j += 8 {
		binary.LittleEndian.PutUint64(a[j:], rng.Uint64())
	}
	return a
}

func run(dir string, n int64, samples int, reuse, warm bool) error {
	if !reuse {
		if err := fill(dir, n); err != nil {
			return err
		}
	}
	start := time.Now()
	ix, err := index.Open(dir)
	if err != nil {
		return err
	}
	open := time.Since(start)
	size := ix.Size()
	fmt.Printf("blobs %d  index %d bytes  %.1f B/blob  open %v\n", n, size, float64(size)/float64(n), open.Round(time.Millisecond))
	if warm {
		start := time.Now()
		for i := int64(0); i < n; i += int64(blobsPerPack) {
			if _, _, err := ix.Lookup(addrOf(1, i)); err != nil {
				return err
			}
		}
		fmt.Printf("warmed: one lookup a pack, %d packs in %v\n", (n+int64(blobsPerPack)-1)/int64(blobsPerPack), time.Since(start).Round(time.Millisecond))
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for _, kind := range []string{"hit", "miss"} {
		lat := make([]time.Duration, samples)
		for s := range lat {
			var a repo.Address
			if kind == "hit" {
				a = addrOf(1, rng.Int64N(n))
			} else {
				a = addrOf(2, rng.Int64N(1<<62))
			}
			t := time.Now()
			_, ok, err := ix.Lookup(a)
			lat[s] = time.Since(t)
			if err != nil {
				return err
			}
			if ok != (kind == "hit") {
				return fmt.Errorf("lookup of a %s: found=%v", kind, ok)
			}
		}
		slices.Sort(lat)
		var sum time.Duration
		for _, d := range lat {
			sum += d
		}
		fmt.Printf("lookup %-4s p50 %v  p99 %v  mean %v  (%d samples)\n", kind, lat[len(lat)/2], lat[len(lat)*99/100],
			sum/time.Duration(len(lat)), len(lat))
	}
	fmt.Printf("peak RSS %s; now %s\n", procStatus("VmHWM"), procStatus("RssAnon", "RssFile"))
	return ix.Close()
}

func fill(dir string, n int64) error {
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("%s exists: give a new directory, or -reuse to measure it", dir)
	}
	ix, err := index.Open(dir)
	if err != nil {
		return err
	}
	start := time.Now()
	entries := make([]repo.PackEntry, 0, blobsPerPack)
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := int64(0); i < n; {
		var pack repo.PackID // random, as a hash is: Badger compresses its blocks
		pa := addrOf(4, i)
		copy(pack[:], pa[:])
		entries = entries[:0]
		var off uint32
		for ; i < n && len(entries) < blobsPerPack; i++ {
			entries = append(entries, repo.PackEntry{Addr: addrOf(1, i), Location: repo.Location{
				Pack: pack, Offset: off, Length: 9000 + uint32(i%4096), PlainLen: 16384, Type: repo.BlobData}})
			off += 9000 + uint32(i%4096)
			if i%blobsPerBackup == 0 {
				b := &index.Backup{ID: fmt.Sprintf("synth-%09d", i/blobsPerBackup), Name: "synth", VolumeID: "vol-synth",
					Project: "p", Status: index.BackupAvailable, Size: 1 << 30, RootLevel: 1,
					Stats:     repo.Stats{DataBlocks: blobsPerBackup, NewBlobs: blobsPerBackup},
					CreatedAt: created.Add(time.Duration(i) * time.Millisecond), UpdatedAt: created}
				b.Root = addrOf(3, i)
				if err := ix.PutBackup(b); err != nil {
					return err
				}
			}
		}
		if err := ix.AddPack(pack, int64(off), entries); err != nil {
			return err
		}
		if i%(n/10+1) < int64(blobsPerPack) {
			fmt.Fprintf(os.Stderr, "%d blobs, %.0f s\n", i, time.Since(start).Seconds())
		}
	}
	if err := ix.Close(); err != nil {
		return err
	}
	fmt.Printf("filled %d blobs in %v (%.0f blobs/s)\n", n, time.Since(start).Round(time.Second), float64(n)/time.Since(start).Seconds())
	return nil
}

// procStatus returns fields of /proc/self/status (VmHWM: the peak resident set; RssAnon: the
// heap and stacks; RssFile: file pages mapped, as Badger's tables are).
func procStatus(names ...string) string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, n := range names {
			if v, ok := strings.CutPrefix(l, n+":"); ok {
				out = append(out, n+" "+strings.TrimSpace(v))
			}
		}
	}
	return strings.Join(out, ", ")
}

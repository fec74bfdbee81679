package tests

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// The corruption matrix: each kind of damage to the objects of one backup (A), on a local and
// an S3 repository, encrypted and not. For each: check finds it with the right class; restore
// of A is byte-exact or refused as damage (exit 8), never wrong bytes; the other backup (B)
// restores byte-exact; and repo repair heals what it can, forgets what it cannot when asked,
// after which gc runs and check is clean. The table it prints is in docs/reliability.md.

type damageKind struct {
	name  string
	class string // what check must report ("" = nothing: the damage is not to the repository)
	apply func(t *testing.T, rng *rand.Rand, objs aObjects)
	// seed, when set, seeds A's image and the random choices of apply in place of the row's
	// place: the random flips keep their outcome (docs/reliability.md) as rows are added.
	seed int
	// decide, when set, is the repair flag an admin gives when plain repair leaves the choice
	// to them (it exits 8), in place of --forget-damaged; restored is the object it must
	// bring back.
	decide   string
	restored func(o aObjects) string
}

// aObjects are backup A's objects as files under the repository's root on disk.
type aObjects struct {
	root      string
	packs     []string
	packIndex []string
	manifest  string
	copy      string // the manifest's second copy
	volume    string // A's volume's record (meta/volumes/)
	volCopy   string // its second copy (meta-copies/volumes/)
}

func flipAt(t *testing.T, path string, off int64) { xorAt(t, path, off, 0x5a) }

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

var damageKinds = []damageKind{
	{name: "pack: byte flipped in a block", class: "damaged data", apply: func(t *testing.T, _ *rand.Rand, o aObjects) {
		flipAt(t, o.packs[0], fileSize(t, o.packs[0])/3)
	}},
	{name: "pack: truncated", class: "damaged data", apply: func(t *testing.T, _ *rand.Rand, o aObjects) {
		if err := os.Truncate(o.packs[0], fileSize(t, o.packs[0])/2); err != nil {
			t.Fatal(err)
		}
	}},
	{name: "pack: deleted", class: "missing object", apply: func(t *testing.T, _ *rand.Rand, o aObjects) {
		if err := os.Remove(o.packs[0]); err != nil {
			t.Fatal(err)
		}
	}},
	{name: "pack: trailer byte flipped", class: "damaged data", apply: func(t *testing.T, _ *rand.Rand, o aObjects) {
		flipAt(t, o.packs[0], fileSize(t, o.packs[0])-40) // inside the sealed trailer, before the footer
	}},
	{name: "pack index object: byte flipped", class: "damaged data", apply: func(t *testing.T, _ *rand.Rand, o aObjects) {
		flipAt(t, o.packIndex[0], fileSize(t, o.packIndex[0])/2)
	}},
	{name: "pack index object: deleted", class: "missing object", apply: func(t *testing.T, _ *rand.Rand, o aObjects) {
		if err := os.Remove(o.packIndex[0]); err != nil {
			t.Fatal(err)
		}
	}},
	{name: "manifest: byte flipped", class: "damaged data", apply: func(t *testing.T, _ *rand.Rand, o aObjects) {
		flipAt(t, o.manifest, fileSize(t, o.manifest)/2)
	}},
	{name: "manifest's second copy: byte flipped", class: "damaged data", apply: func(t *testing.T, _ *rand.Rand, o aObjects) {
		flipAt(t, o.copy, fileSize(t, o.copy)/2)
	}},
	{name: "manifest and its second copy: byte flipped", class: "damaged data", apply: func(t *testing.T, _ *rand.Rand, o aObjects) {
		flipAt(t, o.manifest, fileSize(t, o.manifest)/2)
		flipAt(t, o.copy, fileSize(t, o.copy)/3)
	}},
	{name: "volume record: byte flipped", class: "damaged data", apply: func(t *testing.T, _ *rand.Rand, o aObjects) {
		flipAt(t, o.volume, fileSize(t, o.volume)/2)
	}},
	{name: "volume record and its second copy: byte flipped", class: "damaged data", apply: func(t *testing.T, _ *rand.Rand, o aObjects) {
		flipAt(t, o.volume, fileSize(t, o.volume)/2)
		flipAt(t, o.volCopy, fileSize(t, o.volCopy)/3)
	}},
	{name: "random byte flips in A's objects", class: "", apply: func(t *testing.T, rng *rand.Rand, o aObjects) {
		all := append(append(append([]string(nil), o.packs...), o.packIndex...), o.manifest, o.copy)
		for range 3 {
			p := all[rng.IntN(len(all))]
			flipAt(t, p, rng.Int64N(fileSize(t, p)))
		}
	}, seed: 9},
	// Removed outside cairn (by hand, a lifecycle rule): no delete began, so its copy is the
	// backup's, and repair stores the manifest again (docs/design.md, "A manifest lost, its copy
	// left").
	{name: "manifest: deleted", class: "missing object", apply: func(t *testing.T, _ *rand.Rand, o aObjects) {
		if err := os.Remove(o.manifest); err != nil {
			t.Fatal(err)
		}
	}},
	// Removed outside cairn, or by a cairn from before the copies: only the admin can tell,
	// and --restore-meta is their choice that it was lost (docs/design.md, "A metadata object
	// lost, its copy left").
	{name: "volume record: deleted", class: "missing object", apply: func(t *testing.T, _ *rand.Rand, o aObjects) {
		if err := os.Remove(o.volume); err != nil {
			t.Fatal(err)
		}
	}, decide: "--restore-meta", restored: func(o aObjects) string { return o.volume }},
}

func TestCorruptionMatrix(t *testing.T) {
	srv := testutil.StartS3(t)
	var (
		mu   sync.Mutex
		rows []matrixRow
		n    int // subtests so far
	)
	for _, enc := range []string{"none", "aes-256-gcm"} {
		for _, where := range []string{"local", "s3"} {
			for ki, k := range damageKinds {
				setup := where + ", " + enc
				order := n // the table keeps the matrix's order, not the finishing order
				n++
				t.Run(fmt.Sprintf("%s/%s/%d", where, enc, ki), func(t *testing.T) {
					t.Parallel() // each subtest has its own repository (and S3 prefix): scrypt and fsyncs overlap
					dir := t.TempDir()
					env := []string{"CAIRN_PASSWORD=matrix"}
					var r *cairnRepo
					var root string
					if where == "local" {
						r = newCairnRepo(t, env, "--encryption", enc)
						root = r.Dir
					} else {
						prefix := fmt.Sprintf("m-%s-%d", strings.ReplaceAll(enc, "-", ""), ki)
						r = newS3Repo(t, srv, prefix, env, "--encryption", enc)
						root = filepath.Join(srv.Dir, srv.Bucket, prefix)
					}
					files := func(sub string) map[string]bool {
						m := map[string]bool{}
						_ = filepath.Walk(filepath.Join(root, sub), func(p string, fi os.FileInfo, err error) error {
							if err == nil && fi.Mode().IsRegular() && !strings.HasPrefix(fi.Name(), ".") {
								m[p] = true
							}
							return nil
						})
						return m
					}
					volA := filepath.Join(dir, "a.img")
					seed := cmp.Or(k.seed, ki)
					testutil.WriteImage(t, volA, 3*mib, int64(100+seed), testutil.Mixed)
					shaA := testutil.SHA256File(t, volA)
					a := r.createBackup(volA)
					vol := hex.EncodeToString([]byte(a.VolumeID))
					objs := aObjects{root: root, manifest: filepath.Join(root, "manifests", a.ID), copy: filepath.Join(root, "manifest-copies", a.ID),
						volume: filepath.Join(root, "meta", "volumes", vol), volCopy: filepath.Join(root, "meta-copies", "volumes", vol)}
					for p := range files("packs") {
						objs.packs = append(objs.packs, p)
					}
					for p := range files("packindex") {
						objs.packIndex = append(objs.packIndex, p)
					}
					sort.Strings(objs.packs)
					sort.Strings(objs.packIndex)
					volB := filepath.Join(dir, "b.img")
					testutil.WriteImage(t, volB, 3*mib, int64(200+ki), testutil.Random)
					shaB := testutil.SHA256File(t, volB)
					b := r.createBackup(volB)
					if len(objs.packs) != 1 || len(objs.packIndex) != 1 {
						t.Fatalf("backup A has %d packs and %d index objects, want 1 each", len(objs.packs), len(objs.packIndex))
					}

					k.apply(t, rand.New(rand.NewPCG(uint64(seed), 9)), objs)

					res := r.run("repo", "check", "--read-data")
					detected := "yes"
					switch {
					case res.Code != 8:
						t.Errorf("%s: check exit %d, want 8\n%s%s", k.name, res.Code, res.Stdout, res.Stderr)
						detected = "NO"
					case k.class != "" && !strings.Contains(res.Stdout, "problem: "+k.class):
						t.Errorf("%s: check does not say %q:\n%s", k.name, k.class, res.Stdout)
						detected = "wrong class"
					case strings.Contains(res.Stdout, b.ID):
						t.Errorf("%s: check blames the intact backup B:\n%s", k.name, res.Stdout)
					}
					outA := filepath.Join(dir, "a-out.img")
					restoreA := "refused (exit 8)"
					switch rr := r.run("--quiet", "backup", "restore", "--yes", a.ID, "--to", outA); rr.Code {
					case 0:
						if got := testutil.SHA256File(t, outA); got != shaA {
							t.Fatalf("%s: restore of A exited 0 with wrong bytes", k.name)
						}
						restoreA = "byte-exact"
						os.Remove(outA)
					case 8:
					default:
						t.Errorf("%s: restore of A: exit %d, want 0 or 8: %s", k.name, rr.Code, rr.Stderr)
					}
					r.restoreMatches(b.ID, shaB, dir)

					// Repair heals what it can; what it cannot, the admin forgets; then gc runs.
					healed := "healed"
					switch rr := r.run("repo", "repair"); {
					case rr.Code != 0 && k.decide != "":
						healed = "stored again (" + k.decide + ")"
						r.mustRun("repo", "repair", k.decide)
						if _, err := os.Stat(k.restored(objs)); err != nil {
							t.Errorf("%s: after repair %s: %v", k.name, k.decide, err)
						}
					case rr.Code != 0:
						healed = "forgotten"
						r.mustRun("repo", "repair", "--forget-damaged")
					case k.decide != "":
						t.Errorf("%s: repair exited 0 without the admin's %s:\n%s", k.name, k.decide, rr.Stdout)
					}
					r.mustRun("--quiet", "repo", "gc")
					r.checkClean()
					r.restoreMatches(b.ID, shaB, dir)
					if healed == "healed" {
						r.restoreMatches(a.ID, shaA, dir)
					}
					mu.Lock()
					rows = append(rows, matrixRow{order, setup, k.name, detected, restoreA, healed})
					mu.Unlock()
				})
			}
		}
	}
	t.Cleanup(func() { logMatrix(t, rows) }) // after the parallel subtests end
}

// matrixRow is one line of the corruption matrix's table; order is its subtest's place.
type matrixRow struct {
	order                                   int
	setup, kind, detected, restoreA, healed string
}

func logMatrix(t *testing.T, rows []matrixRow) {
	sort.Slice(rows, func(i, j int) bool { return rows[i].order < rows[j].order })
	var sb strings.Builder
	sb.WriteString("| repository | damage to backup A | detected by check | restore of A | after repo repair |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s |\n", r.setup, r.kind, r.detected, r.restoreA, r.healed)
	}
	t.Logf("corruption matrix:\n%s", sb.String())
}

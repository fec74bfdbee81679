package repo_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// packsIn returns the ids of the packs of the local repository in dir/repo.
func packsIn(t *testing.T, dir string) []repo.PackID {
	t.Helper()
	var ids []repo.PackID
	for _, p := range packFiles(dir) {
		id, err := repo.ParsePackID(filepath.Base(p))
		if err != nil {
			t.Fatalf("pack file %s: %v", p, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// indexObjects returns the paths of the index objects of pack id, in key order.
func indexObjects(t *testing.T, dir string, id repo.PackID) []string {
	t.Helper()
	objs, err := filepath.Glob(filepath.Join(dir, "repo", "packindex", "*-"+id.String()))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(objs)
	return objs
}

// addDamagedIndexObject stores a second index object of pack id, a copy of its first one
// written a nanosecond later with a byte flipped, and returns its path.
func addDamagedIndexObject(t *testing.T, dir string, id repo.PackID) string {
	t.Helper()
	objs := indexObjects(t, dir, id)
	if len(objs) != 1 {
		t.Fatalf("pack %s has index objects %v, want one", id, objs)
	}
	stamp, _, _ := strings.Cut(filepath.Base(objs[0]), "-")
	n, err := strconv.ParseUint(stamp, 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(objs[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x01
	p := filepath.Join(filepath.Dir(objs[0]), fmt.Sprintf("%016x-%s", n+1, id))
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// damageTrailer flips the last byte of pack id's trailer, just before its footer.
func damageTrailer(t *testing.T, dir string, id repo.PackID) {
	t.Helper()
	p := filepath.Join(dir, "repo", filepath.FromSlash(id.Key()))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-17] ^= 0x01 // the footer is 16 bytes
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A pack with a good index object and a second, damaged one: repair removes the damaged one,
// keeps the good one, and check is clean after. Before, a good index object meant no case of
// repair's applied, so the damaged one stayed and every check reported it (found by review).
// With the trailer damaged too in an unencrypted repository, the rewrite of the pack is the
// pack itself, byte for byte, which left the damaged index object as well.
func TestRepairRemovesADamagedSecondIndexObject(t *testing.T) {
	for _, c := range []struct {
		name          string
		init          repo.InitOptions
		damageTrailer bool
	}{
		{"unencrypted", repo.InitOptions{Compression: repo.CompressNone}, false},
		{"encrypted", repo.InitOptions{Encryption: repo.EncryptionAES, Password: "pw"}, false},
		{"unencrypted, trailer damaged too: the pack is rewritten in place", repo.InitOptions{Compression: repo.CompressNone}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, c.init)
			vol := randomBytes(81, 1<<20)
			m := f.backup(t, "a", &memSource{data: vol}, nil)
			ids := packsIn(t, f.dir)
			if len(ids) != 1 {
				t.Fatalf("packs %v, want one", ids)
			}
			good := indexObjects(t, f.dir, ids[0])[0]
			bad := addDamagedIndexObject(t, f.dir, ids[0])
			if c.damageTrailer {
				damageTrailer(t, f.dir, ids[0])
			}
			rep, err := f.r.Check(ctx, repo.CheckOptions{})
			if err != nil || rep.OK() || !strings.Contains(strings.Join(rep.Problems, "\n"), filepath.Base(bad)) {
				t.Fatalf("check before the repair: %v %q, want the damaged index object named", err, rep.Problems)
			}
			if _, _, err := f.r.RepairPacks(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(bad); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the damaged index object after repair: %v, want it gone", err)
			}
			if _, err := os.Stat(good); err != nil {
				t.Fatalf("the good index object after repair: %v", err)
			}
			f.mustCheck(t)
			if got := f.restore(t, m); sha256.Sum256(got) != sha256.Sum256(vol) {
				t.Fatal("the backup restores different bytes after repair")
			}
		})
	}
}

// A repair that stalls past --lock-stale (a paused VM; a gc elsewhere may have broken its lock
// and be running) deletes nothing more once it wakes: like gc, it checks its lock before each
// index object, deletion record and pack it removes. Before, it checked at no point (found by
// review).
func TestRepairStopsWhenItsLockIsLost(t *testing.T) {
	for _, c := range []struct {
		name    string
		init    repo.InitOptions
		backups int
		prepare func(t *testing.T, dir string, id repo.PackID)
		// after checks the backend once repair has stopped, given the packs before it.
		after func(t *testing.T, dir string, before []repo.PackID)
		// trailer: the stall comes at the first trailer read, not at an index object's removal.
		trailer bool
	}{
		{"before the old pack of a rewrite goes", repo.InitOptions{Encryption: repo.EncryptionAES, Password: "pw"}, 1,
			func(t *testing.T, dir string, id repo.PackID) { damageTrailer(t, dir, id) },
			func(t *testing.T, dir string, before []repo.PackID) {
				after := packsIn(t, dir)
				if !slices.Contains(after, before[0]) {
					t.Fatalf("the pack with the damaged trailer is gone after the stalled repair")
				}
				if rec, _ := filepath.Glob(filepath.Join(dir, "repo", "deleted", "*")); len(rec) != 0 {
					t.Fatalf("the stalled repair wrote a deletion record: %v", rec)
				}
			}, false},
		{"before a damaged index object goes", repo.InitOptions{Compression: repo.CompressNone}, 2,
			func(t *testing.T, dir string, id repo.PackID) { addDamagedIndexObject(t, dir, id) },
			func(t *testing.T, dir string, before []repo.PackID) {
				left := 0
				for _, id := range before {
					left += len(indexObjects(t, dir, id)) - 1
				}
				if left != 1 {
					t.Fatalf("%d damaged index objects left after the stalled repair, want 1 (it stalled removing the other)", left)
				}
			}, false},
		{"before an index object for a pack whose only one is damaged", repo.InitOptions{Compression: repo.CompressNone}, 1,
			func(t *testing.T, dir string, id repo.PackID) {
				good := indexObjects(t, dir, id)
				addDamagedIndexObject(t, dir, id)
				if err := os.Remove(good[0]); err != nil {
					t.Fatal(err)
				}
			},
			func(t *testing.T, dir string, before []repo.PackID) {
				if objs := indexObjects(t, dir, before[0]); len(objs) != 1 {
					t.Fatalf("index objects after the stalled repair: %v, want only the damaged one (it stalled reading the trailer)", objs)
				}
			}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			be := newStopGC(t, dir, c.init)
			f := fixtureOn(t, be, dir, "index", repo.Options{Password: c.init.Password, ChunkCacheBytes: 8 << 20, Lock: repo.LockOptions{StaleAfter: time.Second}})
			var vols [][]byte
			var ms []*repo.Manifest
			for i := range c.backups {
				vols = append(vols, randomBytes(uint64(90+i), 1<<20))
				ms = append(ms, f.backup(t, "b"+itoa(i), &memSource{data: vols[i]}, nil))
			}
			before := packsIn(t, dir)
			if len(before) != c.backups {
				t.Fatalf("packs %v, want %d", before, c.backups)
			}
			for _, id := range before {
				c.prepare(t, dir, id)
			}
			if c.trailer {
				be.stallTrailer.Store(int64(1500 * time.Millisecond))
			} else {
				be.stallAt.Store(int64(1500 * time.Millisecond))
			}
			if _, _, err := f.r.RepairPacks(ctx); !errors.Is(err, repo.ErrLockLost) {
				t.Fatalf("repair that stalled 1.5 s with --lock-stale 1s: %v, want its lock lost", err)
			}
			c.after(t, dir, before)
			for i, m := range ms {
				if got := f.restore(t, m); !bytes.Equal(got, vols[i]) {
					t.Fatalf("backup %s differs after the stalled repair", m.ID)
				}
			}
		})
	}
}

// flipFirstRead flips a byte in the middle of the first read of a whole pack: a bit flipped
// on the way (a link, a bad DIMM), not on the disk.
type flipFirstRead struct {
	backend.Backend
	key     string
	size    int64
	flipped atomic.Bool
}

func (b *flipFirstRead) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	data, err := b.Backend.GetRange(ctx, key, offset, length)
	if err == nil && key == b.key && offset == 0 && length == b.size && b.flipped.CompareAndSwap(false, true) {
		data[len(data)/3] ^= 0x40
	}
	return data, err
}

// A repair that rewrites a pack with a damaged trailer reads the pack again before it leaves
// out a blob that did not verify: the old pack is deleted after the rewrite, so one bad read
// would otherwise lose a good block for good. Before, the blob was left out at once and its
// backup was damaged by the repair.
func TestRepairDoesNotDropABlobOnOneBadRead(t *testing.T) {
	for _, init := range []repo.InitOptions{{Compression: repo.CompressNone}, {Encryption: repo.EncryptionAES, Password: "pw"}} {
		t.Run(cmp.Or(init.Encryption, "unencrypted"), func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, init)
			vol := randomBytes(83, 1<<20)
			m := f.backup(t, "a", &memSource{data: vol}, nil)
			ids := packsIn(t, f.dir)
			if len(ids) != 1 {
				t.Fatalf("packs %v, want one", ids)
			}
			damageTrailer(t, f.dir, ids[0])
			be, err := local.Open(filepath.Join(f.dir, "repo"))
			if err != nil {
				t.Fatal(err)
			}
			oi, err := be.Stat(ctx, ids[0].Key())
			if err != nil {
				t.Fatal(err)
			}
			flip := &flipFirstRead{Backend: be, key: ids[0].Key(), size: oi.Size}
			g := fixtureOn(t, flip, f.dir, "index2", repo.Options{Password: init.Password, ChunkCacheBytes: 8 << 20})
			if _, packs, err := g.r.RepairPacks(ctx); err != nil || packs != 1 {
				t.Fatalf("repair: %d packs rewritten, %v; want 1", packs, err)
			}
			if !flip.flipped.Load() {
				t.Fatal("the repair never read the whole pack: the test tests nothing")
			}
			g.mustCheck(t)
			if got := g.restore(t, m); sha256.Sum256(got) != sha256.Sum256(vol) {
				t.Fatal("the backup restores different bytes after the repair")
			}
		})
	}
}

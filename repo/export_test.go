package repo

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/zeebo/xxh3"
)

// WriteLockForTest writes a lock object as another process (host, pid) would have, in this
// process's boot and pid namespace.
func WriteLockForTest(r *Repository, id, host string, pid int, op string) error {
	return WriteLockInSpaceForTest(r, id, host, r.locks.space, pid, op)
}

// WriteLockInSpaceForTest writes a lock object as a process of host, in the boot and pid
// namespace space, would have.
func WriteLockInSpaceForTest(r *Repository, id, host, space string, pid int, op string) error {
	return WriteLockInfoForTest(r, LockInfo{ID: id, Kind: LockShared, Host: host, Space: space, PID: pid, Operation: op, Created: time.Now().UTC()})
}

// WriteLockInfoForTest writes the lock object li; Space "." stands for this process's.
func WriteLockInfoForTest(r *Repository, li LockInfo) error {
	if li.Space == "." {
		li.Space = r.locks.space
	}
	return r.locks.write(context.Background(), lockPrefix+li.ID, li)
}

// WriteSkewedLockForTest writes a lock object as a process of another host whose clock is
// skew off this one's would have: Created and Wrote by its clock.
func WriteSkewedLockForTest(r *Repository, id, host string, skew time.Duration) error {
	at := time.Now().UTC().Add(skew)
	li := LockInfo{ID: id, Kind: LockShared, Host: host, Space: "elsewhere", PID: 1, Operation: "backup", Created: at, Wrote: at}
	b, err := json.Marshal(li)
	if err != nil {
		return err
	}
	return r.be.Put(context.Background(), lockPrefix+id, r.keys.sealObject(lockPrefix+id, b))
}

// ProcessStartForTest is the start of process pid in clock ticks since boot.
func ProcessStartForTest(pid int) (uint64, error) {
	start, _, err := processStat(pid)
	return start, err
}

// StallLockForTest makes lk look as if its process had stalled for d since its last refresh.
func StallLockForTest(lk *Lock, d time.Duration) {
	lk.mu.Lock()
	lk.lastRefresh = lk.lastRefresh.Add(-d)
	lk.mu.Unlock()
}

// PutDeletionForTest stores a deletion record of pack id (with addrs) as a gc whose clock
// reads at would have.
func PutDeletionForTest(r *Repository, at time.Time, id PackID, addrs []Address) error {
	d := &deletion{packs: map[PackID][]Address{id: addrs}, sizes: map[PackID]int64{}}
	return r.putObject(context.Background(), timeKey(deletedPrefix, at, "test"), d.encode())
}

// SynthBackupForTest stores a backup of blocks distinct data blocks without real data: each
// data blob is 8 bytes under a random address (seeded), in packs of 4,096, and the block map
// over them is real (tree nodes stored as a backup stores them). gc's mark, check without
// reading data and a sync see a repository of that many blobs; a restore would not.
// Its pack index objects carry the time at (now, if zero), as a writer whose clock read at would
// have named them.
func SynthBackupForTest(ctx context.Context, r *Repository, id string, blocks int, seed uint64, at time.Time) (*Manifest, error) {
	rng := rand.New(rand.NewPCG(seed, 99))
	lk, err := r.Lock(ctx, LockShared, "backup")
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	var p packer
	flush := func() error {
		if p.empty() {
			return nil
		}
		pid, data, entries := p.finish(r.keys)
		if at.IsZero() {
			return r.storePack(ctx, lk, pid, data, entries)
		}
		if err := r.be.Put(ctx, pid.Key(), data); err != nil {
			return err
		}
		if err := r.putObject(ctx, timeKey(indexPrefix, at, pid.String()), encodePackIndex(int64(len(data)), entries)); err != nil {
			return err
		}
		return r.idx.AddPack(pid, int64(len(data)), entries)
	}
	add := func(t BlobType, a Address, stored []byte, plain int) error {
		p.add(t, a, stored, plain)
		if len(p.entries) >= 4096 {
			return flush()
		}
		return nil
	}
	var level []Address
	leaf := &node{}
	for b := range blocks {
		var a Address
		for j := 0; j < len(a); j += 8 {
			binary.LittleEndian.PutUint64(a[j:], rng.Uint64())
		}
		if err := add(BlobData, a, a[:8], r.cfg.BlockSize); err != nil {
			return nil, err
		}
		leaf.fps = append(leaf.fps, xxh3.Uint128{Lo: uint64(b)})
		leaf.addrs = append(leaf.addrs, a)
		if len(leaf.addrs) == LeafFanout || b == blocks-1 {
			a, err := r.synthNode(leaf, add)
			if err != nil {
				return nil, err
			}
			level = append(level, a)
			leaf = &node{}
		}
	}
	rootLevel := 0
	for len(level) > 1 {
		rootLevel++
		var up []Address
		for i := 0; i < len(level); i += NodeFanout {
			a, err := r.synthNode(&node{level: rootLevel, addrs: level[i:min(i+NodeFanout, len(level))]}, add)
			if err != nil {
				return nil, err
			}
			up = append(up, a)
		}
		level = up
	}
	if err := flush(); err != nil {
		return nil, err
	}
	m := &Manifest{ID: id, VolumeID: "vol-" + id, Size: int64(blocks) * int64(r.cfg.BlockSize), BlockSize: r.cfg.BlockSize,
		Root: level[0], RootLevel: rootLevel, CreatedAt: time.Now().UTC()}
	return m, r.PutManifest(ctx, m)
}

func (r *Repository) synthNode(n *node, add func(BlobType, Address, []byte, int) error) (Address, error) {
	enc := n.encode(nil)
	a := r.keys.address(BlobTree, enc)
	stored, _ := r.keys.encodeBlob(nil, nil, enc, r.cfg.Compression, a)
	return a, add(BlobTree, a, stored, len(enc))
}

// CachedBlocksForTest is how many data blocks r's chunk cache holds, prefetched ones included.
func CachedBlocksForTest(r *Repository) int {
	r.chunks.mu.Lock()
	defer r.chunks.mu.Unlock()
	return len(r.chunks.items)
}

// ImageCachedForTest reports how many of the blocks of im in [off, off+n) the chunk cache
// holds.
func ImageCachedForTest(im *Image, off, n int64) int {
	cached := 0
	for b := off / im.g.blockSize; b*im.g.blockSize < off+n; b++ {
		lf, err := im.r.leaf(context.Background(), im.m.Root, im.m.RootLevel, b/LeafFanout)
		if err == nil && lf != nil && im.r.chunks.contains(lf.addrs[b%LeafFanout]) {
			cached++
		}
	}
	return cached
}

// SharedWaitingForTest returns how many write sessions wait for another session's pack.
func SharedWaitingForTest(r *Repository) int64 { return r.shared.waiting.Load() }

// SharedBlobsForTest returns how many new data blocks the registry of packs being stored holds.
func SharedBlobsForTest(r *Repository) int {
	r.shared.mu.Lock()
	defer r.shared.mu.Unlock()
	return len(r.shared.blobs)
}

// SetSharedFlushWaitForTest sets how long a session waits for another to flush a pack it
// needs, until the test ends.
func SetSharedFlushWaitForTest(t interface{ Cleanup(func()) }, d time.Duration) {
	old := sharedFlushWait
	sharedFlushWait = d
	t.Cleanup(func() { sharedFlushWait = old })
}

// ReindexPackForTest stores pack id's index object again, from its trailer, under the key a
// writer whose clock reads at would give it.
func ReindexPackForTest(r *Repository, at time.Time, id PackID) error {
	ctx := context.Background()
	size, entries, err := r.trailerOf(ctx, id)
	if err != nil {
		return err
	}
	return r.putObject(ctx, timeKey(indexPrefix, at, id.String()), encodePackIndex(size, entries))
}

// WallClockAheadForTest makes the wall clock that locks read run ahead by *ahead of the real one
// (with no monotonic advance, as on a host that was suspended), until the test ends. Call it
// before the locks it concerns are taken: their refreshers read it.
func WallClockAheadForTest(t interface{ Cleanup(func()) }, ahead *atomic.Int64) {
	old := wallNow
	wallNow = func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	t.Cleanup(func() { wallNow = old })
}

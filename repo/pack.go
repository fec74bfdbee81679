package repo

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/zeebo/blake3"
)

// A pack is one backend object holding many blobs back to back, then a sealed trailer that
// lists them, then a fixed footer:
//
//	blob 0 | blob 1 | ... | trailer | "CRNP" ver 0 0 0 | trailer length (u32) | crc32c(trailer) (u32)
//
// Trailer entries are 45 bytes: type (1), address (32), offset (4), stored length (4), plain
// length (4), little-endian. The trailer makes packs self-describing: the index can be rebuilt
// from the packs alone.
const (
	packMagic      = "CRNP"
	packVersion    = 1
	packFooterLen  = 16
	trailerEntry   = 45
	trailerAD      = "cairn pack trailer"
	maxTrailerSize = 64 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// packer accumulates blobs into one pack. It is owned by one goroutine. The pack is built in
// buf, or, once spool has given it a file (a backend.Spooler's), written through fw to that
// file and hashed as it goes, so no pack is held in memory.
type packer struct {
	buf     []byte
	entries []PackEntry
	n       int // bytes of blobs so far

	file *os.File       // the spooled pack, or nil
	fw   *bufio.Writer  // buffers the writes to file; kept across packs
	hash *blake3.Hasher // of what went to file
	err  error          // the first failed write to file
}

// spool makes the packer, empty, write its next pack to f.
func (p *packer) spool(f *os.File) {
	if p.fw == nil {
		p.fw = bufio.NewWriterSize(f, spoolBuffer)
		p.hash = blake3.New()
	}
	p.fw.Reset(f)
	p.hash.Reset()
	p.file = f
}

// spoolBuffer is the write buffer of a spooled pack: a write per MiB instead of per blob.
const spoolBuffer = 1 << 20

func (p *packer) add(t BlobType, addr Address, stored []byte, plainLen int) {
	p.entries = append(p.entries, PackEntry{Addr: addr, Location: Location{
		Offset: uint32(p.n), Length: uint32(len(stored)), PlainLen: uint32(plainLen), Type: t}})
	p.n += len(stored)
	if p.file == nil {
		p.buf = append(p.buf, stored...)
		return
	}
	p.write(stored)
}

func (p *packer) write(b []byte) {
	if p.err != nil {
		return
	}
	_, _ = p.hash.Write(b)
	_, p.err = p.fw.Write(b)
}

// started reports whether the packer has a pack file or buffer to add to.
func (p *packer) started() bool { return p.file != nil || p.buf != nil }

func (p *packer) size() int   { return p.n }
func (p *packer) empty() bool { return len(p.entries) == 0 }

// tail returns what follows the blobs: the sealed trailer and the footer.
func (p *packer) tail(k *keys) []byte {
	trailer := appendTrailer(make([]byte, 0, len(p.entries)*trailerEntry), p.entries)
	sealed := k.sealObject(trailerAD, trailer) // authenticated in an unencrypted repository too
	t := append(sealed, packMagic...)
	t = append(t, packVersion, 0, 0, 0)
	t = binary.LittleEndian.AppendUint32(t, uint32(len(sealed)))
	return binary.LittleEndian.AppendUint32(t, crc32.Checksum(sealed, crcTable))
}

// finish seals the trailer and returns the pack's id, bytes and entries; the packer is reset
// and must not be used until the returned slices are no longer needed (they are handed over).
func (p *packer) finish(k *keys) (PackID, []byte, []PackEntry) {
	data := append(p.buf, p.tail(k)...)
	sum := blake3.Sum256(data)
	var id PackID
	copy(id[:], sum[:])
	entries := p.reset(id)
	p.buf = nil
	return id, data, entries
}

// finishSpool is finish for a spooled pack: it returns the pack's file, written and flushed,
// and its size; the packer is reset and writes to no file until spool gives it another. On
// a failed write the file is closed and removed.
func (p *packer) finishSpool(k *keys) (PackID, *os.File, int64, []PackEntry, error) {
	tail := p.tail(k)
	p.write(tail)
	if p.err == nil {
		p.err = p.fw.Flush()
	}
	f, err := p.file, p.err
	size := int64(p.n) + int64(len(tail))
	var id PackID
	copy(id[:], p.hash.Sum(nil)) // the first bytes of the BLAKE3 sum, as finish takes them
	entries := p.reset(id)
	p.file, p.err = nil, nil
	p.fw.Reset(nil)
	if err != nil {
		discardSpool(f)
		return PackID{}, nil, 0, nil, fmt.Errorf("write pack: %w", err)
	}
	return id, f, size, entries, nil
}

// abandon drops the pack being built; a spooled one's file is removed.
func (p *packer) abandon() {
	if p.file != nil {
		discardSpool(p.file)
	}
	p.file, p.err, p.buf, p.entries, p.n = nil, nil, nil, nil, 0
}

// reset gives the entries their pack and empties the packer.
func (p *packer) reset(id PackID) []PackEntry {
	entries := p.entries
	for i := range entries {
		entries[i].Pack = id
	}
	p.entries, p.n = nil, 0
	return entries
}

func discardSpool(f *os.File) {
	_ = f.Close()
	_ = os.Remove(f.Name())
}

// appendTrailer appends the trailer encoding of entries to b.
func appendTrailer(b []byte, entries []PackEntry) []byte {
	for _, e := range entries {
		b = append(b, byte(e.Type))
		b = append(b, e.Addr[:]...)
		b = binary.LittleEndian.AppendUint32(b, e.Offset)
		b = binary.LittleEndian.AppendUint32(b, e.Length)
		b = binary.LittleEndian.AppendUint32(b, e.PlainLen)
	}
	return b
}

// readTrailer reads the blob list of a stored pack of the given size.
func (r *Repository) readTrailer(ctx context.Context, id PackID, size int64) ([]PackEntry, error) {
	if size < packFooterLen {
		return nil, fmt.Errorf("pack %s: too short (%d bytes)", id, size)
	}
	footer, err := r.be.GetRange(ctx, id.Key(), size-packFooterLen, packFooterLen)
	if err != nil {
		return nil, fmt.Errorf("pack %s: read footer: %w", id, err)
	}
	if string(footer[:4]) != packMagic || footer[4] != packVersion {
		return nil, fmt.Errorf("pack %s: bad footer: %w", id, ErrCorrupt)
	}
	tl := int64(binary.LittleEndian.Uint32(footer[8:]))
	if tl > maxTrailerSize || tl > size-packFooterLen {
		return nil, fmt.Errorf("pack %s: bad trailer length: %w", id, ErrCorrupt)
	}
	sealed, err := r.be.GetRange(ctx, id.Key(), size-packFooterLen-tl, tl)
	if err != nil {
		return nil, fmt.Errorf("pack %s: read trailer: %w", id, err)
	}
	if crc32.Checksum(sealed, crcTable) != binary.LittleEndian.Uint32(footer[12:]) {
		return nil, fmt.Errorf("pack %s: trailer checksum: %w", id, ErrCorrupt)
	}
	trailer, err := r.keys.openObject(trailerAD, sealed)
	if err != nil {
		return nil, fmt.Errorf("pack %s: trailer: %w: %v", id, ErrCorrupt, err)
	}
	return parseTrailer(id, trailer, size-packFooterLen-tl)
}

func parseTrailer(id PackID, trailer []byte, dataLen int64) ([]PackEntry, error) {
	if len(trailer)%trailerEntry != 0 {
		return nil, fmt.Errorf("pack %s: trailer length %d: %w", id, len(trailer), ErrCorrupt)
	}
	entries := make([]PackEntry, 0, len(trailer)/trailerEntry)
	for b := trailer; len(b) > 0; b = b[trailerEntry:] {
		var e PackEntry
		e.Pack = id
		e.Type = BlobType(b[0])
		copy(e.Addr[:], b[1:33])
		e.Offset = binary.LittleEndian.Uint32(b[33:])
		e.Length = binary.LittleEndian.Uint32(b[37:])
		e.PlainLen = binary.LittleEndian.Uint32(b[41:])
		if (e.Type != BlobData && e.Type != BlobTree) || int64(e.Offset)+int64(e.Length) > dataLen {
			return nil, fmt.Errorf("pack %s: trailer entry out of range: %w", id, ErrCorrupt)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// storePack writes a finished pack and its index object, and records it in the index. The
// index object lets other processes' indexes learn the pack; the trailer is the second copy.
// lk is the writer's lock: nothing is stored once it is lost (mayStore).
func (r *Repository) storePack(ctx context.Context, lk *Lock, id PackID, data []byte, entries []PackEntry) error {
	if err := mayStore(lk); err != nil {
		return fmt.Errorf("store pack %s: %w", id, err)
	}
	if err := r.be.Put(ctx, id.Key(), data); err != nil {
		return fmt.Errorf("store pack %s: %w", id, err)
	}
	return r.indexPack(ctx, lk, id, int64(len(data)), entries)
}

// storeSpooledPack is storePack for a pack written to a file of sp (packer.finishSpool).
func (r *Repository) storeSpooledPack(ctx context.Context, lk *Lock, sp backend.Spooler, id PackID, f *os.File, size int64, entries []PackEntry) error {
	if err := mayStore(lk); err != nil {
		return fmt.Errorf("store pack %s: %w", id, err)
	}
	if err := sp.Commit(ctx, id.Key(), f); err != nil {
		return fmt.Errorf("store pack %s: %w", id, err)
	}
	return r.indexPack(ctx, lk, id, size, entries)
}

// indexPack stores a stored pack's index object and records the pack in the index, while lk
// holds. An index object whose Put returned after lk was lost (it waited out an outage) is
// removed again and the pack not recorded: a gc that ran meanwhile may have listed the index
// objects before it landed and deleted the pack, and an index object must never name a pack
// that is gone (docs/design.md, "A writer stalls past --lock-stale"). Without it the pack is
// one every gc learns from its trailer.
func (r *Repository) indexPack(ctx context.Context, lk *Lock, id PackID, size int64, entries []PackEntry) error {
	if err := r.putIndexObject(ctx, lk, id, indexKey(id), encodePackIndex(size, entries)); err != nil {
		return fmt.Errorf("store the index of pack %s: %w", id, err)
	}
	if err := r.idx.AddPack(id, size, entries); err != nil {
		return fmt.Errorf("index pack %s: %w", id, err)
	}
	return nil
}

// putIndexObject stores pack id's index object under key while lk holds: lk is checked
// before the Put and again after it, and an object whose Put returned once lk was lost (it
// waited out an outage), or failed then (a failure can be a lost acknowledgement of a Put that
// landed), is removed again, with a context of its own: the writer's may be cancelled by then
// (docs/design.md, "A writer stalls past --lock-stale"). Every index object is stored here.
func (r *Repository) putIndexObject(ctx context.Context, lk *Lock, id PackID, key string, plain []byte) error {
	if err := mayStore(lk); err != nil {
		return err
	}
	perr := r.putObject(ctx, key, plain)
	if err := mayStore(lk); err != nil {
		if derr := r.be.Delete(backend.Impatient(context.WithoutCancel(ctx)), key); derr != nil && !errors.Is(derr, backend.ErrNotFound) {
			r.logf("pack %s: its index object %s may have been stored after the lock was lost, and could not be removed: %v", id, key, derr)
		}
		return err
	}
	return perr
}

// mayStore is lk.Check for a writer's stores: the lock's state and the time since its last
// refresh, no request. Every writer that stores packs holds a lock.
func mayStore(lk *Lock) error {
	if lk == nil {
		return fmt.Errorf("%w: a pack is stored without a lock", ErrLockLost)
	}
	return lk.Check()
}

// ListPacks calls fn for every pack object in the backend.
func (r *Repository) ListPacks(ctx context.Context, fn func(id PackID, size int64) error) error {
	return r.be.List(ctx, "packs/", func(oi backend.ObjectInfo) error {
		id, ok := ParsePackKey(oi.Key)
		if !ok {
			return nil
		}
		return fn(id, oi.Size)
	})
}

// PackEntries reads the blob list of one pack.
func (r *Repository) PackEntries(ctx context.Context, id PackID, size int64) ([]PackEntry, error) {
	return r.readTrailer(ctx, id, size)
}

func getAll(ctx context.Context, be backend.Backend, key string) ([]byte, error) {
	rc, err := be.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	return b, nil
}

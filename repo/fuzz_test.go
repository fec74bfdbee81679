package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/zeebo/xxh3"
)

// Fuzz targets for every decoder of repository data: none may panic or hand back something
// that does not re-encode to what it read; a mutated sealed object never opens. The seed
// corpora are valid objects, so the fuzzer starts from real shapes.

func fuzzKeys(f *testing.F, encrypted bool) *keys {
	f.Helper()
	k, err := deriveKeys(bytes.Repeat([]byte{7}, masterKeyLen), encrypted)
	if err != nil {
		f.Fatal(err)
	}
	return k
}

func FuzzDecodeNode(f *testing.F) {
	leaf := &node{level: 0, addrs: []Address{{1}, {}, {3}}, fps: []xxh3.Uint128{{Hi: 9}, {}, {Lo: 8}}}
	f.Add(leaf.encode(nil))
	f.Add((&node{level: 2, addrs: []Address{{4}, {5}}}).encode(nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := decodeNode(b)
		if err != nil {
			return
		}
		if got := n.encode(nil); !bytes.Equal(got, b) {
			t.Fatalf("decoded node re-encodes differently")
		}
	})
}

func FuzzParseTrailer(f *testing.F) {
	f.Add(appendTrailer(nil, []PackEntry{{Addr: Address{1}, Location: Location{Offset: 0, Length: 10, PlainLen: 20, Type: BlobData}}}), int64(100))
	f.Add([]byte{}, int64(0))
	f.Fuzz(func(t *testing.T, b []byte, dataLen int64) {
		entries, err := parseTrailer(PackID{1}, b, dataLen)
		if err != nil {
			return
		}
		for _, e := range entries {
			if int64(e.Offset)+int64(e.Length) > dataLen {
				t.Fatalf("entry %+v past the pack's data (%d bytes)", e, dataLen)
			}
		}
		if got := appendTrailer(nil, entries); !bytes.Equal(got, b) {
			t.Fatal("trailer re-encodes differently")
		}
	})
}

func FuzzPackIndex(f *testing.F) {
	f.Add(encodePackIndex(1000, []PackEntry{{Addr: Address{2}, Location: Location{Length: 10, PlainLen: 10, Type: BlobTree}}}))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		size, entries, err := decodePackIndex(PackID{3}, b)
		if err != nil {
			return
		}
		if got := encodePackIndex(size, entries); !bytes.Equal(got, b) {
			t.Fatal("pack index re-encodes differently")
		}
	})
}

func FuzzDeletionRecord(f *testing.F) {
	d := &deletion{packs: map[PackID][]Address{{1}: {{2}, {3}}}, sizes: map[PackID]int64{{4}: 99},
		relocated: []PackEntry{{Addr: Address{2}, Location: Location{Pack: PackID{4}, Offset: 1, Length: 2, PlainLen: 3, Type: BlobData}}}}
	f.Add(d.encode())
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := decodeDeletion(b); err == nil {
			_ = d.encode()
		}
	})
}

// Small objects: a sealed object opens only as it was sealed, under its own key.
func FuzzOpenObject(f *testing.F) {
	ks := map[bool]*keys{false: fuzzKeys(f, false), true: fuzzKeys(f, true)}
	for enc, k := range ks {
		f.Add(enc, "manifests/x", k.sealObject("manifests/x", []byte(`{"id":"x"}`)))
	}
	f.Fuzz(func(t *testing.T, enc bool, key string, stored []byte) {
		k := ks[enc]
		plain, err := k.openObject(key, stored)
		if err != nil {
			return
		}
		// Whatever opened must be what sealing that plaintext under that key would give
		// (unencrypted: exactly; encrypted: it opens again after resealing).
		again := k.sealObject(key, plain)
		if p2, err := k.openObject(key, again); err != nil || !bytes.Equal(p2, plain) {
			t.Fatal("an opened object does not round-trip")
		}
		if !enc && !bytes.Equal(again, stored) {
			t.Fatal("an unencrypted object opened though its MAC is not the one sealing gives")
		}
	})
}

func FuzzManifest(f *testing.F) {
	r, _ := newTestRepo(f)
	m := Manifest{Version: FormatVersion, ID: "b", VolumeID: "v", Size: 1 << 20, BlockSize: r.cfg.BlockSize, CreatedAt: time.Unix(1, 0).UTC()}
	b, _ := json.Marshal(m)
	f.Add(b)
	f.Fuzz(func(t *testing.T, plain []byte) {
		key := manifestKey("b")
		got, _, err := r.decodeManifest(key, "b", r.keys.sealObject(key, plain))
		if err != nil {
			return
		}
		if got.ID != "b" || got.Size < 0 || got.BlockSize != r.cfg.BlockSize {
			t.Fatalf("inconsistent manifest accepted: %+v", got)
		}
		if g := newGeometry(got.Size, got.BlockSize); g.rootLevel != got.RootLevel {
			t.Fatalf("manifest with a root level that does not fit its size accepted: %+v", got)
		}
	})
}

func FuzzExportURL(f *testing.F) {
	r, _ := newTestRepo(f)
	url, err := r.ExportURL(&Manifest{Version: FormatVersion, ID: "b", VolumeID: "v", Size: 4096, BlockSize: r.cfg.BlockSize})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(url)
	f.Add("cairn1.")
	f.Fuzz(func(t *testing.T, s string) {
		rec, err := r.ParseExportURL(s)
		if err == nil && s != url {
			t.Fatalf("a changed export URL was accepted: %+v", rec)
		}
	})
}

// Key objects and config: damage is told from a wrong passphrase, and a config that opens is
// one Init wrote.
func FuzzKeyObject(f *testing.F) {
	kf, err := wrapMaster(bytes.Repeat([]byte{1}, masterKeyLen), "pw")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(kf.marshal())
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var k keyFile
		if json.Unmarshal(b, &k) != nil || k.damaged() || k.N > scryptN || k.R > 8 || k.P > 1 {
			return // the costs an attacker may ask for are bounded by unwrap; keep runs short
		}
		if master, err := k.unwrap("pw"); err == nil && len(master) != masterKeyLen {
			t.Fatalf("a key object unwrapped to %d bytes", len(master))
		}
	})
}

func FuzzConfig(f *testing.F) {
	_, be := newTestRepo(f)
	orig, err := getAll(context.Background(), be, "config")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(orig)
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		be, err := local.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := be.Put(context.Background(), "config", b); err != nil {
			t.Fatal(err)
		}
		cfg, _, err := readConfig(context.Background(), be, "")
		if err == nil && (cfg.BlockSize < MinBlockSize || cfg.BlockSize > MaxBlockSize) {
			t.Fatalf("a config with block size %d opened", cfg.BlockSize)
		}
	})
}

// A trailer changed on purpose (its CRC recomputed to match) is refused in an unencrypted
// repository too: the CRC finds accidents, the MAC finds the rest.
func TestTrailerAuthenticated(t *testing.T) {
	r, be := newTestRepo(t)
	var p packer
	p.add(BlobData, Address{1}, []byte("0123456789"), 10)
	id, data, _ := p.finish(r.keys)
	if err := be.Put(context.Background(), id.Key(), data); err != nil {
		t.Fatal(err)
	}
	if _, err := r.readTrailer(context.Background(), id, int64(len(data))); err != nil {
		t.Fatalf("intact trailer: %v", err)
	}
	tl := int(binary.LittleEndian.Uint32(data[len(data)-8:]))
	start := len(data) - packFooterLen - tl
	data[start+1] ^= 1 // the entry's address
	binary.LittleEndian.PutUint32(data[len(data)-4:], crc32.Checksum(data[start:start+tl], crcTable))
	if err := be.Put(context.Background(), id.Key(), data); err != nil {
		t.Fatal(err)
	}
	if _, err := r.readTrailer(context.Background(), id, int64(len(data))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("tampered trailer with a matching CRC: %v", err)
	}
}

// newTestRepo is a new unencrypted repository in a temporary directory, opened without an
// index (enough for the decoders).
func newTestRepo(tb testing.TB) (*Repository, backend.Backend) {
	tb.Helper()
	be, err := local.Open(filepath.Join(tb.TempDir(), "repo"))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := Init(context.Background(), be, InitOptions{}); err != nil {
		tb.Fatal(err)
	}
	r, err := Open(context.Background(), be, nil, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return r, be
}

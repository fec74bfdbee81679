package repo

// Index is what the repository needs from the backup index: where blobs are stored, which
// packs it knows, and a few named values (how far it has followed the backend). Package index
// implements it on Badger; repo only defines it.
//
// The index is a cache of the backend: everything here can be rebuilt from pack index
// objects, pack trailers and deletion records (Sync). Nothing is ever deleted because of what
// an index says alone: gc decides from the manifests in the backend.
type Index interface {
	// Lookup returns where addr is stored.
	Lookup(addr Address) (Location, bool, error)
	// LookupBatch is Lookup for many addresses at once: locs[i] and found[i] answer
	// addrs[i] (both at least as long as addrs).
	LookupBatch(addrs []Address, locs []Location, found []bool) error
	// AddPack records a pack written to the backend and the blobs in it. Blobs already known
	// elsewhere move to this pack (gc's repack).
	AddPack(id PackID, size int64, entries []PackEntry) error
	// HasPack reports whether the index knows a pack.
	HasPack(id PackID) (bool, error)
	// DropPack forgets a pack and those of addrs whose entries still point into it.
	DropPack(id PackID, addrs []Address) error
	// ForgetBlobs forgets where addrs are stored (their copies are damaged), so that the next
	// backup that meets the same data stores it again.
	ForgetBlobs(addrs []Address) error
	// MarkDamaged records that the copy of addr at loc is damaged (two reads of it failed);
	// Damaged reports whether the copy of addr at loc, where a lookup found it, is so marked.
	// Reads still go to a marked copy; backups store the block again instead of reusing it.
	MarkDamaged(addr Address, loc Location) error
	Damaged(addr Address, loc Location) bool
	// Packs calls fn for every pack the index knows.
	Packs(fn func(id PackID, size int64) error) error
	// Blobs calls fn for every blob the index knows.
	Blobs(fn func(e PackEntry) error) error
	// Meta returns a named value ("" when unset); SetMeta sets one ("" removes it).
	Meta(name string) (string, error)
	SetMeta(name, value string) error
}

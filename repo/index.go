package repo

// Index is what the repository needs from the backup index: where blobs are stored and how
// often each is referenced. Package index implements it on Badger; repo only defines it.
//
// Reference counting: a tree node that is referenced (count > 0) has added one to each of its
// children. Counts may be too high after a crash (a leak that gc's recount repairs), never too
// low, so gc never reclaims a live blob.
type Index interface {
	// Lookup returns where addr is stored.
	Lookup(addr Address) (Location, bool, error)
	// AddPack records a pack written to the backend and the blobs in it. Blobs already known
	// elsewhere move to this pack (gc's repack).
	AddPack(id PackID, size int64, entries []PackEntry) error
	// Refs returns addr's reference count.
	Refs(addr Address) (uint32, error)
	// AddRefs adds delta to the count of every address (zero addresses are skipped) and
	// returns those whose count was zero before (delta > 0) or is zero after (delta < 0).
	AddRefs(addrs []Address, delta int) (crossed []Address, err error)
}

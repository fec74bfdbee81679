package repo

import (
	"encoding/hex"
	"fmt"
)

// Address names a blob: a keyed BLAKE3-256 hash of its type and plaintext. The key is the
// repository's secret, so addresses reveal nothing about contents to someone who holds only
// the backend, and nobody without the key can forge a blob for an address.
type Address [32]byte

// IsZero reports whether a is the zero address, which stands for a hole (all-zero data).
func (a Address) IsZero() bool { return a == Address{} }

// String returns the address in hex.
func (a Address) String() string { return hex.EncodeToString(a[:]) }

// Short returns the first 12 hex digits, for messages.
func (a Address) Short() string { return hex.EncodeToString(a[:6]) }

// ParseAddress parses a 64-digit hex address.
func ParseAddress(s string) (Address, error) {
	var a Address
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(a) {
		return a, fmt.Errorf("address %q: want 64 hex digits", s)
	}
	copy(a[:], b)
	return a, nil
}

// PackID names a pack object: the first 16 bytes of the BLAKE3 hash of its bytes.
type PackID [16]byte

// String returns the pack id in hex.
func (p PackID) String() string { return hex.EncodeToString(p[:]) }

// Key is the pack's backend key.
func (p PackID) Key() string {
	s := p.String()
	return "packs/" + s[:2] + "/" + s
}

// ParsePackID parses a pack id written in hex.
func ParsePackID(s string) (PackID, error) {
	var p PackID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(p) {
		return p, fmt.Errorf("invalid pack id %q", s)
	}
	copy(p[:], b)
	return p, nil
}

// ParsePackKey parses a backend key of the form packs/xx/<32 hex digits>.
func ParsePackKey(key string) (PackID, bool) {
	var p PackID
	if len(key) != len("packs/xx/")+32 || key[:6] != "packs/" {
		return p, false
	}
	b, err := hex.DecodeString(key[9:])
	if err != nil || len(b) != len(p) {
		return p, false
	}
	copy(p[:], b)
	return p, key[6:8] == key[9:11]
}

// BlobType tells data chunks from tree nodes. It is hashed into the address, so a tree node and
// a data block with the same bytes never share an address.
type BlobType uint8

// Blob types.
const (
	BlobData BlobType = 1
	BlobTree BlobType = 2
)

// Location is where a blob is stored and how often it is referenced.
type Location struct {
	Pack     PackID
	Offset   uint32
	Length   uint32 // stored (compressed, sealed) length
	PlainLen uint32
	Type     BlobType
}

// PackEntry lists one blob of a pack, as in the pack's trailer.
type PackEntry struct {
	Addr Address
	Location
}

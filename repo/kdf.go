package repo

import (
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/bits"
	"unsafe"

	"github.com/cairn-backup/cairn/repo/slab"
)

// scryptKey is scrypt (RFC 7914) with its work area in a slab buffer instead of the Go heap.
//
// Why: the work area is 128·r·N bytes (32 MiB for a key object's parameters) of fresh memory
// touched once per command. In the Go heap that is 8,192 first touches of a 4 KiB page, and
// a page fault is dear on a virtual machine: golang.org/x/crypto/scrypt took 170-260 ms
// here, of which about 100-190 ms were faults; in huge pages the same memory is faulted in a
// few milliseconds. The result is scrypt's, byte for byte (kdf_test.go checks it against
// golang.org/x/crypto/scrypt).
func scryptKey(password, salt []byte, n, r, p, keyLen int) ([]byte, error) {
	if n < 2 || n&(n-1) != 0 {
		return nil, errors.New("scrypt: N must be a power of two greater than 1")
	}
	if r < 1 || p < 1 || uint64(r)*uint64(p) >= 1<<30 || r > (1<<31-1)/128/p || n > (1<<31-1)/128/r {
		return nil, errors.New("scrypt: parameters are too large")
	}
	b, err := pbkdf2.Key(sha256.New, string(password), salt, 1, p*128*r)
	if err != nil {
		return nil, err
	}
	area := slab.Get(128 * r * n)
	defer slab.Release(area)
	v := unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(area))), 32*r*n)
	x, y := make([]uint32, 32*r), make([]uint32, 32*r)
	for i := range p {
		romix(b[i*128*r:(i+1)*128*r], r, n, v, x, y)
	}
	clear(x)
	clear(y)
	dk, err := pbkdf2.Key(sha256.New, string(password), b, 1, keyLen)
	clear(b)
	return dk, err
}

// romix is scryptROMix (RFC 7914 section 5) on block, in place: v holds the N states, x and
// y the current state and the next (32·r words each).
//
// romix, blockMix and salsa208 are left out of the race detector's instrumentation
// (go:norace): they touch only this derivation's own work area and stack, so it has nothing to
// find there, and instrumented they made a derivation under -race 4.6 times dearer (570 ms
// against 123 ms; the race-enabled tests derive keys hundreds of times).
//
//go:norace
func romix(block []byte, r, n int, v, x, y []uint32) {
	w := 32 * r
	for i := range x {
		x[i] = binary.LittleEndian.Uint32(block[4*i:])
	}
	for i := range n {
		copy(v[i*w:(i+1)*w], x)
		blockMix(x, y, r)
		x, y = y, x
	}
	for range n {
		// Integerify: the last 64-byte block's first word; N is a power of two below 2^32.
		j := int(x[w-16]) & (n - 1)
		vj := v[j*w : (j+1)*w]
		for k := range x {
			x[k] ^= vj[k]
		}
		blockMix(x, y, r)
		x, y = y, x
	}
	for i, u := range x {
		binary.LittleEndian.PutUint32(block[4*i:], u)
	}
}

// blockMix is scryptBlockMix (RFC 7914 section 4) of in into out: the 2·r 16-word blocks,
// each XORed into the running state and put through Salsa20/8, even results first, then odd.
//
//go:norace
func blockMix(in, out []uint32, r int) {
	var s [16]uint32
	copy(s[:], in[(2*r-1)*16:])
	for i := range 2 * r {
		for k := range s {
			s[k] ^= in[i*16+k]
		}
		salsa208(&s)
		dst := (i/2 + (i%2)*r) * 16
		copy(out[dst:dst+16], s[:])
	}
}

// salsa208 is the Salsa20/8 core (RFC 7914 section 3) on s, in place.
//
//go:norace
func salsa208(s *[16]uint32) {
	x0, x1, x2, x3, x4, x5, x6, x7 := s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
	x8, x9, x10, x11, x12, x13, x14, x15 := s[8], s[9], s[10], s[11], s[12], s[13], s[14], s[15]
	for range 4 {
		// Columns.
		x4 ^= bits.RotateLeft32(x0+x12, 7)
		x8 ^= bits.RotateLeft32(x4+x0, 9)
		x12 ^= bits.RotateLeft32(x8+x4, 13)
		x0 ^= bits.RotateLeft32(x12+x8, 18)
		x9 ^= bits.RotateLeft32(x5+x1, 7)
		x13 ^= bits.RotateLeft32(x9+x5, 9)
		x1 ^= bits.RotateLeft32(x13+x9, 13)
		x5 ^= bits.RotateLeft32(x1+x13, 18)
		x14 ^= bits.RotateLeft32(x10+x6, 7)
		x2 ^= bits.RotateLeft32(x14+x10, 9)
		x6 ^= bits.RotateLeft32(x2+x14, 13)
		x10 ^= bits.RotateLeft32(x6+x2, 18)
		x3 ^= bits.RotateLeft32(x15+x11, 7)
		x7 ^= bits.RotateLeft32(x3+x15, 9)
		x11 ^= bits.RotateLeft32(x7+x3, 13)
		x15 ^= bits.RotateLeft32(x11+x7, 18)
		// Rows.
		x1 ^= bits.RotateLeft32(x0+x3, 7)
		x2 ^= bits.RotateLeft32(x1+x0, 9)
		x3 ^= bits.RotateLeft32(x2+x1, 13)
		x0 ^= bits.RotateLeft32(x3+x2, 18)
		x6 ^= bits.RotateLeft32(x5+x4, 7)
		x7 ^= bits.RotateLeft32(x6+x5, 9)
		x4 ^= bits.RotateLeft32(x7+x6, 13)
		x5 ^= bits.RotateLeft32(x4+x7, 18)
		x11 ^= bits.RotateLeft32(x10+x9, 7)
		x8 ^= bits.RotateLeft32(x11+x10, 9)
		x9 ^= bits.RotateLeft32(x8+x11, 13)
		x10 ^= bits.RotateLeft32(x9+x8, 18)
		x12 ^= bits.RotateLeft32(x15+x14, 7)
		x13 ^= bits.RotateLeft32(x12+x15, 9)
		x14 ^= bits.RotateLeft32(x13+x12, 13)
		x15 ^= bits.RotateLeft32(x14+x13, 18)
	}
	s[0] += x0
	s[1] += x1
	s[2] += x2
	s[3] += x3
	s[4] += x4
	s[5] += x5
	s[6] += x6
	s[7] += x7
	s[8] += x8
	s[9] += x9
	s[10] += x10
	s[11] += x11
	s[12] += x12
	s[13] += x13
	s[14] += x14
	s[15] += x15
}

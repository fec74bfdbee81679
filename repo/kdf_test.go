package repo

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/crypto/scrypt"
)

// scryptKey must give scrypt's bytes: RFC 7914's vectors, and golang.org/x/crypto/scrypt's
// output over a spread of parameters and input lengths (each p runs romix over its own block;
// r > 1 interleaves blockMix's output).
func TestScryptKeyMatchesScrypt(t *testing.T) {
	vectors := []struct {
		password, salt string
		n, r, p        int
		want           string
	}{
		{"", "", 16, 1, 1, "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906"},
		{"password", "NaCl", 1024, 8, 16, "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"},
	}
	for _, v := range vectors {
		got, err := scryptKey([]byte(v.password), []byte(v.salt), v.n, v.r, v.p, 64)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(got) != v.want {
			t.Fatalf("RFC 7914 vector N=%d r=%d p=%d: got %x", v.n, v.r, v.p, got)
		}
	}
	for _, n := range []int{2, 4, 256, 1 << 10} {
		for _, r := range []int{1, 2, 3, 8} {
			for _, p := range []int{1, 2} {
				for _, keyLen := range []int{1, 32, 100} {
					pw := bytes.Repeat([]byte{byte(n + r)}, n%7+r)
					salt := bytes.Repeat([]byte{byte(p)}, 3*r+keyLen%5)
					name := fmt.Sprintf("N=%d,r=%d,p=%d,len=%d", n, r, p, keyLen)
					want, err := scrypt.Key(pw, salt, n, r, p, keyLen)
					if err != nil {
						t.Fatal(name, err)
					}
					got, err := scryptKey(pw, salt, n, r, p, keyLen)
					if err != nil {
						t.Fatal(name, err)
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("%s: got %x, scrypt gives %x", name, got, want)
					}
				}
			}
		}
	}
	// A key object's own parameters, as wrapMaster writes them.
	salt := bytes.Repeat([]byte{7}, 32)
	want, _ := scrypt.Key([]byte("correct horse"), salt, scryptN, 8, 1, 32)
	got, err := scryptKey([]byte("correct horse"), salt, scryptN, 8, 1, 32)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("key object parameters: got %x (%v), scrypt gives %x", got, err, want)
	}
	for _, bad := range [][3]int{{0, 8, 1}, {3, 8, 1}, {1 << 15, 0, 1}, {1 << 15, 8, 0}} {
		if _, err := scryptKey([]byte("x"), salt, bad[0], bad[1], bad[2], 32); err == nil {
			t.Fatalf("N=%d r=%d p=%d: no error", bad[0], bad[1], bad[2])
		}
	}
}

// BenchmarkScryptKey compares scryptKey with golang.org/x/crypto/scrypt at a key object's
// parameters, each in a warm process (the first touch of the work area is what differs in a
// command; see scryptKey).
func BenchmarkScryptKey(b *testing.B) {
	salt := make([]byte, 32)
	b.Run("cairn", func(b *testing.B) {
		for b.Loop() {
			if _, err := scryptKey([]byte("pw"), salt, scryptN, 8, 1, 32); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("x-crypto", func(b *testing.B) {
		for b.Loop() {
			if _, err := scrypt.Key([]byte("pw"), salt, scryptN, 8, 1, 32); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestKeyObjectAskingForMoreWorkIsRefused: a key object whose scrypt parameters ask for more
// work than cairn writes (anyone who can write to the bucket can add one, and every open tries
// each) is refused before scrypt runs, as damage; the key object cairn wrote still opens.
// Before, N up to 2^18, r up to 16 and p up to 4 were run: a 512 MiB work area and 64 times
// the work for each planted object.
func TestKeyObjectAskingForMoreWorkIsRefused(t *testing.T) {
	kf, err := wrapMaster(make([]byte, masterKeyLen), "pw")
	if err != nil {
		t.Fatal(err)
	}
	for _, tamper := range []struct {
		what string
		set  func(*keyFile)
	}{
		{"N 2^18", func(k *keyFile) { k.N = 1 << 18 }},
		{"r 16", func(k *keyFile) { k.R = 16 }},
		{"p 4", func(k *keyFile) { k.P = 4 }},
	} {
		k := *kf
		tamper.set(&k)
		if _, err := k.unwrap("pw"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("a key object with %s: %v; want it refused as damage", tamper.what, err)
		}
	}
	if _, err := kf.unwrap("pw"); err != nil {
		t.Fatalf("the key object cairn wrote: %v", err)
	}
}

package repo

import (
	"bytes"
	"testing"
)

// decodeZstd decodes the same bytes whatever room dst has, appends after what dst holds, and
// never writes past dst's capacity (a block's neighbours in a restore span stay intact).
func TestDecodeZstdAnyCapacity(t *testing.T) {
	plain := bytes.Repeat([]byte("cairn block "), 16384/12+1)[:16384]
	frame := zstdEnc.EncodeAll(plain, nil)
	sentinel := bytes.Repeat([]byte{0xA5}, 256)
	for _, spare := range []int{0, 31, zstdSlack, 1 << 20} {
		span := make([]byte, 3+len(plain)+spare+len(sentinel))
		copy(span, "pre")
		copy(span[3+len(plain)+spare:], sentinel)
		got, err := decodeZstd(span[:3:3+len(plain)+spare], frame)
		if err != nil {
			t.Fatalf("spare %d: %v", spare, err)
		}
		if !bytes.Equal(got, append([]byte("pre"), plain...)) {
			t.Fatalf("spare %d: decoded bytes differ", spare)
		}
		if !bytes.Equal(span[3+len(plain)+spare:], sentinel) {
			t.Fatalf("spare %d: wrote past the destination's capacity", spare)
		}
	}
	if got, err := decodeZstd(nil, frame); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("into nil: %v", err)
	}
	if _, err := decodeZstd(nil, frame[:len(frame)-3]); err == nil {
		t.Fatal("a truncated frame decoded")
	}
}

//go:build linux

package blockio

import "testing"

func TestCowSize(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name       string
		size, free int64
		want       int64
		err        bool
	}{
		{"10 % of a large volume", 10 << 30, 100 << 30, 1 << 30, false},
		{"at least 256 MiB", 1 << 30, 100 << 30, 256 * mib, false},
		{"never more than the volume", 48 * mib, 100 << 30, 56 * mib, false},
		{"whole extents", 10<<30 + 512, 100 << 30, 1028 * mib, false},
		{"what the group has free", 10 << 30, 300 * mib, 300 * mib, false},
		{"too little free", 10 << 30, 50 * mib, 0, true},
		{"small volume, little free", 48 * mib, 8 * mib, 8 * mib, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := cowSize(tt.size, tt.free)
			if (err != nil) != tt.err || got != tt.want {
				t.Fatalf("cowSize(%d, %d) = %d, %v; want %d (error %v)", tt.size, tt.free, got, err, tt.want, tt.err)
			}
		})
	}
}

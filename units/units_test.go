package units

import (
	"testing"
	"time"
)

func TestBytes(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {3<<20 + 5, "3.0 MiB"},
		{1023<<30 + 900<<20, "1023.9 GiB"}, {1 << 40, "1.0 TiB"}, {1 << 62, "4.0 EiB"}, {-2048, "-2.0 KiB"},
	} {
		if got := Bytes(tt.n); got != tt.want {
			t.Errorf("Bytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestRate(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		d    time.Duration
		want string
	}{
		{100 << 20, 2 * time.Second, "50.0 MiB/s"}, {0, time.Second, "0.0 MiB/s"}, {1 << 20, 0, "1000.0 MiB/s"},
	} {
		if got := Rate(tt.n, tt.d); got != tt.want {
			t.Errorf("Rate(%d, %v) = %q, want %q", tt.n, tt.d, got, tt.want)
		}
	}
	if got := Seconds(1500 * time.Millisecond); got != "1.5 s" {
		t.Errorf("Seconds(1.5s) = %q", got)
	}
}

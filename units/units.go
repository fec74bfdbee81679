package units

import (
	"fmt"
	"time"
)

// Bytes says n in binary units with one decimal: 0 B, 1023 B, 1.5 KiB, 3.0 MiB, 1.0 TiB.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	neg := n < 0
	u := uint64(n)
	if neg {
		u = uint64(-n)
	}
	div, exp := uint64(unit), 0
	for m := u / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	s := fmt.Sprintf("%.1f %ciB", float64(u)/float64(div), "KMGTPE"[exp])
	if neg {
		s = "-" + s
	}
	return s
}

// Rate says n bytes over d in MiB/s, the unit of every throughput cairn reports; a period
// under a millisecond counts as one.
func Rate(n int64, d time.Duration) string {
	return fmt.Sprintf("%.1f MiB/s", MiBPerSecond(n, d))
}

// MiBPerSecond is Rate's figure, for structured logs.
func MiBPerSecond(n int64, d time.Duration) float64 {
	return float64(n) / (1 << 20) / max(d, time.Millisecond).Seconds()
}

// Seconds says a duration in seconds with one decimal, as progress summaries do: 12.3 s.
func Seconds(d time.Duration) string {
	return fmt.Sprintf("%.1f s", d.Seconds())
}

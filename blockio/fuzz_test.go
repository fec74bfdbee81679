package blockio

import (
	"strings"
	"testing"
)

// The /proc parsers read text the kernel writes, escaped paths included; they must not panic
// on any line.
func FuzzParseMountinfo(f *testing.F) {
	f.Add("42 27 7:0 / /mnt/x rw,relatime shared:1 - ext4 /dev/loop0 rw")
	f.Add(`43 27 259:3 / /mnt/with\040space rw - xfs /dev/nvme0n1p3 rw`)
	f.Add("1 2 3 - 4")
	f.Fuzz(func(t *testing.T, line string) {
		m, ok := parseMountinfo(line)
		if ok && !strings.Contains(line, " - ") {
			t.Errorf("parsed %q without the \" - \" separator: %+v", line, m)
		}
	})
}

func FuzzParseLock(f *testing.F) {
	f.Add("1: POSIX  ADVISORY  WRITE 1234 fd:01:5678 0 EOF")
	f.Add("2: -> FLOCK  ADVISORY  WRITE 77 08:02:99 0 EOF")
	f.Fuzz(func(t *testing.T, line string) { parseLock(line) })
}

func FuzzUnescapeOctal(f *testing.F) {
	f.Add(`/mnt/a\040b\134`)
	f.Fuzz(func(t *testing.T, s string) {
		if got := unescapeOctal(s); len(got) > len(s) {
			t.Errorf("unescapeOctal(%q) = %q grew", s, got)
		}
	})
}

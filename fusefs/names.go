package fusefs

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cairn-backup/cairn/blockio/lvm"
	"github.com/cairn-backup/cairn/index"
	"github.com/zeebo/xxh3"
)

// timeFormat names backup directories: UTC, sortable, free of ':' (which some tools mind).
const timeFormat = "2006-01-02T150405Z"

// maxName is the longest file name Linux takes.
const maxName = 255

// sanitize makes a volume or backup name safe as one path component, by the rules the LVM
// names of the tree follow too (lvm.PathName: one owner of what a name in the tree may be).
func sanitize(name string) string { return lvm.PathName(name) }

// shortID is the start of an id, enough to tell entries with the same name apart.
func shortID(id string) string {
	s := sanitize(id)
	if len(s) > 8 {
		s = s[:8]
	}
	return s
}

// maxLabel bounds the backup name in a directory name, in bytes: long enough to read,
// short enough to leave room for the time and a short id.
const maxLabel = 100

// backupDirName is a backup's directory name within its volume: its time, then its name when
// it has one (2026-12-01T070355Z-nightly), so ls sorts by time and a name still tells
// backups apart.
func backupDirName(b *index.Backup) string {
	t := bareDirName(b)
	if l := label(b.Name); l != "" {
		t += "-" + l
	}
	return t
}

// bareDirName is the time alone, the name cairn gave every backup directory before it
// added backup names; it stays resolvable.
func bareDirName(b *index.Backup) string { return b.CreatedAt.UTC().Format(timeFormat) }

// label makes a backup name safe inside a directory name: separators, control characters
// and white space become '_', and a long name is cut at a rune.
func label(name string) string {
	var b strings.Builder
	for _, r := range strings.TrimSpace(name) {
		switch {
		case r == '/' || r == '\\' || r == utf8.RuneError || unicode.IsControl(r) || unicode.IsSpace(r):
			b.WriteByte('_')
		default:
			b.WriteRune(r)
		}
	}
	s := b.String()
	for len(s) > maxLabel {
		_, size := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-size]
	}
	return s
}

// ino derives a stable inode number from what a node shows (kind) and whose it is (ids), so
// the kernel's caches stay valid across lookups and remounts. Numbers stay below 2^63,
// where go-fuse's automatic numbers start, and above 1, the root.
func ino(kind string, ids ...string) uint64 {
	h := xxh3.New()
	_, _ = h.WriteString(kind)
	for _, id := range ids {
		_, _ = h.WriteString("\x00")
		_, _ = h.WriteString(id)
	}
	n := h.Sum64() &^ (1 << 63)
	if n < 2 {
		n += 2
	}
	return n
}

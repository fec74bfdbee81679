// Package blockio reads and writes volumes: block devices and image files. A Source is a
// volume opened read-only for backup; it knows the volume's size (BLKGETSIZE64 for devices)
// and, for image files, where the data extents are (SEEK_DATA/SEEK_HOLE), so holes are never
// read as data. A Target is where a restore writes: it creates or resizes image files, claims
// devices exclusively, writes with O_DIRECT where it can, and zeroes ranges without leaving
// old data behind (punched holes, BLKZEROOUT). InUse says whether a volume is mounted,
// attached to a loop device, held by device-mapper or opened exclusively; Overlapping, which
// devices share blocks with one (a partition and its disk). blockio knows nothing about
// backups, chunks or repositories and imports nothing of cairn; everything it does is one
// volume, a byte range at a time, streamed.
package blockio

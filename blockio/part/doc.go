// Package part reads the partition table of a volume image: an MBR with its logical
// partitions, or a GPT, as the kernel would expose them (numbers, byte ranges clipped to
// the image). Everything read is bounded, so a hostile table costs little.
//
// part knows nothing about backups, repositories or FUSE: it reads byte ranges of an
// io.ReaderAt. The FUSE tree (partitions/) and the search for LVM physical volumes
// (blockio/lvm) both use it.
package part

// Package fusefs is the read-only FUSE tree over backups: every available backup appears as
// the volume image it was (volumes/<name>/<time>/disk.img and backups/<id>/disk.img), with its
// record beside it and, where the image holds an MBR or GPT partition table, one file per
// partition (read by blockio/part) and, where it holds LVM volume groups, one file per
// logical volume under lvm/<vg>/ (found and read by blockio/lvm). Images are read through
// repo.Image, so holes never touch the backend and a block that fails verification fails
// the read instead of returning wrong bytes.
//
// fusefs knows the repository, the index and blockio's readers of images, never the gateway
// or the CLI: whoever mounts it (cairn mount, or the gateway) hands it an open repository
// and index and calls Refresh when backups come and go.
package fusefs

// Package lvm reads LVM2 volume layouts from an image without device-mapper: the PV label
// and header in one of the first four sectors, the metadata area's header and its circular
// text buffer, and the text metadata of the newest sequence number. From that it builds
// each volume group with its physical and logical volumes, and gives every logical volume
// made of linear or striped segments an io.ReaderAt over the image; the others (thin, RAID,
// mirror, snapshot, cache, ...) are reported with the reason they are not exposed.
//
// Everything read is bounded (metadata size, nesting, number of logical volumes and
// segments), so a hostile or damaged image costs little memory and fails with an error.
// Scan reads byte ranges of an io.ReaderAt, and the caller says where the candidate
// devices are. For a whole volume image (an Image: ReadAtContext, NextData, Size, which
// repo.Image fits), ImageDevices finds those devices (the image and each partition of its
// MBR or GPT, read by blockio/part), ImageVGs and Names find and name the volume groups, and
// OpenVolume gives a Volume over one LV that reads along its mapping and reports the
// image's holes through it. The FUSE tree (lvm/<vg>/<lv>.img) and the NBD exports
// (<backup>/lvm/<vg>/<lv>) both use these, so they find the same volumes by the same names.
//
// lvm knows nothing about backups, repositories, FUSE or NBD.
package lvm

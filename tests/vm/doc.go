// Package vm holds cairn's device-mapper and LVM tests. The machines cairn is tested on have no
// device-mapper in their kernel, so these tests boot Debian's kernel (linux-image-amd64, whose
// dm-snapshot and dm-thin-pool are modules) under qemu's software emulation with a small
// initramfs: busybox, those modules, lvm2, thin-provisioning-tools, e2fsprogs and the cairn
// binary. A script baked into the initramfs runs the scenarios and prints one result a line on
// the serial console; the tests parse them. They carry the build tag vmtest, so 'go test ./...'
// does not run them; 'make test-vm' does.
package vm

// Package testutil holds helpers shared by cairn's tests: skipping (or, in CI, failing) when a
// real part such as root, losetup or mkfs is missing, loop devices and mounts that clean up
// after themselves, deterministic volume images with holes, and sha256 of files and devices.
// It is imported only by tests and imports nothing of cairn.
package testutil

// Package local stores a repository's objects as files in a directory: key "packs/ab/ab12"
// is the file <root>/packs/ab/ab12. Put writes a temp file beside the target, fsyncs it,
// renames it into place and fsyncs the directory, so an object is either whole or absent,
// even after a crash. Temp files (".tmp-*") are never listed as objects; Clean removes the
// ones a crash left behind. The package knows files and backend.Backend, nothing of what the
// objects mean.
package local

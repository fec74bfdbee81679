// Package repo holds cairn's repository format: how volume blocks become content-addressed,
// compressed and (optionally) encrypted blobs in pack objects, how a backup's block map is a
// tree of content-addressed nodes that shares unchanged parts with its parent, how manifests
// describe backups, and how backups are written, read at any offset, restored, checked and
// garbage-collected.
//
// repo stores bytes through a backend.Backend and asks an Index (implemented by package index)
// where chunks live and how often they are referenced. It never imports index or gateway: it
// knows nothing of volumes' registration, projects, quotas, jobs or HTTP.
package repo

// Package index is cairn's embedded database on Badger: volumes, backups, and where every blob
// is stored (a cache of the repository: it counts no references). It owns the key schema and
// the transactions; no other package imports badger. Backup records, once all have been read,
// stay decoded in memory and follow every change the package commits (recordcache.go). It
// knows the repository's types (it implements repo.Index) but nothing of how blobs are
// encoded, nor of jobs, HTTP or the CLI.
package index

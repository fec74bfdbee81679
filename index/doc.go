// Package index is cairn's embedded database on Badger: volumes, backups, where every blob
// is stored and how often it is referenced. It owns the key schema and the transactions; no
// other package imports badger. It knows the repository's types (it implements repo.Index)
// but nothing of how blobs are encoded, nor of jobs, HTTP or the CLI.
package index

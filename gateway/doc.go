// Package gateway holds cairn's operations: volumes, backups, restores, export and import,
// repository maintenance, and (for 'cairn serve') jobs. The CLI calls it in-process; the HTTP
// API in gateway/api calls the same methods. It owns the rules of the Block Storage backup
// service: which states allow what, who sees which backups, which backup may be deleted.
// It knows the repository, the index and blockio, and nothing of flags, terminals or HTTP.
package gateway

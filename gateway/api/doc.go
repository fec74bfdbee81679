// Package api serves the subset of the Block Storage (Cinder) v3 HTTP API that covers
// cairn's backup service, so that OpenStack tooling (python-cinderclient 9.1.0 and up)
// drives cairn unchanged: the version documents, volumes (list, detail, show, create, update
// (rename), delete), backups (create, list, detail, show, update, delete, os-force_delete,
// os-reset_status, restore, export_record, import_record), os-quota-sets (show, usage,
// defaults, update, delete), limits (absolute), os-services, and snapshots (list, detail,
// show, create, delete; backups of snapshots).
//
// Handlers only decode, call the gateway and encode. This package is the one place that
// maps gateway errors to HTTP statuses and Cinder fault bodies (errors.go). It knows the
// gateway and HTTP, and nothing of the repository, the index's storage or the CLI.
package api

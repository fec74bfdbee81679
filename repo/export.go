package repo

import (
	"crypto/hmac"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// ExportRecord is what an export URL carries: enough to find the repository and the backup's
// manifest, and the manifest itself, so an import works even before the manifest is read.
type ExportRecord struct {
	RepositoryID string    `json:"repository_id"`
	Location     string    `json:"location"`
	Manifest     *Manifest `json:"manifest"`
}

const exportPrefix = "cairn1."

// ErrBadExport means an export URL is malformed, from another repository or tampered with.
var ErrBadExport = errors.New("invalid backup url")

// ExportURL encodes a backup's record as an opaque, versioned URL authenticated with the
// repository's export key: only this repository's keys can make or accept one.
func (r *Repository) ExportURL(m *Manifest) (string, error) {
	rec := ExportRecord{RepositoryID: r.cfg.ID, Location: r.be.Location(), Manifest: m}
	b, err := json.Marshal(rec)
	if err != nil {
		return "", err
	}
	sealed := r.keys.seal(nil, b, []byte(exportPrefix))
	payload := append(sealed, r.keys.mac(sealed)...)
	return exportPrefix + base64.RawURLEncoding.EncodeToString(payload), nil
}

// ParseExportURL checks and decodes an export URL made by this repository.
func (r *Repository) ParseExportURL(url string) (*ExportRecord, error) {
	if len(url) <= len(exportPrefix) || url[:len(exportPrefix)] != exportPrefix {
		return nil, fmt.Errorf("%w: it does not start with %q (is it from 'cairn backup export'?)", ErrBadExport, exportPrefix)
	}
	payload, err := base64.RawURLEncoding.DecodeString(url[len(exportPrefix):])
	if err != nil || len(payload) < 32 {
		return nil, fmt.Errorf("%w: it is not valid base64url (was it cut or wrapped when copied?)", ErrBadExport)
	}
	sealed, mac := payload[:len(payload)-32], payload[len(payload)-32:]
	if !hmac.Equal(mac, r.keys.mac(sealed)) {
		return nil, fmt.Errorf("%w: its checksum does not match (tampered, damaged, or exported from another repository)", ErrBadExport)
	}
	b, err := r.keys.open(nil, sealed, []byte(exportPrefix))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadExport, err)
	}
	var rec ExportRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.Manifest == nil {
		return nil, fmt.Errorf("%w: the record inside is not readable", ErrBadExport)
	}
	if rec.RepositoryID != r.cfg.ID {
		return nil, fmt.Errorf("%w: it belongs to repository %s, this is %s", ErrBadExport, rec.RepositoryID, r.cfg.ID)
	}
	if !validID(rec.Manifest.ID) || rec.Manifest.BlockSize != r.cfg.BlockSize {
		return nil, fmt.Errorf("%w: the backup record inside is inconsistent", ErrBadExport)
	}
	return &rec, nil
}

package index

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// checkTables opens each table the index's manifest names as Badger's Open would, and says
// which one cannot be opened. Badger opens its tables in goroutines of its own, where a table
// cut short (a crash, a full disk, a copy interrupted) panics out of range and ends the
// process: every start of cairn then died the same way, and the index was never moved aside
// [TestOpenMovesAsideAnIndexWithATruncatedTable]. A manifest that cannot be read is left to
// Badger, which refuses it with an error, and so is an index another process has open
// (Badger's lock is a flock of the directory): that one says the index is in use.
func checkTables(dir string, opts badger.Options) error {
	d, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer d.Close()
	if syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return nil
	}
	defer syscall.Flock(int(d.Fd()), syscall.LOCK_UN)
	f, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if err != nil {
		return nil
	}
	defer f.Close()
	m, _, err := badger.ReplayManifestFile(f, opts.ExternalMagicVersion, opts)
	if err != nil {
		return nil
	}
	for id, tm := range m.Tables {
		if err := checkTable(table.NewFilename(id, dir), tm.Compression, opts); err != nil {
			return err
		}
	}
	return nil
}

func checkTable(name string, compression options.CompressionType, opts badger.Options) (err error) {
	mf, err := z.OpenMmapFile(name, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil // Badger says what is missing
	}
	if err != nil {
		return fmt.Errorf("table %s: %w", filepath.Base(name), err)
	}
	defer mf.Close(-1)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("table %s is damaged (cut short?)", filepath.Base(name))
		}
	}()
	// No reference is dropped: a table whose last reference goes deletes its file. Without
	// verification OpenTable leaves mf open on every error, for the deferred Close.
	_, err = table.OpenTable(mf, table.Options{BlockSize: opts.BlockSize, Compression: compression,
		BloomFalsePositive: opts.BloomFalsePositive, ChkMode: options.NoVerification, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("table %s: %w", filepath.Base(name), err)
	}
	return nil
}

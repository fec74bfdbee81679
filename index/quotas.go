package index

import (
	"errors"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Quota limits a project set explicitly (cairn quota update, PUT os-quota-sets). Keys:
//
//	q/<project>\x00<resource>   limit (decimal int64; -1 is unlimited)
//
// A resource without a key has the configured default. Usage is not stored: it is counted
// from the backup records, so it cannot drift from them. The gateway writes limits through to
// the repository as metadata objects too (gateway/meta.go), so a rebuilt index gets them back.
func quotaKey(project, resource string) string { return "q/" + project + "\x00" + resource }

// QuotaLimits returns the limits set for a project, by resource name.
func (ix *Index) QuotaLimits(project string) (map[string]int64, error) {
	prefix := "q/" + project + "\x00"
	out := map[string]int64{}
	err := ix.scan(prefix, true, func(k, v []byte) error {
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return errors.New("index: corrupt quota limit for " + project + "/" + string(k))
		}
		out[string(k)] = n
		return nil
	})
	return out, err
}

// SetQuotaLimits sets a project's limits (resource → limit) in one transaction.
func (ix *Index) SetQuotaLimits(project string, limits map[string]int64) error {
	return ix.update(func(txn *badger.Txn) error {
		for r, n := range limits {
			if err := txn.Set([]byte(quotaKey(project, r)), []byte(strconv.FormatInt(n, 10))); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteQuotaLimits drops a project's limits: it goes back to the defaults.
func (ix *Index) DeleteQuotaLimits(project string) error {
	var keys []string
	prefix := "q/" + project + "\x00"
	if err := ix.scan(prefix, false, func(k, _ []byte) error {
		keys = append(keys, prefix+string(k))
		return nil
	}); err != nil {
		return err
	}
	return ix.update(func(txn *badger.Txn) error {
		for _, k := range keys {
			if err := txn.Delete([]byte(k)); err != nil {
				return err
			}
		}
		return nil
	})
}

// AllQuotaLimits returns every project's limits set explicitly, by project and resource.
func (ix *Index) AllQuotaLimits() (map[string]map[string]int64, error) {
	out := map[string]map[string]int64{}
	err := ix.scan("q/", true, func(k, v []byte) error {
		project, resource, ok := strings.Cut(string(k), "\x00")
		n, err := strconv.ParseInt(string(v), 10, 64)
		if !ok || err != nil {
			return errors.New("index: corrupt quota limit " + strconv.Quote(string(k)))
		}
		if out[project] == nil {
			out[project] = map[string]int64{}
		}
		out[project][resource] = n
		return nil
	})
	return out, err
}

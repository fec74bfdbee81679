package index

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An index held by a process names it to the next one that tries: pid and command line;
// the record goes away on Close and a dead holder is not named.
func TestLockedNamesHolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	ix, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if want := fmt.Sprintf("pid %d (cairn", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("second open: %q does not name the holder (%s ...)", err, want)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(holderPath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("holder record left after Close: %v", err)
	}
	// A record of a process that is gone says nothing.
	if err := os.WriteFile(holderPath(dir), []byte(`{"pid":2147483646,"command":["cairn","mount","/x"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if h := readHolder(dir); h != "" {
		t.Errorf("a dead holder is named: %q", h)
	}
}

func TestRedact(t *testing.T) {
	got := strings.Join(redact([]string{"cairn", "--secret-key", "s3cr3t", "--access-key=AK", "mount", "/m"}), " ")
	if strings.Contains(got, "s3cr3t") || strings.Contains(got, "AK") || !strings.Contains(got, "mount /m") {
		t.Errorf("redact: %q", got)
	}
}

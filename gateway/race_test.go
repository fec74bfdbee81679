package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
)

// gc runs in a loop while backups (fulls of clones of one volume, and incrementals) commit and
// deletes race them; every backup that ends available restores byte-exact. Run under -race.
func TestGCAndDeletesRacingBackups(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	rng := rand.New(rand.NewPCG(7, 7))
	base := make([]byte, 6<<20)
	for i := range base {
		base[i] = byte(rng.Uint32())
	}
	vols := make([]string, 3)
	for i := range vols {
		vols[i] = filepath.Join(dir, fmt.Sprintf("clone%d.img", i))
		if err := os.WriteFile(vols[i], base, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var gcs atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.GC(ctx, repo.GCOptions{}); err != nil && !errors.Is(err, gateway.ErrInUse) {
				t.Error(err)
				return
			}
			gcs.Add(1)
		}
	}()

	content := map[string][]byte{}      // backup id → the volume's bytes when it was taken
	latest := make([]string, len(vols)) // newest backup of each volume, "" if none
	for round := range 12 {
		v := rng.IntN(len(vols))
		data, err := os.ReadFile(vols[v])
		if err != nil {
			t.Fatal(err)
		}
		off := rng.IntN(len(data)/4096) * 4096
		copy(data[off:], bytes.Repeat([]byte{byte(round + 1)}, 4096))
		if err := os.WriteFile(vols[v], data, 0o600); err != nil {
			t.Fatal(err)
		}
		incremental := latest[v] != "" && rng.IntN(2) == 0
		_, job, err := s.StartBackup(ctx, gateway.BackupRequest{Volume: vols[v], Incremental: incremental})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		done := make(chan error, 1)
		go func() { done <- job(context.Background()) }()
		// Meanwhile delete the newest backup of another volume: it shares almost every
		// block with the running one.
		if w := (v + 1) % len(vols); latest[w] != "" {
			if _, err := s.DeleteBackup(ctx, latest[w], false); err == nil {
				delete(content, latest[w])
				latest[w] = ""
			}
		}
		if err := <-done; err != nil {
			t.Fatalf("round %d: backup: %v", round, err)
		}
		bs, err := s.ListBackups(ctx, gateway.ListFilter{Volume: vols[v]})
		if err != nil || len(bs) == 0 {
			t.Fatal(err)
		}
		b := bs[len(bs)-1]
		if b.Status != "available" {
			t.Fatalf("round %d: backup %s is %s: %s", round, b.ID, b.Status, b.FailReason)
		}
		content[b.ID], latest[v] = data, b.ID
	}
	close(stop)
	wg.Wait()
	if _, err := s.GC(ctx, repo.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	for id, want := range content {
		out := filepath.Join(dir, "restore-"+id+".img")
		if _, err := s.Restore(ctx, gateway.RestoreRequest{Backup: id, To: out}); err != nil {
			t.Fatalf("restore %s: %v", id, err)
		}
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("backup %s restored differs (%v)", id, err)
		}
		os.Remove(out)
	}
	rep, err := s.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v %+v", err, rep)
	}
	t.Logf("%d gc runs, %d backups kept", gcs.Load(), len(content))
}

// A protect racing a delete of the same backup never leaves a zombie: whichever takes the
// manifest first wins, and a backup whose delete succeeded has no manifest left for a rebuilt
// index (or another gateway) to find; one whose protect succeeded is still there, protected.
func TestProtectRacingDelete(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	vol := image(t, dir, "vol.img", 1<<20)
	for round := range 20 {
		b, job, err := s.StartBackup(ctx, gateway.BackupRequest{Volume: vol})
		if err != nil {
			t.Fatal(err)
		}
		if err := job(context.Background()); err != nil {
			t.Fatal(err)
		}
		id := b.ID
		var protectErr, deleteErr error
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _, protectErr = s.ProtectBackup(ctx, id, true) }()
		go func() { defer wg.Done(); _, deleteErr = s.DeleteBackup(ctx, id, false) }()
		wg.Wait()
		if (protectErr == nil) == (deleteErr == nil) {
			t.Fatalf("round %d: protect %v, delete %v: exactly one must win", round, protectErr, deleteErr)
		}
		_, statErr := os.Stat(filepath.Join(dir, "repo", "manifests", id))
		switch {
		case deleteErr == nil && statErr == nil:
			t.Fatalf("round %d: backup %s deleted, but its manifest is still stored", round, id)
		case protectErr == nil && statErr != nil:
			t.Fatalf("round %d: backup %s protected, but its manifest is gone: %v", round, id, statErr)
		}
		if protectErr == nil {
			if _, err := s.ProtectBackup(ctx, id, false); err != nil {
				t.Fatal(err)
			}
			if _, err := s.DeleteBackup(ctx, id, false); err != nil {
				t.Fatal(err)
			}
		}
	}
}

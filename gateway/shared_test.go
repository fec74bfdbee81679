package gateway_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
)

// Backups of four clones of one image run at once by one gateway (a policy's run over volumes
// made from the same image) store the image's data about once, not four times, and each
// restores byte for byte.
func TestClonesBackedUpTogetherShareTheirBlocks(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	data := make([]byte, 24<<20)
	rng := rand.New(rand.NewPCG(61, 61))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	var vols []string
	for k := range 4 {
		p := filepath.Join(dir, fmt.Sprintf("clone%d.img", k))
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		vols = append(vols, p)
	}
	ids := make([]string, len(vols))
	var wg sync.WaitGroup
	for k, v := range vols {
		wg.Go(func() {
			b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v, Name: fmt.Sprint("clone", k)})
			if err != nil {
				t.Error(err)
				return
			}
			ids[k] = b.ID
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var stored, shared int64
	for _, id := range ids {
		b, err := s.Backup(ctx, id)
		if err != nil || b.Status != "available" {
			t.Fatalf("backup %s: %+v %v", id, b, err)
		}
		stored += b.Stats.NewPlainBytes
		shared += b.Stats.SharedBlobs
	}
	// Alone, each would store the image's 24 MiB; together they store it once, plus each
	// backup's tree nodes. (Before a backup looked a block up again when another had
	// indexed a pack since its check, some runs stored half the image twice.)
	t.Logf("four clones of %d bytes: %d bytes stored, %d blocks shared", len(data), stored, shared)
	if shared == 0 || stored > int64(len(data))*11/10 {
		t.Fatalf("four clones backed up together stored %d bytes of %d and shared %d blocks", stored, len(data), shared)
	}
	for _, id := range ids {
		out := filepath.Join(dir, "restore-"+id+".img")
		if _, err := s.Restore(ctx, gateway.RestoreRequest{Backup: id, To: out}); err != nil {
			t.Fatalf("restore %s: %v", id, err)
		}
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("backup %s restored differs (%v)", id, err)
		}
	}
	rep, err := s.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v %+v", err, rep)
	}
}

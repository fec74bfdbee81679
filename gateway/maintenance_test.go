package gateway_test

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
)

// A full backup and an incremental of an unchanged volume share their whole block map. With a
// data block of it damaged and the volume gone (nothing to heal from), repair lists both as
// damaged, with the same bytes lost, and forgets the incremental when the admin names it.
// Before, check walked the shared block map for the full backup only, so repair listed only
// the full one and refused to forget the incremental as "not damaged" (found by review).
func TestRepairForgetsEveryBackupOfASharedDamagedBlock(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	vol := filepath.Join(dir, "vm.img")
	b := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(5, 5))
	for i := range b {
		b[i] = byte(rng.Uint32()) // every block distinct: the damage costs one of them
	}
	if err := os.WriteFile(vol, b, 0o600); err != nil {
		t.Fatal(err)
	}
	full, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	inc, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	packs, err := filepath.Glob(filepath.Join(dir, "repo", "packs", "*", "*"))
	if err != nil || len(packs) != 1 {
		t.Fatalf("packs: %v %v; want the full backup's one", packs, err)
	}
	p, err := os.ReadFile(packs[0])
	if err != nil {
		t.Fatal(err)
	}
	p[len(p)/3] ^= 0x40 // in the data blocks, far before the block map and the trailer
	if err := os.WriteFile(packs[0], p, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(vol); err != nil {
		t.Fatal(err)
	}

	rep, err := s.Repair(ctx, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Backups) != 2 || rep.Backups[0].Forgotten || rep.Backups[1].Forgotten {
		t.Fatalf("repair lists %+v as damaged, want both backups, kept", rep.Backups)
	}
	lost := map[string][][2]int64{}
	for _, rb := range rep.Backups {
		lost[rb.ID] = rb.Lost
	}
	if l := lost[full.ID]; len(l) != 1 || l[0][1]-l[0][0] != 16<<10 || !reflect.DeepEqual(lost[inc.ID], l) {
		t.Fatalf("repair says the full backup lost %v and the incremental %v, want the same one block", l, lost[inc.ID])
	}

	rep, err = s.Repair(ctx, []string{inc.ID}, false)
	if err != nil {
		t.Fatalf("repair --forget of the incremental: %v", err)
	}
	for _, rb := range rep.Backups {
		if rb.Forgotten != (rb.ID == inc.ID) {
			t.Fatalf("repair --forget %s: %+v", inc.ID, rep.Backups)
		}
	}
	if _, err := s.Backup(ctx, inc.ID); !errors.Is(err, gateway.ErrNotFound) {
		t.Fatalf("the forgotten incremental: %v, want not found", err)
	}
	if _, err := s.Backup(ctx, full.ID); err != nil {
		t.Fatalf("the full backup, not named: %v", err)
	}
}

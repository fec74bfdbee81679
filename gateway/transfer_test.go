package gateway_test

import (
	"testing"

	"github.com/cairn-backup/cairn/gateway"
)

// An export URL carries the manifest as it was when exported. Imported through a gateway
// whose index does not know the backup while its manifest is still stored (renamed and
// protected since), the record must say what the stored manifest says, not what the URL
// does (docs/design.md, "Manifests and export URLs").
func TestImportOfAnOldURLTakesTheStoredManifest(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir := twoGateways(t, dir)
	admin := adminCtx()
	vol := image(t, dir, "vol.img", 256<<10)
	bk, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: vol, Name: "old"})
	if err != nil {
		t.Fatal(err)
	}
	exp, err := a.ExportBackup(admin, bk.ID)
	if err != nil {
		t.Fatal(err)
	}
	name := "new"
	if _, err := a.UpdateBackup(admin, bk.ID, gateway.BackupUpdate{Name: &name}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ProtectBackup(admin, bk.ID, true); err != nil {
		t.Fatal(err)
	}
	// The changes are older than the backup log keeps (gc removes its objects after a day).
	dropLog(t, repoDir)
	if record(t, b, bk.ID) != nil {
		t.Fatal("b already knows the backup: the set-up is wrong")
	}
	got, err := b.ImportBackup(admin, exp.BackupService, exp.BackupURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range []struct {
		what string
		name string
		prot bool
	}{{"import's answer", got.Name, got.Protected}, {"b's record", record(t, b, bk.ID).Name, record(t, b, bk.ID).Protected}} {
		if rec.name != name || !rec.prot {
			t.Errorf("%s: name %q protected %v, want %q and protected as the stored manifest says", rec.what, rec.name, rec.prot, name)
		}
	}
	catchUp(t, b)
	if rec := record(t, b, bk.ID); rec.Name != name || !rec.Protected {
		t.Errorf("after catch-up b's record: name %q protected %v, want %q and protected", rec.Name, rec.Protected, name)
	}
}

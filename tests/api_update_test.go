package tests

import (
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// The Cinder verbs and fields new admins found missing, through the stock cinder client:
// backup-update (3.9; metadata from 3.43), backup-create --metadata (3.43), object_count as the
// blocks a backup references, and user_id (3.56) as its creator. Descriptions live in the
// manifest: a backup the index forgot comes back from the repository with them.
func TestAPIBackupUpdateAndMetadata(t *testing.T) {
	e := startAPI(t, &gateway.Quota{Backups: 10, BackupGigabytes: 1000})
	vol := e.volume("p1", "meta-vol", 6<<20, testutil.Mixed)
	alice := e.asToken(tokenP1)
	v := func(ver string) []string { return append(append([]string{}, alice...), "--os-volume-api-version", ver) }

	d := dict(e.ok(v("3.43"), "backup-create", "--name", "tagged", "--metadata", "owner=ops", "tier=gold", "meta-vol"))
	id := d["id"]
	if id == "" {
		t.Fatalf("backup-create --metadata: %v", d)
	}
	first := e.waitBackup(id, index.BackupAvailable)
	d = dict(e.ok(v("3.56"), "backup-show", id))
	if !strings.Contains(d["metadata"], `'owner': 'ops'`) || !strings.Contains(d["metadata"], `'tier': 'gold'`) {
		t.Errorf("backup-show metadata: %q, want owner=ops and tier=gold", d["metadata"])
	}
	if d["user_id"] != "alice" {
		t.Errorf("backup-show user_id: %q, want alice (who created it)", d["user_id"])
	}
	if d["object_count"] == "0" || d["object_count"] == "" {
		t.Errorf("object_count of a full backup: %q", d["object_count"])
	}
	// A second full backup finds every block stored: it references as many objects.
	id2 := dict(e.ok(v("3.43"), "backup-create", "--name", "again", vol.ID))["id"]
	second := e.waitBackup(id2, index.BackupAvailable)
	if second.Stats.NewBlobs != 0 {
		t.Errorf("a second full backup of an unchanged volume stored %d new blobs, want 0", second.Stats.NewBlobs)
	}
	if d2 := dict(e.ok(v("3.43"), "backup-show", id2)); d2["object_count"] != d["object_count"] || second.ObjectCount() != first.ObjectCount() {
		t.Errorf("object_count of a full backup whose blocks were stored already: %q, want %q as the first", d2["object_count"], d["object_count"])
	}

	// backup-update: name and description at 3.9, metadata at 3.43 (it replaces).
	out := e.ok(v("3.9"), "backup-update", "--name", "renamed", "--description", "after the upgrade", id)
	if !strings.Contains(out, "accepted") {
		t.Errorf("backup-update: %s", out)
	}
	e.ok(v("3.43"), "backup-update", "--metadata", "owner=dba", id)
	d = dict(e.ok(v("3.43"), "backup-show", id))
	if d["name"] != "renamed" || d["description"] != "after the upgrade" || !strings.Contains(d["metadata"], `'owner': 'dba'`) || strings.Contains(d["metadata"], "tier") {
		t.Errorf("after backup-update: name %q, description %q, metadata %q", d["name"], d["description"], d["metadata"])
	}
	e.fails(`(?i)version`, v("3.8"), "backup-update", "--name", "x", id)
	e.fails(`(?i)cannot contain '/'`, v("3.9"), "backup-update", "--name", "a/b", id)
	bob := append(e.asNoauth("bob", "p2"), "--os-volume-api-version", "3.9")
	e.fails(`(?i)not found|could not be found|no volumebackup`, bob, "backup-update", "--name", "x", id)

	// The index forgets the backup; the repository brings it back as updated.
	if err := e.svc.Index().DeleteBackup(id); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RebuildIndex(e.adminCtx, nil); err != nil {
		t.Fatal(err)
	}
	d = dict(e.ok(v("3.56"), "backup-show", id))
	if d["name"] != "renamed" || d["description"] != "after the upgrade" || !strings.Contains(d["metadata"], `'owner': 'dba'`) || d["user_id"] != "alice" {
		t.Errorf("after the index lost it and was rebuilt: %v", d)
	}
}

// cinder rename through the stock client: a volume gets a new name and description, found by
// the new name; a name another volume of the project has is refused; a user of another
// project cannot rename it.
func TestAPIVolumeRename(t *testing.T) {
	e := startAPI(t, nil)
	vol := e.volume("p1", "old-name", 1<<20, testutil.Mixed)
	e.volume("p1", "other", 1<<20, testutil.Mixed)
	alice := e.asToken(tokenP1)
	e.ok(alice, "rename", "old-name", "web", "--description", "the web server")
	d := dict(e.ok(alice, "show", "web"))
	if d["id"] != vol.ID || d["name"] != "web" || d["description"] != "the web server" {
		t.Errorf("cinder show after cinder rename: %v", d)
	}
	e.fails(`(?i)already exists`, alice, "rename", "web", "other")
	e.fails(`(?i)no volume|not found|could not be found`, e.asNoauth("bob", "p2"), "rename", vol.ID, "mine")
	if v, err := e.svc.Index().Volume(vol.ID); err != nil || v.Name != "web" {
		t.Errorf("after the refused renames: %+v %v", v, err)
	}
}

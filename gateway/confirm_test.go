package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
)

// asker records the questions a context's Confirm was asked and answers them with answer.
type asker struct {
	asked  []string
	answer error
}

func (a *asker) ctx(parent context.Context) context.Context {
	return gateway.WithConfirm(parent, func(q string) error {
		a.asked = append(a.asked, q)
		return a.answer
	})
}

// Exactly the destructive steps ask, before they change anything; a refusal is the
// operation's error and leaves everything as it was.
func TestConfirmDestructiveSteps(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	no := errors.New("no")
	vol := image(t, dir, "vol.img", 256<<10)
	b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol, Name: "first"})
	if err != nil {
		t.Fatal(err)
	}
	original, _ := os.ReadFile(vol)

	restore := func(a *asker, req gateway.RestoreRequest) error {
		req.Backup = b.ID
		_, err := s.Restore(a.ctx(ctx), req)
		return err
	}
	for _, tc := range []struct {
		name string
		req  gateway.RestoreRequest
		ask  string // a substring of the question, or "" for none
	}{
		{"new volume", gateway.RestoreRequest{}, ""},
		{"new file", gateway.RestoreRequest{To: filepath.Join(dir, "new.img")}, ""},
		{"non-empty file", gateway.RestoreRequest{To: image(t, dir, "full.img", 512<<10)}, "full.img (524288 bytes)"},
		{"registered volume", gateway.RestoreRequest{Volume: "vol.img"}, "volume vol.img"},
		{"registered path", gateway.RestoreRequest{To: vol}, "volume vol.img"},
	} {
		refuse := &asker{answer: no}
		err := restore(refuse, tc.req)
		switch {
		case tc.ask == "" && (err != nil || len(refuse.asked) != 0):
			t.Errorf("%s: restore %v, asked %q; want no question", tc.name, err, refuse.asked)
		case tc.ask != "" && (!errors.Is(err, no) || len(refuse.asked) != 1 || !strings.Contains(refuse.asked[0], tc.ask) || !strings.Contains(refuse.asked[0], b.ID)):
			t.Errorf("%s: restore %v, asked %q; want one question naming %q and the backup, and its refusal", tc.name, err, refuse.asked, tc.ask)
		}
	}
	if now, _ := os.ReadFile(vol); !bytes.Equal(now, original) {
		t.Error("a refused restore changed the volume")
	}
	if got, _ := s.Backup(ctx, b.ID); got.Status != "available" {
		t.Errorf("after refused restores the backup is %s", got.Status)
	}

	// A volume with backups: refused without force; with force, asked, and its backups stay.
	if _, err := s.DeleteVolume((&asker{}).ctx(ctx), "vol.img", false); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "--force") {
		t.Errorf("delete of a volume with backups: %v, want a conflict naming --force", err)
	}
	refuse := &asker{answer: no}
	if _, err := s.DeleteVolume(refuse.ctx(ctx), "vol.img", true); !errors.Is(err, no) || len(refuse.asked) != 1 || !strings.Contains(refuse.asked[0], "1 backups stay") {
		t.Errorf("forced delete, refused: %v, asked %q", err, refuse.asked)
	}
	if _, err := s.Volume(ctx, "vol.img"); err != nil {
		t.Errorf("a refused volume delete removed the volume: %v", err)
	}
	yes := &asker{}
	if _, err := s.DeleteVolume(yes.ctx(ctx), "vol.img", true); err != nil || len(yes.asked) != 1 {
		t.Fatalf("forced delete, confirmed: %v, asked %q", err, yes.asked)
	}
	if _, err := s.Backup(ctx, b.ID); err != nil {
		t.Errorf("the deleted volume's backup went with it: %v", err)
	}
	// A registered volume without backups is only forgotten: nothing to ask.
	other := image(t, dir, "other.img", 64<<10)
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: other}); err != nil {
		t.Fatal(err)
	}
	quiet := &asker{answer: no}
	if _, err := s.DeleteVolume(quiet.ctx(ctx), "other.img", false); err != nil || len(quiet.asked) != 0 {
		t.Errorf("delete of a registered volume without backups: %v, asked %q", err, quiet.asked)
	}
	// A volume cairn created loses its image: asked.
	created, err := s.CreateVolume(ctx, gateway.CreateVolumeRequest{Name: "scratch", Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	refuse = &asker{answer: no}
	if _, err := s.DeleteVolume(refuse.ctx(ctx), "scratch", false); !errors.Is(err, no) || len(refuse.asked) != 1 || !strings.Contains(refuse.asked[0], created.Path) {
		t.Errorf("delete of a created volume, refused: %v, asked %q", err, refuse.asked)
	}
	if _, err := os.Stat(created.Path); err != nil {
		t.Errorf("a refused delete removed the image: %v", err)
	}

	// A backup delete asks, after its own checks.
	refuse = &asker{answer: no}
	if _, err := s.DeleteBackup(refuse.ctx(ctx), b.ID, false); !errors.Is(err, no) || len(refuse.asked) != 1 || !strings.Contains(refuse.asked[0], "first") {
		t.Errorf("backup delete, refused: %v, asked %q", err, refuse.asked)
	}
	if _, err := s.Backup(ctx, b.ID); err != nil {
		t.Errorf("a refused backup delete removed it: %v", err)
	}
	if _, err := s.DeleteBackup(ctx, b.ID, false); err != nil {
		t.Errorf("backup delete without a Confirm (the API): %v", err)
	}
}

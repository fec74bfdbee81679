package gateway_test

import (
	"errors"
	"os"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// A volume cairn created whose image is in use (attached to a loop device, as a VM's disk
// is) is not deleted: removing the image would take the disk from under its user, and its
// data with it once closed. It is deleted once free.
func TestDeleteOfAVolumeInUseIsRefused(t *testing.T) {
	s, _ := newService(t)
	ctx := adminCtx()
	v, err := s.CreateVolume(ctx, gateway.CreateVolumeRequest{Name: "scratch", Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	dev := testutil.LoopDevice(t, v.Path, false)
	if _, err := s.DeleteVolume(ctx, "scratch", false); !errors.Is(err, gateway.ErrInUse) {
		t.Errorf("delete of a volume attached to %s: %v, want in use", dev, err)
	}
	if _, err := os.Stat(v.Path); err != nil {
		t.Fatalf("the image of a volume in use: %v", err)
	}
	if _, err := s.VolumeByID(ctx, v.ID); err != nil {
		t.Errorf("the volume in use was forgotten: %v", err)
	}
}

package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A loop device reads as its image and is detached when the test that made it ends.
func TestLoopDevice(t *testing.T) {
	image := filepath.Join(t.TempDir(), "loop.img")
	WriteImage(t, image, 8<<20, 4, Mixed)
	var dev string
	t.Run("attached", func(t *testing.T) {
		dev = LoopDevice(t, image, true)
		if got, want := SHA256Range(t, dev, 8<<20), SHA256File(t, image); got != want {
			t.Errorf("%s reads sha256 %s, image has %s", dev, got, want)
		}
		ro, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "ro"))
		if err != nil || strings.TrimSpace(string(ro)) != "1" {
			t.Errorf("%s is not read-only: ro = %q, %v", dev, ro, err)
		}
	})
	if dev == "" {
		return // skipped
	}
	out, err := exec.Command("losetup", "-j", image).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("after the test, losetup -j %s = %q, %v; want detached", image, out, err)
	}
}

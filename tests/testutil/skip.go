package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// DisallowSkipEnv names the environment variable that turns every Skip into a failure. CI sets
// it to 1 so a missing part (root, losetup, an S3 server) cannot hide behind a skipped test.
const DisallowSkipEnv = "CAIRN_TEST_DISALLOW_SKIP"

// Skip skips the test with a message saying what is missing, or fails it when
// CAIRN_TEST_DISALLOW_SKIP=1.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(DisallowSkipEnv) == "1" {
		t.Fatalf("not skipping ("+DisallowSkipEnv+"=1): "+format, args...)
	}
	t.Skipf(format, args...)
}

// RequireRoot skips (see Skip) unless the test runs as root, which loop devices, mounts and
// O_EXCL on block devices need.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root (loop devices, mounts); run the tests as root")
	}
}

// RequireCommand skips (see Skip) unless name is found in PATH, and returns its full path.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Skip(t, "needs %s in PATH: %v", name, err)
	}
	return p
}

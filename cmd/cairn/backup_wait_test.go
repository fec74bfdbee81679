package main

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// 'backup create --wait' inside a gateway whose backup fails because the backend is
// unreachable exits as the embedded command does: 7, backend unavailable, which a script
// retries later. Before, every backup that failed in a gateway's job exited 1, whatever the
// cause: the record kept only the reason's words.
func TestBackupWaitFailureKeepsItsKind(t *testing.T) {
	srv := testutil.StartS3(t)
	proxy := testutil.StartFaultProxy(t, srv.Endpoint)
	dir := t.TempDir()
	cfg := gateway.Config{Repo: "s3://" + srv.Bucket + "/wait", StateDir: filepath.Join(dir, "state"), Endpoint: proxy.Endpoint,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Retries: -1, Timeout: 5 * time.Second}
	s, admin := gatewayWithVolume(t, cfg, dir)
	release := busyWorker(t, s, admin)
	var out, errb bytes.Buffer
	code := make(chan int, 1)
	go func() {
		code <- runCLI(admin, []string{"--quiet", "backup", "create", "vm", "--wait"}, &out, &errb, s, nil)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) { // accepted, queued
		if bs, err := s.ListBackups(admin, gateway.ListFilter{}); err == nil && len(bs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the backup was not accepted")
		}
	}
	proxy.SetMode(testutil.ProxyReset, 0) // the backend goes away before the backup's job runs
	close(release)
	select {
	case c := <-code:
		if c != exitUnavailable {
			t.Errorf("backup create --wait of a backup that found the backend unreachable: exit %d, %q; want %d", c, errb.String(), exitUnavailable)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("backup create --wait did not return")
	}
	proxy.SetMode(testutil.ProxyPass, 0)
}

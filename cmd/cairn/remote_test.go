package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
)

// A command a gateway runs for a client reads a relative --password-file in the client's
// working directory, as the client's own parse of the same line did, not the gateway's:
// 'cairn --password-file pass backup list' in /root beside a gateway started in / failed
// with "stat /pass: no such file or directory".
func TestForwardedPasswordFileRelativeToClient(t *testing.T) {
	dir := t.TempDir()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo"), Password: "secret"}
	bg := context.Background()
	if _, err := gateway.Init(bg, cfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := gateway.Open(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cwd := filepath.Join(dir, "client")
	if err := os.MkdirAll(cwd, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cwd, "pass"), []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	exec := func(args ...string) (int, string) {
		t.Helper()
		body, _ := json.Marshal(execRequest{Args: args, Cwd: cwd})
		rec := httptest.NewRecorder()
		execHandler(s).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, execPath, bytes.NewReader(body)))
		code, stderr := -1, ""
		for _, line := range strings.Split(strings.TrimSpace(rec.Body.String()), "\n") {
			var f execFrame
			if err := json.Unmarshal([]byte(line), &f); err != nil {
				t.Fatalf("frame %q: %v", line, err)
			}
			stderr += f.Err
			if f.Exit != nil {
				code = *f.Exit
			}
		}
		return code, stderr
	}
	if code, msg := exec("--password-file", "pass", "backup", "list"); code != exitOK {
		t.Errorf("forwarded backup list with --password-file relative to the client: exit %d: %s", code, msg)
	}
	if code, msg := exec("--password-file", "missing", "backup", "list"); code != exitInvalid {
		t.Errorf("forwarded backup list with a missing --password-file: exit %d, want %d: %s", code, exitInvalid, msg)
	}
}

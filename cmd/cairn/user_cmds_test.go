package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway/api"
)

// The user commands keep the users file: add (and change), list without hashes, delete, and a
// clear error for each thing that cannot be done.
func TestUserCommands(t *testing.T) {
	users := filepath.Join(t.TempDir(), "users")
	run := func(wantCode int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := runCLI(t.Context(), append(args, "--users", users), &out, &errb, nil, nil); code != wantCode {
			t.Fatalf("cairn %v: exit %d, want %d: %s%s", args, code, wantCode, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	t.Setenv("CAIRN_USER_PASSWORD", "")
	if out := run(2, "user", "add", "alice", "p1"); !strings.Contains(out, "no password for alice: set CAIRN_USER_PASSWORD or use --user-password-file") {
		t.Errorf("add without a password: %s", out)
	}
	t.Setenv("CAIRN_USER_PASSWORD", "pw-1")
	run(0, "user", "add", "alice", "p1")
	run(0, "user", "add", "alice", "p2", "--role", "admin", "--role", "member")
	if out := run(0, "user", "add", "alice", "p1"); !strings.Contains(out, "user alice changed in project p1") {
		t.Errorf("add again: %s", out)
	}
	if out := run(2, "user", "add", "a b", "p1"); !strings.Contains(out, `user "a b": give a name without spaces`) {
		t.Errorf("a name with a space: %s", out)
	}
	if out := run(2, "user", "add", "carol", "p1", "--role", "reader"); !strings.Contains(out, `role "reader": cairn knows member, admin`) {
		t.Errorf("an unknown role: %s", out)
	}
	lines, err := api.ReadUserLines(users)
	if err != nil || len(lines) != 2 || lines[1].Project != "p2" || strings.Join(lines[1].Roles, ",") != "admin,member" {
		t.Fatalf("the users file: %+v %v", lines, err)
	}
	if fi, err := os.Stat(users); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the users file's mode: %v %v", fi, err)
	}
	out := run(0, "user", "list")
	if !strings.Contains(out, "| alice | p2      | admin,member |") || strings.Contains(out, "$2a$") {
		t.Errorf("list:\n%s", out)
	}
	run(0, "user", "delete", "alice", "p1")
	if out := run(3, "user", "delete", "alice", "p1"); !strings.Contains(out, "user alice in project p1 is not in") {
		t.Errorf("delete again: %s", out)
	}
	run(0, "user", "delete", "alice")
	if lines, _ := api.ReadUserLines(users); len(lines) != 0 {
		t.Errorf("after deleting alice: %+v", lines)
	}
}

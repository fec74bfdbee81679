package api

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// usersFile writes a users file of "USER PROJECT ROLES PASSWORD" lines, the passwords hashed.
func usersFile(t *testing.T, path string, lines ...string) {
	t.Helper()
	var ls []UserLine
	for _, l := range lines {
		f := strings.Fields(l)
		h, err := HashPassword(f[3])
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, UserLine{User: f[0], Project: f[1], Roles: strings.Split(f[2], ","), Hash: h})
	}
	rewrite(t, path, ls)
}

// rewrite replaces a users file with lines.
func rewrite(t *testing.T, path string, lines []UserLine) {
	t.Helper()
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.String() + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	// The reload notices a change by time, size and inode; a rewrite within the same clock
	// tick and of the same size would be missed, so move the time on.
	future := time.Now().Add(time.Duration(len(lines)+1) * time.Second)
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
}

func TestUsersSignInAndTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	usersFile(t, path, "alice p1 member pw-a", "bob p1 member pw-b", "bob p2 admin,member pw-b", "prom - metrics pw-m")
	u, err := LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	u.now = func() time.Time { return clock }

	s, err := u.SignIn("here", "alice", "pw-a", "")
	if err != nil || s.Caller.Project != "p1" || s.Caller.Admin || s.Caller.User != "alice" {
		t.Fatalf("alice's one project: %+v, %v", s, err)
	}
	if c, ok := u.Lookup(s.Token); !ok || c != s.Caller {
		t.Fatalf("alice's token: %+v %v", c, ok)
	}
	for _, bad := range []struct{ user, pw, project string }{
		{"alice", "pw-b", "p1"}, {"alice", "pw-a", "p2"}, {"carol", "pw-a", ""}, {"prom", "pw-m", "-"}, {"alice", "", "p1"},
	} {
		if _, err := u.SignIn("there", bad.user, bad.pw, bad.project); err != errSignIn {
			t.Errorf("sign-in %+v: %v, want %v", bad, err, errSignIn)
		}
	}
	if _, err := u.SignIn("here", "bob", "pw-b", ""); err == nil || !strings.Contains(err.Error(), "projects p1, p2: name one") {
		t.Errorf("bob without a project: %v", err)
	}
	if _, err := u.SignIn("here", "bob", "wrong", ""); err != errSignIn {
		t.Errorf("bob without a project and a wrong password: %v (his projects must not be told)", err)
	}
	bob, err := u.SignIn("here", "bob", "pw-b", "p2")
	if err != nil || !bob.Caller.Admin || bob.Caller.Project != "p2" {
		t.Fatalf("bob in p2: %+v %v", bob, err)
	}

	// A token altered anywhere, or for another user, is refused.
	p64, m64, _ := strings.Cut(strings.TrimPrefix(s.Token, issuedPrefix), ".")
	for _, bad := range []string{"", issuedPrefix, s.Token + "x", issuedPrefix + p64 + "." + flip(m64),
		issuedPrefix + flip(p64) + "." + m64, strings.TrimPrefix(s.Token, issuedPrefix)} {
		if _, ok := u.Lookup(bad); ok {
			t.Errorf("token %q accepted", bad)
		}
	}
	// Another process's key does not verify this one's tokens.
	other, err := LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := other.Lookup(s.Token); ok {
		t.Error("a token of another process accepted")
	}

	// Expiry.
	clock = clock.Add(TokenLifetime - time.Second)
	if _, ok := u.Lookup(s.Token); !ok {
		t.Error("token refused before its expiry")
	}
	clock = clock.Add(time.Second)
	if _, ok := u.Lookup(s.Token); ok {
		t.Error("token accepted at its expiry")
	}
	clock = time.Now()

	// A new password, or the line removed, ends the tokens at once.
	s, _ = u.SignIn("here", "alice", "pw-a", "p1")
	lines, err := ReadUserLines(path)
	if err != nil {
		t.Fatal(err)
	}
	if lines[0].Hash, err = HashPassword("pw-new"); err != nil {
		t.Fatal(err)
	}
	rewrite(t, path, lines[:3])
	if _, ok := u.Lookup(s.Token); ok {
		t.Error("a token outlived its user's password change")
	}
	if _, ok := u.Lookup(bob.Token); !ok {
		t.Error("bob's token ended with alice's password change")
	}
	if _, err := u.SignIn("here", "alice", "pw-new", "p1"); err != nil {
		t.Errorf("the new password: %v", err)
	}
	rewrite(t, path, lines[:2])
	if _, ok := u.Lookup(bob.Token); ok {
		t.Error("a token outlived the removal of its user's line")
	}
}

func TestUsersFileErrors(t *testing.T) {
	dir := t.TempDir()
	h, err := HashPassword("x")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ text, want string }{
		{"alice p1 member\n", "line 1: want USER PROJECT ROLE[,ROLE...] HASH, got 3 fields"},
		{"# c\nalice p1 member secret\n", "line 2: the hash is not a bcrypt hash"},
		{"alice p1 member " + h + "\nalice p1 admin " + h + "\n", "line 2: user alice of project p1 is already on an earlier line"},
		{"alice p1 member,reader " + h + "\n", `line 1: role "reader": cairn knows member, admin and metrics`},
	} {
		path := filepath.Join(dir, "users")
		if err := os.WriteFile(path, []byte(c.text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadUsers(path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.text, err, c.want)
		}
	}
	if _, err := LoadUsers(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing users file loaded")
	}
	if _, err := HashPassword(strings.Repeat("x", 73)); err == nil || !strings.Contains(err.Error(), "72 bytes") {
		t.Errorf("a 73-byte password: %v", err)
	}
}

// flip changes the first character of a base64 string (the last may carry only padding bits).
func flip(s string) string {
	if strings.HasPrefix(s, "A") {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

// Five failed sign-ins from one address within a minute refuse that address, even with the
// right password, until the minute ends; other addresses sign in meanwhile.
func TestUsersSignInThrottle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	usersFile(t, path, "alice p1 member pw-a")
	u, err := LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	u.now = func() time.Time { return clock }
	for i := range maxFailures {
		if _, err := u.SignIn("10.0.0.9", "alice", "guess", "p1"); err != errSignIn {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	if _, err := u.SignIn("10.0.0.9", "alice", "pw-a", "p1"); err != errThrottled {
		t.Fatalf("after %d failures: %v, want %v", maxFailures, err, errThrottled)
	}
	if _, err := u.SignIn("10.0.0.7", "alice", "pw-a", "p1"); err != nil {
		t.Fatalf("from another address: %v", err)
	}
	clock = clock.Add(failureWindow)
	if _, err := u.SignIn("10.0.0.9", "alice", "pw-a", "p1"); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

// FuzzLookupToken: no string, however made, is taken for an issued token unless this process
// issued it, and none panics the check.
func FuzzLookupToken(f *testing.F) {
	path := filepath.Join(f.TempDir(), "users")
	h, err := HashPassword("pw")
	if err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(UserLine{User: "alice", Project: "p1", Roles: []string{"member"}, Hash: h}.String()+"\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	u, err := LoadUsers(path)
	if err != nil {
		f.Fatal(err)
	}
	s, err := u.SignIn("here", "alice", "pw", "p1")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(s.Token)
	f.Add(issuedPrefix + ".")
	f.Add(issuedPrefix + "YWxpY2UAcDEAOTk5OTk5OTk5OQB4.AAAA")
	f.Fuzz(func(t *testing.T, token string) {
		if _, ok := u.Lookup(token); ok && token != s.Token {
			t.Fatalf("token %q accepted", token)
		}
	})
}

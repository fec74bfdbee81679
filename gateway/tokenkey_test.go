package gateway_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/gateway/api"
)

// Every gateway of a repository signs its users' tokens with the repository's token key: a
// token one issued holds on another, and on a gateway started again (a new Users with the
// same key); a gateway of another repository refuses it.
func TestGatewaysOfARepositoryShareTheTokenKey(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	other, _ := newService(t)
	if !bytes.Equal(a.TokenKey(), b.TokenKey()) || bytes.Equal(a.TokenKey(), other.TokenKey()) || len(a.TokenKey()) != 32 {
		t.Fatal("the token keys of two gateways of one repository differ, or equal another repository's")
	}
	h, err := api.HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "users")
	if err := os.WriteFile(path, []byte(api.UserLine{User: "alice", Project: "p1", Roles: []string{"member"}, Hash: h}.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	users := func(key []byte) *api.Users {
		u, err := api.LoadUsers(path)
		if err != nil {
			t.Fatal(err)
		}
		u.UseKey(key)
		return u
	}
	sess, err := users(a.TokenKey()).SignIn("here", "alice", "pw", "p1")
	if err != nil {
		t.Fatal(err)
	}
	if c, ok := users(b.TokenKey()).Lookup(sess.Token); !ok || c.User != "alice" || c.Project != "p1" {
		t.Fatalf("gateway b (or a started again) refused a token of gateway a: %+v %v", c, ok)
	}
	if _, ok := users(other.TokenKey()).Lookup(sess.Token); ok {
		t.Fatal("a gateway of another repository took the token")
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// An unknown key in a configuration file is an error naming the key and the file (exit 2),
// with the flag it probably meant; every flag of every command is a key, in snake_case or
// camelCase; the example file has only known keys.
func TestConfigFileKeys(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no developer's file
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	write := func(text string) string {
		t.Helper()
		p := filepath.Join(dir, "config.json")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, text string
		code       int
		want       []string
	}{
		{"typo", `{"repo": "` + repoDir + `", "endpiont": "http://x"}`, exitInvalid, []string{`unknown key "endpiont"`, "config.json", "did you mean endpoint?"}},
		{"nothing near", `{"repo": "` + repoDir + `", "colour": "blue"}`, exitInvalid, []string{`unknown key "colour"`, "config.json", "snake_case"}},
		{"not an object", `["repo"]`, exitInvalid, []string{"config.json", "not a JSON object"}},
		{"not JSON", `{"repo": `, exitInvalid, []string{"config.json"}},
		{"flags of other commands", `{"repo": "` + repoDir + `", "listen": "127.0.0.1:0", "job_workers": 2, "jobWorkers": 2, "lock_stale": "5m"}`, exitOK, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CAIRN_CONFIG", write(tc.text))
			var stdout, stderr bytes.Buffer
			code := run([]string{"repo", "init", "--encryption", "none", "--quiet"}, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, stderr.String())
			}
			msg := stderr.String()
			if tc.code != exitOK && (strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "cairn: config file ")) {
				t.Errorf("want one line starting with 'cairn: config file ', got %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q does not say %q", msg, w)
				}
			}
			os.RemoveAll(repoDir)
		})
	}

	example, err := loadConfigs([]string{"../../contrib/config.example.json"})
	if err != nil || len(example) != 1 {
		t.Fatalf("contrib/config.example.json: %v", err)
	}
	parser, err := kong.New(&CLI{})
	if err != nil {
		t.Fatal(err)
	}
	if err := example[0].Validate(parser.Model); err != nil {
		t.Errorf("contrib/config.example.json: %v", err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"endpiont", "endpoint", 2}, {"repo", "repo", 0}, {"rep", "repo", 1}, {"kitten", "sitting", 3}} {
		if got := editDistance(tc.a, tc.b); got != tc.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.d)
		}
	}
}

// Environment variables win over configuration files, as flags do: CAIRN_REPO from a
// systemd EnvironmentFile names the repository even where /etc/cairn/config.json names another.
func TestConfigFileEnvironmentWins(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no developer's file
	dir := t.TempDir()
	fromEnv, fromFile := filepath.Join(dir, "env-repo"), filepath.Join(dir, "file-repo")
	config := filepath.Join(dir, "config.json")
	if err := os.WriteFile(config, []byte(`{"repo": "`+fromFile+`", "lock_stale": "5m"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CAIRN_CONFIG", config)
	t.Setenv("CAIRN_REPO", fromEnv)
	var stdout, stderr bytes.Buffer
	if code := run([]string{"repo", "init", "--encryption", "none", "--quiet"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("repo init: exit %d: %s", code, stderr.String())
	}
	if _, err := os.Stat(fromFile); !os.IsNotExist(err) {
		t.Errorf("repo init made the config file's repository %s, not CAIRN_REPO's (%v)", fromFile, err)
	}
	if _, err := os.Stat(filepath.Join(fromEnv, "config")); err != nil {
		t.Errorf("no repository at CAIRN_REPO %s: %v", fromEnv, err)
	}
	stderr.Reset()
	if code := run([]string{"backup", "list", "--quiet"}, &stdout, &stderr); code != exitOK {
		t.Errorf("backup list: exit %d: %s", code, stderr.String())
	}
	// A flag still wins over both.
	stderr.Reset()
	if code := run([]string{"--repo", fromFile, "backup", "list"}, &stdout, &stderr); code != exitNotFound {
		t.Errorf("backup list --repo %s: exit %d, want %d: %s", fromFile, code, exitNotFound, stderr.String())
	}
}

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

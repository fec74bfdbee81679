package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// The committed completion scripts must be what the CLI generates: regenerate them with
// 'bin/cairn completion bash > contrib/completion/cairn.bash' (and zsh > _cairn).
func TestCompletionScriptsCurrent(t *testing.T) {
	for shell, file := range map[string]string{"bash": "../../contrib/completion/cairn.bash", "zsh": "../../contrib/completion/_cairn"} {
		var out, errb bytes.Buffer
		if code := runCLI(t.Context(), []string{"completion", shell}, &out, &errb, nil, nil); code != 0 {
			t.Fatalf("completion %s: exit %d: %s", shell, code, errb.String())
		}
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("%s is stale: regenerate it with 'bin/cairn completion %s > %s'", file, shell, file[6:])
		}
	}
}

// The generated script asks 'cairn __complete' for the arguments and flags that name a
// volume or a backup, passing on the flags that say which repository.
func TestCompletionScriptCallsComplete(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runCLI(t.Context(), []string{"completion", "bash"}, &out, &errb, nil, nil); code != 0 {
		t.Fatalf("completion bash: exit %d: %s", code, errb.String())
	}
	script := out.String()
	for _, want := range []string{`__complete "$kind"`, `"backup show") kind=backups ;;`, `"backup create") kind=volumes ;;`,
		`--volume) kind=volumes ;;`, `"${opts[@]}"`, `--repo|--state-dir|--socket|--project|--password-file)`} {
		if !strings.Contains(script, want) {
			t.Errorf("the bash script lacks %q", want)
		}
	}
	if strings.Contains(script, " __complete)") || strings.Contains(script, `"__complete"`) {
		t.Error("the hidden __complete command is offered as a completion")
	}
}

// __complete lists the project's volumes and backups by id and name, one a line.
func TestCompleteCommand(t *testing.T) {
	repoDir := t.TempDir()
	if _, errOut, code := cli(t, repoDir, "repo", "init", "--encryption", "none"); code != 0 {
		t.Fatal(errOut)
	}
	vol := t.TempDir() + "/disk.img"
	if err := os.WriteFile(vol, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := cli(t, repoDir, "--quiet", "backup", "create", vol, "--name", "first"); code != 0 {
		t.Fatal(errOut)
	}
	vols, _, code := cli(t, repoDir, "__complete", "volumes")
	if code != 0 || !strings.Contains(vols, "disk.img\n") || len(strings.Fields(vols)) != 2 {
		t.Errorf("__complete volumes: exit %d, %q; want the volume's id and name", code, vols)
	}
	bs, _, code := cli(t, repoDir, "__complete", "backups")
	if code != 0 || !strings.Contains(bs, "first\n") || len(strings.Fields(bs)) != 2 {
		t.Errorf("__complete backups: exit %d, %q; want the backup's id and name", code, bs)
	}
	if _, _, code := cli(t, repoDir, "__complete", "snapshots"); code != exitInvalid {
		t.Errorf("__complete snapshots: exit %d, want %d", code, exitInvalid)
	}
}

package main

import (
	"bytes"
	"os"
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

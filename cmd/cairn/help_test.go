package main

import (
	"bytes"
	"strings"
	"testing"
)

// A subcommand's --help shows its own flags first, then the global and the S3 flags under
// their own headings; enumerated flags list their choices.
func TestHelpGolden(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runCLI(t.Context(), []string{"backup", "create", "--help"}, &out, &errb, nil, nil); code != 0 {
		t.Fatalf("backup create --help: exit %d: %s", code, errb.String())
	}
	help := out.String()
	own, global, s3 := strings.Index(help, "--incremental"), strings.Index(help, "Global flags:"), strings.Index(help, "S3 flags")
	if own < 0 || global < 0 || s3 < 0 || !(own < global && global < s3) {
		t.Errorf("want the command's flags, then Global flags:, then S3 flags:\n%s", help)
	}
	if g := help[global:s3]; strings.Contains(g, "--endpoint") || !strings.Contains(g, "--repo") {
		t.Errorf("the global section holds S3 flags or lacks --repo:\n%s", g)
	}
	if !strings.Contains(help, "table,json") || !strings.Contains(help, "auto,path,virtual-host") {
		t.Errorf("enumerated flags do not list their choices:\n%s", help)
	}
	golden(t, "help-backup-create", help)

	out.Reset()
	if code := runCLI(t.Context(), []string{"backup", "list", "--help"}, &out, &errb, nil, nil); code != 0 {
		t.Fatalf("backup list --help: exit %d", code)
	}
	if !strings.Contains(out.String(), "any,creating,available,deleting,restoring,error") {
		t.Errorf("backup list --status does not list the statuses:\n%s", out.String())
	}
}

package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
)

// 'policy update' changes only the keep rules it is given: the others, and the time zone of
// the buckets, stay as they were. Rebuilt from the flags given alone, '--keep-last 2' on a
// policy keeping 30 dailies dropped them (its next run pruned all but two backups) and moved
// the buckets to the server's zone.
func TestPolicyUpdateKeepsTheRulesNotGiven(t *testing.T) {
	_, vol, must := cliRepo(t)
	must("--quiet", "policy", "create", "nightly", "--volume", vol, "--schedule", "daily",
		"--keep-daily", "30", "--keep-weekly", "8", "--timezone", "Europe/Berlin")
	must("--quiet", "policy", "update", "nightly", "--keep-last", "2")
	var st gateway.PolicyStatus
	if err := json.Unmarshal([]byte(must("--format", "json", "policy", "show", "nightly")), &st); err != nil {
		t.Fatal(err)
	}
	want := gateway.KeepRules{Last: 2, Daily: 30, Weekly: 8, Timezone: "Europe/Berlin"}
	if st.Keep != want {
		t.Fatalf("keep rules after 'policy update --keep-last 2': %+v, want %+v", st.Keep, want)
	}
}

// A policy create that names no volumes says which flag names them all: the error sent the
// user to --project, which picks the project and still names no volume.
func TestPolicyCreateWithoutVolumesNamesTheFlag(t *testing.T) {
	repoDir, _, _ := cliRepo(t)
	_, errOut, code := cli(t, repoDir, "policy", "create", "nightly", "--schedule", "daily", "--keep-last", "7")
	if code != exitInvalid || !strings.Contains(errOut, "--all-volumes") || strings.Contains(errOut, "--project") {
		t.Fatalf("policy create without volumes: exit %d: %q, want %d and the advice to give --volume or --all-volumes", code, errOut, exitInvalid)
	}
}

// A 'policy update' refused for a bad keep rule changes nothing. The rule was checked inside
// the update, after the flags before it had been applied: the command exited "invalid" and the
// policy was stored pruning every volume of the project (--all-volumes --prune-only).
func TestPolicyUpdateWithABadRuleChangesNothing(t *testing.T) {
	repoDir, vol, must := cliRepo(t)
	must("--quiet", "policy", "create", "nightly", "--volume", vol, "--schedule", "daily", "--keep-daily", "30")
	_, errOut, code := cli(t, repoDir, "policy", "update", "nightly", "--all-volumes", "--prune-only", "--keep-within", "30days")
	if code != exitInvalid {
		t.Fatalf("policy update with --keep-within 30days: exit %d: %q, want %d", code, errOut, exitInvalid)
	}
	var st gateway.PolicyStatus
	if err := json.Unmarshal([]byte(must("--format", "json", "policy", "show", "nightly")), &st); err != nil {
		t.Fatal(err)
	}
	if st.PruneOnly || st.AllOfProject || st.Keep.Daily != 30 || st.Keep.Last != 0 {
		t.Fatalf("policy after a refused update: prune only %v, all volumes %v, keep %+v; want it as it was", st.PruneOnly, st.AllOfProject, st.Keep)
	}
}

package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// metricName finds metric names in a PromQL query: cairn's own series (and their histogram
// and summary suffixes).
var metricName = regexp.MustCompile(`\bcairn_[a-z0-9_]+\b`)

// dashboardQueries returns every query of every panel of a Grafana dashboard, nested rows
// included.
func dashboardQueries(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string           `json:"title"`
		UID    string           `json:"uid"`
		Panels []map[string]any `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s is not JSON: %v", path, err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("%s: no title, uid or panels", path)
	}
	var queries []string
	ids := map[float64]bool{}
	var walk func(panels []map[string]any)
	walk = func(panels []map[string]any) {
		for _, p := range panels {
			id, _ := p["id"].(float64)
			if ids[id] {
				t.Errorf("%s: panel id %v is used twice", path, id)
			}
			ids[id] = true
			if _, ok := p["gridPos"].(map[string]any); !ok {
				t.Errorf("%s: panel %q has no gridPos", path, p["title"])
			}
			targets, _ := p["targets"].([]any)
			if p["type"] != "row" && len(targets) == 0 {
				t.Errorf("%s: panel %q has no query", path, p["title"])
			}
			for _, tg := range targets {
				if e, _ := tg.(map[string]any)["expr"].(string); e != "" {
					queries = append(queries, e)
				}
			}
			if sub, ok := p["panels"].([]any); ok {
				var inner []map[string]any
				for _, s := range sub {
					inner = append(inner, s.(map[string]any))
				}
				walk(inner)
			}
		}
	}
	walk(dash.Panels)
	return queries
}

// TestGrafanaDashboardMetricsExist: every metric the dashboard queries, and every one the
// alerting rules name, is in the /metrics of a real gateway that has backed up, restored,
// run a policy, gc and a check, so the dashboard, the alerts and the exported names cannot
// drift apart.
func TestGrafanaDashboardMetricsExist(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	queries := dashboardQueries(t, filepath.Join(root, "contrib", "grafana", "cairn.json"))
	used := map[string]bool{}
	for _, q := range queries {
		for _, m := range metricName.FindAllString(q, -1) {
			used[m] = true
		}
	}
	if len(used) < 10 {
		t.Fatalf("the dashboard queries only %d cairn metrics: %v", len(used), used)
	}
	rules, err := os.ReadFile(filepath.Join(root, "contrib", "grafana", "cairn-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	alerted := metricName.FindAllString(string(rules), -1)
	if len(alerted) < 10 {
		t.Fatalf("the alerting rules name only %d cairn metrics: %v", len(alerted), alerted)
	}
	for _, m := range alerted {
		used[m] = true
	}

	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	img := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, img, 8<<20, 7, testutil.Mixed)
	r.mustRun("volume", "manage", img, "--name", "vm")
	// The bandwidth limits' series exist only for limits that are set: these are far above
	// what this test moves.
	base := startConsole(t, r, "--limit-upload", "4G", "--limit-download", "4G", "--limit-read", "4G")
	r.mustRun("policy", "create", "nightly", "--volume", "vm", "--schedule", "*-*-* 02:00", "--keep-last", "3")
	var b backupJSON
	r.mustJSON(&b, "backup", "create", "vm", "--wait")
	out := filepath.Join(dir, "out.img")
	r.mustRun("--quiet", "backup", "restore", b.ID, "--to", out, "--wait")
	if got, want := testutil.SHA256File(t, out), testutil.SHA256File(t, img); got != want {
		t.Fatalf("restore: sha256 %s, want %s", got, want)
	}
	r.mustRun("policy", "run", "nightly")
	r.mustRun("repo", "gc")
	r.mustRun("repo", "check")

	var exported map[string]bool
	waitFor(t, 90*time.Second, "every dashboard metric in /metrics", func() bool {
		req, err := http.NewRequest("GET", base+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+consoleScraper) // as prometheus.yml's scrape sends it
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			t.Fatalf("/metrics with the scraper's token: %s", resp.Status)
		}
		text, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		exported = map[string]bool{}
		for _, line := range strings.Split(string(text), "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			name := line[:strings.IndexAny(line, "{ ")]
			exported[name] = true
		}
		for m := range used {
			if !exported[m] {
				return false
			}
		}
		return true
	})
	var names []string
	for m := range used {
		names = append(names, m)
	}
	sort.Strings(names)
	t.Logf("the dashboard's and the alerts' %d metrics are all exported: %s", len(names), strings.Join(names, " "))
}

// TestAlertRules runs promtool over contrib's alerting rules: they load, and their unit tests
// (two gateways on one repository: a policy's failed run that a later run elsewhere
// supersedes, a check that found problems, overdue volumes, failed jobs, a gateway down)
// fire what they expect and nothing else.
func TestAlertRules(t *testing.T) {
	promtool := testutil.RequireCommand(t, "promtool")
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "contrib", "grafana")
	// The scrape config, with its token file where the test can make one, loads the rules.
	conf, err := os.ReadFile(filepath.Join(dir, "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	token := filepath.Join(tmp, "cairn-token")
	if err := os.WriteFile(token, []byte(consoleScraper+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), "/etc/prometheus/cairn-token") {
		t.Fatal("prometheus.yml no longer reads the token from /etc/prometheus/cairn-token: change this test with it")
	}
	conf = []byte(strings.ReplaceAll(string(conf), "/etc/prometheus/cairn-token", token))
	if err := os.WriteFile(filepath.Join(tmp, "prometheus.yml"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile(filepath.Join(dir, "cairn-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "cairn-alerts.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, run := range []struct {
		dir  string
		args []string
	}{
		{tmp, []string{"check", "config", "prometheus.yml"}},
		{dir, []string{"check", "rules", "cairn-alerts.yml"}},
		{dir, []string{"test", "rules", "cairn-alerts.test.yml", "cairn-alerts-days.test.yml"}},
	} {
		cmd := exec.Command(promtool, run.args...)
		cmd.Dir = run.dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(run.args, " "), err, out)
		}
		if want := fmt.Sprintf("%d rules found", strings.Count(string(rules), "- alert: ")); run.args[0] == "check" && run.args[1] == "config" && !strings.Contains(string(out), want) {
			t.Fatalf("promtool check config did not load every rule of cairn-alerts.yml (want %q):\n%s", want, out)
		}
	}
}

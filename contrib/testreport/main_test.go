package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReportOfARealRun feeds the report a real `go test -json` run of a package with a
// passing test, a failing subtest and a test stopped by the timeout.
func TestReportOfARealRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a test binary")
	}
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/sample\n\ngo 1.22\n")
	write("sample_test.go", `package sample

import (
	"testing"
	"time"
)

func TestQuiet(t *testing.T) { t.Log("output of a passing test") }

func TestBroken(t *testing.T) {
	t.Run("fine", func(t *testing.T) {})
	t.Run("wrong", func(t *testing.T) { t.Error("the reason it failed") })
}

func TestStuck(t *testing.T) {
	t.Log("before it stuck")
	time.Sleep(time.Hour)
}
`)
	cmd := exec.Command("go", "test", "-json", "-timeout", "3s", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	stream, _ := cmd.Output() // it fails, as it must
	var out bytes.Buffer
	failed, err := report(bytes.NewReader(stream), &out, 5)
	if err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if !failed {
		t.Errorf("a run with a failed test is reported as passed:\n%s", text)
	}
	for _, want := range []string{
		"the reason it failed", "--- FAIL: TestBroken/wrong",
		"TestStuck in example.com/sample never ended", "before it stuck", "panic: test timed out",
		"== the 2 slowest tests", "FAIL\texample.com/sample",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the report lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "output of a passing test") {
		t.Errorf("the report prints a passing test's output:\n%s", text)
	}

	// The same package, passing: the report passes it.
	write("sample_test.go", "package sample\n\nimport \"testing\"\n\nfunc TestQuiet(t *testing.T) { t.Log(\"quiet\") }\n")
	cmd = exec.Command("go", "test", "-json", "./...")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	stream, err = cmd.Output()
	if err != nil {
		t.Fatalf("go test of a passing package: %v\n%s", err, stream)
	}
	out.Reset()
	if failed, err := report(bytes.NewReader(stream), &out, 5); err != nil || failed {
		t.Errorf("a passing run is reported as failed (%v):\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "ok  \texample.com/sample") {
		t.Errorf("the report lacks the package's ok line:\n%s", out.String())
	}
}

// A race report go test -json gave to a test that passed (the detector writes it past the
// testing package) is printed when its package fails, and only then.
func TestReportKeepsARaceReportOfAPassedTest(t *testing.T) {
	stream := func(pkgAction string) string {
		return strings.Join([]string{
			`{"Action":"run","Package":"p","Test":"TestA"}`,
			`{"Action":"output","Package":"p","Test":"TestA","Output":"==================\n"}`,
			`{"Action":"output","Package":"p","Test":"TestA","Output":"WARNING: DATA RACE\n"}`,
			`{"Action":"output","Package":"p","Test":"TestA","Output":"Write at 0x00c000 by goroutine 8:\n"}`,
			`{"Action":"pass","Package":"p","Test":"TestA","Elapsed":0.1}`,
			`{"Action":"run","Package":"p","Test":"TestB"}`,
			`{"Action":"output","Package":"p","Test":"TestB","Output":"    testing.go:1617: race detected during execution of test\n"}`,
			`{"Action":"` + pkgAction + `","Package":"p","Test":"TestB","Elapsed":0.1}`,
			`{"Action":"` + pkgAction + `","Package":"p","Elapsed":0.3}`,
		}, "\n") + "\n"
	}
	var out bytes.Buffer
	failed, err := report(strings.NewReader(stream("fail")), &out, 5)
	if err != nil || !failed {
		t.Fatalf("a failed package: failed %v, err %v", failed, err)
	}
	for _, want := range []string{"TestA passed, but its output holds a race report", "Write at 0x00c000 by goroutine 8", "race detected during execution of test"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if failed, err := report(strings.NewReader(stream("pass")), &out, 5); err != nil || failed {
		t.Fatalf("a passed package: failed %v, err %v", failed, err)
	}
	if strings.Contains(out.String(), "DATA RACE") {
		t.Errorf("a passed package's race report is printed:\n%s", out.String())
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"testing"
)

// TestStartProfileWritesEachRecording runs the CPU profile and the execution trace the way
// main does, and checks each file holds a recording of its kind.
func TestStartProfileWritesEachRecording(t *testing.T) {
	dir := t.TempDir()
	cpu, tr := filepath.Join(dir, "cpu.prof"), filepath.Join(dir, "trace.out")
	t.Setenv("CAIRN_CPUPROFILE", cpu)
	t.Setenv("CAIRN_TRACE", tr)
	stopProfile := startProfile("CAIRN_CPUPROFILE", pprof.StartCPUProfile, pprof.StopCPUProfile)
	stopTrace := startProfile("CAIRN_TRACE", trace.Start, trace.Stop)
	var out bytes.Buffer
	if code := runCLI(t.Context(), []string{"--help"}, &out, &out, nil, nil); code != 0 {
		t.Fatalf("cairn --help exited %d: %s", code, out.String())
	}
	stopTrace()
	stopProfile()
	b, err := os.ReadFile(tr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("go 1.")) {
		t.Errorf("CAIRN_TRACE file starts %q, want an execution trace header (go 1.N trace)", b[:min(len(b), 16)])
	}
	b, err = os.ReadFile(cpu)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("CAIRN_CPUPROFILE file is %d bytes without a gzip header: not a pprof profile", len(b))
	}
}

// TestStartProfileCannotStart: a path that cannot be created is reported on stderr and the
// command runs without the recording.
func TestStartProfileCannotStart(t *testing.T) {
	t.Setenv("CAIRN_TRACE", filepath.Join(t.TempDir(), "missing", "trace.out"))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	stop := startProfile("CAIRN_TRACE", trace.Start, trace.Stop)
	os.Stderr = stderr
	w.Close()
	stop()
	var msg bytes.Buffer
	msg.ReadFrom(r)
	if got := msg.String(); !strings.HasPrefix(got, "cairn: CAIRN_TRACE: ") || !strings.Contains(got, "running without it") {
		t.Errorf("stderr = %q, want one line naming CAIRN_TRACE and saying the command runs without it", got)
	}
	if trace.IsEnabled() {
		t.Error("a trace runs after it could not start")
	}
}

package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// packCounter is an HTTP proxy in front of the S3 server that counts the packs stored through
// it, so a test can tell when one gateway among several has stored a pack.
type packCounter struct {
	Endpoint string
	stored   atomic.Int64
}

// startPackCounter starts a proxy in front of target ("http://host:port") and stops it when
// the test ends. Like testutil.FaultProxy it keeps the Host header, so signatures stay valid.
func startPackCounter(t *testing.T, target string) *packCounter {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &packCounter{Endpoint: "http://" + l.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/packs/") && resp.StatusCode == http.StatusOK {
			p.stored.Add(1)
		}
		return nil
	}
	rp.ErrorLog = log.New(io.Discard, "", 0) // a killed gateway's requests end mid-way
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return p
}

// tryCairn runs the binary and returns its stdout, or an error with its stderr when it does
// not exit 0. Unlike runCairn it never touches t, so goroutines of a test may use it.
func tryCairn(env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cairnCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cairnBin, args...)
	cmd.Env = cairnEnv(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("cairn %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// gcLoopResult is how many gc runs a gcLoop made, and the error that stopped it early.
type gcLoopResult struct {
	runs int
	err  error
}

// gcLoop runs 'repo gc' through r's gateway until stop is closed, at most max times and for
// at most limit, with a pause between runs so backups elsewhere can take their locks. It
// reports on the returned channel when it ends.
func gcLoop(r *cairnRepo, stop <-chan struct{}, max int, limit time.Duration) <-chan gcLoopResult {
	out := make(chan gcLoopResult, 1)
	go func() {
		var res gcLoopResult
		defer func() { out <- res }()
		deadline := time.Now().Add(limit)
		for res.runs < max && time.Now().Before(deadline) {
			if _, res.err = tryCairn(r.Env, "--quiet", "repo", "gc"); res.err != nil {
				return
			}
			res.runs++
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	return out
}

// submit starts a backup through r's gateway (it returns at once) and returns its id.
func (r *cairnRepo) submit(args ...string) string {
	r.t.Helper()
	var b backupJSON
	r.mustJSON(&b, append([]string{"--quiet", "backup", "create"}, args...)...)
	if b.ID == "" || b.Status != "creating" {
		r.t.Fatalf("backup create %v through a gateway: %+v, want an accepted (creating) backup", args, b)
	}
	return b.ID
}

// waitAvailable waits until backup id, run by r's gateway, is available; error fails the test.
func (r *cairnRepo) waitAvailable(id string, timeout time.Duration) {
	r.t.Helper()
	waitFor(r.t.(*testing.T), timeout, "backup "+id+" to finish", func() bool {
		b := r.showBackup(id)
		if b.Status == "error" {
			r.t.Fatalf("backup %s ended in error: %s", id, b.FailReason)
		}
		return b.Status == "available"
	})
}

// gwPoint is a backup taken through one of the gateways and the sha256 of its volume then.
type gwPoint struct {
	id, sha string
	via     int
	parent  string // an incremental's parent
}

// TestThreeGatewaysOneBucket: three hosts, each with its own state dir and 'cairn serve', share
// one bucket. Each backs up its own volumes (full, then incremental after scattered writes)
// while gateway 3 runs gc in a loop and gateway 2 is killed with SIGKILL in the middle of a
// backup and restarted. Then every gateway lists every available backup, each restores
// byte-exact through another gateway, check --read-data is clean, the killed backup is error,
// and a full backup of an identical volume through another gateway stores no new pack.
func TestThreeGatewaysOneBucket(t *testing.T) {
	t.Parallel() // long waits on timers and child processes: overlaps the other such tests
	srv := testutil.StartS3(t)
	dir := t.TempDir()
	const prefix = "three"
	g1 := newS3Repo(t, srv, prefix, nil)
	counter := startPackCounter(t, srv.Endpoint)
	g2 := g1.elsewhere("AWS_ENDPOINT_URL=" + counter.Endpoint)
	g3 := g1.elsewhere()
	gws := []*cairnRepo{g1, g2, g3}
	var procs []*gatewayProc
	for _, g := range gws {
		procs = append(procs, startGateway(t, g))
	}

	type volume struct {
		name string
		size int64
		via  int
	}
	vols := []volume{{"a", 16 * mib, 0}, {"b", 24 * mib, 0}, {"c", 32 * mib, 1}, {"d", 16 * mib, 2}, {"e", 32 * mib, 0}}
	path := func(name string) string { return filepath.Join(dir, name+".img") }
	for i, v := range vols {
		testutil.WriteImage(t, path(v.name), v.size, int64(200+i), testutil.Mixed)
	}
	var points []gwPoint
	// take backs v up through its gateway: in full, or as an incremental of parent.
	take := func(v volume, parent *gwPoint) gwPoint {
		p := gwPoint{sha: testutil.SHA256File(t, path(v.name)), via: v.via}
		args := []string{path(v.name)}
		if parent != nil {
			p.parent, args = parent.id, append(args, "--incremental")
		}
		p.id = gws[v.via].submit(args...)
		points = append(points, p)
		return p
	}

	stop := make(chan struct{})
	gcDone := gcLoop(g3, stop, 40, 60*time.Second)
	start := time.Now()

	// Fulls of a, b, c, d on their gateways at once, while gc runs.
	var fulls []gwPoint
	for _, v := range vols[:4] {
		fulls = append(fulls, take(v, nil))
	}
	for _, p := range fulls {
		gws[p.via].waitAvailable(p.id, 60*time.Second)
	}
	// Volume a is renamed through gateway 1; the others take the rename at a full catch-up
	// (each minute), checked at the end.
	g1.mustRun("rename", path("a"), "web-a", "--description", "renamed through gateway 1")

	// Incrementals of a, b, d and a full of e, while gateway 2 backs up a large volume and is
	// killed once that backup has stored a pack.
	for i, v := range []volume{vols[0], vols[1], vols[3]} {
		testutil.ScatterWrites(t, path(v.name), int64(210+i), 0.01, 4<<10, 64<<10)
	}
	running := []gwPoint{take(vols[0], &fulls[0]), take(vols[1], &fulls[1]), take(vols[3], &fulls[3]), take(vols[4], nil)}
	big := filepath.Join(dir, "big.img")
	testutil.WriteImage(t, big, 48*mib, 220, testutil.Random)
	before := counter.stored.Load()
	killed := g2.submit(big)
	waitFor(t, 60*time.Second, "gateway 2's backup to store a pack", func() bool { return counter.stored.Load() > before })
	if err := syscall.Kill(procs[1].pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = procs[1].wait()
	startGateway(t, g2)
	if b := g2.showBackup(killed); b.Status != "error" || !strings.Contains(b.FailReason, "interrupted") {
		t.Fatalf("the backup gateway 2 was killed in: %s (%s) after its restart, want error/interrupted", b.Status, b.FailReason)
	}

	// Gateway 2, restarted, takes its incremental; then everything running must finish.
	testutil.ScatterWrites(t, path("c"), 230, 0.01, 4<<10, 64<<10)
	running = append(running, take(vols[2], &fulls[2]))
	for _, p := range running {
		gws[p.via].waitAvailable(p.id, 90*time.Second)
	}
	for _, p := range running {
		if b := gws[p.via].showBackup(p.id); p.parent != "" && (!b.IsIncremental || b.ParentID != p.parent) {
			t.Errorf("backup %s: incremental=%v parent %q, want an incremental of %s", p.id, b.IsIncremental, b.ParentID, p.parent)
		}
	}
	close(stop)
	gc := <-gcDone
	if gc.err != nil {
		t.Fatalf("gc on gateway 3 (run %d): %v", gc.runs+1, gc.err)
	}
	t.Logf("backups done %v after start; gateway 3 ran gc %d times meanwhile", time.Since(start).Round(time.Millisecond), gc.runs)

	// Every gateway lists every available backup (they sync every 10 s), and no other.
	want := map[string]gwPoint{}
	for _, p := range points {
		want[p.id] = p
	}
	for i, g := range gws {
		waitFor(t, 30*time.Second, fmt.Sprintf("gateway %d to list every backup", i+1), func() bool {
			listed := 0
			for _, b := range g.listBackups() {
				if b.Status != "available" {
					continue
				}
				if _, ok := want[b.ID]; !ok {
					t.Fatalf("gateway %d lists backup %s as available; it is none of the backups taken (the killed one is %s)", i+1, b.ID, killed)
				}
				listed++
			}
			return listed == len(want)
		})
	}

	// Each restores byte-exact through the next gateway.
	for _, p := range points {
		gws[(p.via+1)%len(gws)].restoreMatches(p.id, p.sha, dir)
	}
	g1.checkClean()
	for i, g := range gws[1:] {
		waitFor(t, 75*time.Second, fmt.Sprintf("gateway %d to take the rename of volume a", i+2), func() bool {
			var v struct{ ID, Path, Description string }
			if r := g.run("--format", "json", "volume", "show", "web-a"); r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &v) != nil {
				return false
			}
			if v.Path != path("a") || v.Description != "renamed through gateway 1" {
				t.Fatalf("gateway %d's volume web-a: %+v, want volume a with the rename's description", i+2, v)
			}
			return true
		})
	}

	// A volume identical to b (as of its incremental), backed up in full through gateway 3,
	// stores nothing new.
	data, err := os.ReadFile(path("b"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path("b-copy"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	packs := packFilesOnServer(srv, prefix)
	again := g3.createBackup(path("b-copy"), "--wait")
	if n := packFilesOnServer(srv, prefix); n != packs || again.Stats.NewBytes != 0 {
		t.Errorf("full of a copy of b through gateway 3: %d packs (was %d), %d new bytes; want no new pack", n, packs, again.Stats.NewBytes)
	}
	g3.restoreMatches(again.ID, testutil.SHA256File(t, path("b")), dir)
	t.Logf("whole scenario %v", time.Since(start).Round(time.Millisecond))
}

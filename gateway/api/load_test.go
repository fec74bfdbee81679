package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/api"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
)

// One gateway under load: 200 backup requests at once through the API, of which the project's
// quota (120 backups) admits only some, while 1,000 list calls run. Every accepted request
// must end as exactly one backup record (available, or error with a reason), every refused
// one as none; the quota is never overshot, not even for an instant a list call can see. The
// list calls' latency (p50, p99) and the jobs' throughput are logged (docs/benchmarks.md).
func TestLoadOneGateway(t *testing.T) {
	const (
		requests  = 200
		limit     = 120
		lists     = 1000
		volSize   = 32 << 10 // 200 volumes of 32 KiB: 6.25 MiB in all
		listConns = 4
	)
	dir := t.TempDir()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo"), DefaultQuota: &gateway.Quota{Backups: limit, BackupGigabytes: 1000}}
	ctx := context.Background()
	if _, err := gateway.Init(ctx, cfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := gateway.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	svc.StartWorkers(4)
	t.Cleanup(func() { _ = svc.StopWorkers(context.Background()) })
	srv := httptest.NewServer(api.New(svc, api.Options{Auth: api.AuthNoAuth, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(srv.Close)
	admin := gateway.WithCaller(ctx, gateway.Caller{User: "admin", Project: "admin", Admin: true})
	var vols []*index.Volume
	for i := range requests {
		path := filepath.Join(dir, fmt.Sprintf("vol%03d.img", i))
		data := []byte(strings.Repeat(fmt.Sprintf("volume %03d block ", i), volSize/16+1)[:volSize])
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		v, err := svc.ManageVolume(admin, gateway.ManageRequest{Path: path, Name: fmt.Sprintf("vol%03d", i)})
		if err != nil {
			t.Fatal(err)
		}
		vols = append(vols, v)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	do := func(method, path, body string) (int, []byte, error) {
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("X-User-Id", "admin")
		req.Header.Set("X-Project-Id", "admin")
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	type listed struct {
		Backups []struct{ ID, Status string }
	}

	start := time.Now()
	var mu sync.Mutex
	var accepted []string
	refused := 0
	var wg sync.WaitGroup
	for i, v := range vols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, err := do("POST", "/v3/admin/backups", fmt.Sprintf(`{"backup": {"volume_id": %q, "name": "load-%03d"}}`, v.ID, i))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				t.Error(err)
			case code == http.StatusAccepted:
				var c struct{ Backup struct{ ID string } }
				if err := json.Unmarshal(body, &c); err != nil || c.Backup.ID == "" {
					t.Errorf("create: %s", body)
				}
				accepted = append(accepted, c.Backup.ID)
			case code == http.StatusRequestEntityTooLarge:
				refused++
			default:
				t.Errorf("create: %d %s", code, body)
			}
		}()
	}
	var lat []time.Duration
	var seenMax int
	var lwg sync.WaitGroup
	for range listConns {
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			for range lists / listConns {
				t0 := time.Now()
				code, body, err := do("GET", "/v3/admin/backups/detail", "")
				d := time.Since(t0)
				if err != nil || code != http.StatusOK {
					t.Errorf("list: %d %v %s", code, err, body)
					return
				}
				var l listed
				if err := json.Unmarshal(body, &l); err != nil {
					t.Errorf("list: %v", err)
					return
				}
				ids := map[string]bool{}
				for _, b := range l.Backups {
					if ids[b.ID] {
						t.Errorf("list: backup %s twice", b.ID)
					}
					ids[b.ID] = true
				}
				mu.Lock()
				lat = append(lat, d)
				seenMax = max(seenMax, len(l.Backups))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if len(accepted) != limit || refused != requests-limit {
		t.Fatalf("%d accepted, %d refused; want %d and %d", len(accepted), refused, limit, requests-limit)
	}
	// Wait for every accepted job to end.
	deadline := time.Now().Add(2 * time.Minute)
	var all []*index.Backup
	for {
		if all, err = svc.Index().Backups(); err != nil {
			t.Fatal(err)
		}
		running := 0
		for _, b := range all {
			if b.Status == index.BackupCreating {
				running++
			}
		}
		if running == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d backups still creating after 2 minutes", running)
		}
		time.Sleep(20 * time.Millisecond)
	}
	jobs := time.Since(start)
	lwg.Wait()
	if len(lat) != lists {
		t.Fatalf("%d list calls answered, want %d", len(lat), lists)
	}
	byID := map[string]*index.Backup{}
	for _, b := range all {
		if byID[b.ID] != nil {
			t.Fatalf("backup %s recorded twice", b.ID)
		}
		byID[b.ID] = b
	}
	if len(all) != limit || seenMax > limit {
		t.Fatalf("%d backup records (a list call saw %d); the quota is %d", len(all), seenMax, limit)
	}
	failed := 0
	for _, id := range accepted {
		b := byID[id]
		switch {
		case b == nil:
			t.Errorf("accepted backup %s has no record", id)
		case b.Status == index.BackupError && b.FailReason != "":
			failed++
		case b.Status != index.BackupAvailable:
			t.Errorf("backup %s ended %s (%q)", id, b.Status, b.FailReason)
		}
	}
	u, err := svc.QuotaUsage(admin, "admin")
	if err != nil || u.Backups.InUse != limit || u.Backups.Reserved != 0 {
		t.Fatalf("quota usage after the jobs: %+v %v", u, err)
	}
	slices.Sort(lat)
	t.Logf("%d requests: %d accepted, %d refused by quota, %d ended in error; jobs done in %v (%.1f backups/s, %.2f MiB/s); %d list calls: p50 %v p99 %v max %v",
		requests, len(accepted), refused, failed, jobs.Round(time.Millisecond), float64(limit)/jobs.Seconds(),
		float64(limit*volSize)/(1<<20)/jobs.Seconds(), lists, lat[len(lat)/2].Round(time.Microsecond),
		lat[len(lat)*99/100].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
}

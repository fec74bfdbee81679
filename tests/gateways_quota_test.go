package tests

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// Three 'cairn serve' with their own state dirs on one bucket and a default quota of 12
// backups: 30 backup requests at once, spread over them, while list calls run on each. Together
// they admit at most 12 (reservation objects in the bucket), every admitted one ends available
// and is listed once by every gateway, and no list ever shows a backup twice or more than 12.
func TestQuotaThreeGatewaysOneBucket(t *testing.T) {
	t.Parallel() // long waits on timers and child processes: overlaps the other such tests
	const limit, requests = 12, 30
	srv := testutil.StartS3(t)
	dir := t.TempDir()
	g1 := newS3Repo(t, srv, "quota3", nil)
	gws := []*cairnRepo{g1, g1.elsewhere(), g1.elsewhere()}
	for _, g := range gws {
		startGateway(t, g, "--default-quota-backups", fmt.Sprint(limit))
	}
	paths := make([]string, requests)
	for i := range paths {
		paths[i] = filepath.Join(dir, fmt.Sprintf("v%02d.img", i))
		testutil.WriteImage(t, paths[i], mib, int64(300+i), testutil.Mixed)
	}

	var (
		mu       sync.Mutex
		admitted []string
		refused  int
		failures []string
		wg       sync.WaitGroup
	)
	stop := make(chan struct{})
	listErrs := make(chan error, len(gws))
	var lists sync.WaitGroup
	for i, g := range gws {
		lists.Add(1)
		go func() {
			defer lists.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				out, err := tryCairn(g.Env, "-f", "json", "backup", "list")
				if err != nil {
					listErrs <- fmt.Errorf("gateway %d: %v", i+1, err)
					return
				}
				var bs []backupJSON
				if err := json.Unmarshal([]byte(out), &bs); err != nil {
					listErrs <- fmt.Errorf("gateway %d: %v", i+1, err)
					return
				}
				seen := map[string]bool{}
				for _, b := range bs {
					if seen[b.ID] {
						listErrs <- fmt.Errorf("gateway %d lists backup %s twice", i+1, b.ID)
						return
					}
					seen[b.ID] = true
				}
				if len(bs) > limit {
					listErrs <- fmt.Errorf("gateway %d lists %d backups under a quota of %d", i+1, len(bs), limit)
					return
				}
			}
		}()
	}
	for i, p := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := tryCairn(gws[i%len(gws)].Env, "--quiet", "-f", "json", "backup", "create", p)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				var b backupJSON
				if json.Unmarshal([]byte(out), &b) != nil || b.ID == "" {
					failures = append(failures, "unparsable answer: "+out)
					return
				}
				admitted = append(admitted, fmt.Sprintf("%d:%s", i%len(gws), b.ID))
			case strings.Contains(err.Error(), "maximum number of backups allowed (12) exceeded"):
				refused++
			default:
				failures = append(failures, err.Error())
			}
		}()
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("requests failed other than by the quota: %v", failures)
	}
	t.Logf("%d admitted, %d refused by the quota", len(admitted), refused)
	if len(admitted) == 0 || len(admitted) > limit || len(admitted)+refused != requests {
		t.Fatalf("admitted %d and refused %d of %d under a quota of %d", len(admitted), refused, requests, limit)
	}
	ids := map[string]bool{}
	for _, a := range admitted {
		via, id, _ := strings.Cut(a, ":")
		gws[via[0]-'0'].waitAvailable(id, 90*time.Second)
		ids[id] = true
	}
	close(stop)
	lists.Wait()
	close(listErrs)
	for err := range listErrs {
		t.Error(err)
	}
	// Every gateway learns every admitted backup (they sync every 10 s), and no other.
	for i, g := range gws {
		waitFor(t, 30*time.Second, fmt.Sprintf("gateway %d to list every admitted backup", i+1), func() bool {
			n := 0
			for _, b := range g.listBackups() {
				if !ids[b.ID] {
					t.Fatalf("gateway %d lists backup %s (%s), which no request was told of", i+1, b.ID, b.Status)
				}
				n++
			}
			return n == len(ids)
		})
	}
}

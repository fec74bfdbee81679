package backendtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"golang.org/x/sync/errgroup"
)

// Run runs the conformance suite. newBackend returns a backend over an empty namespace; it
// is called once per subtest and should register its own cleanup with t.Cleanup.
func Run(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b backend.Backend)
	}{
		{"PutGet", testPutGet},
		{"GetRange", testGetRange},
		{"Overwrite", testOverwrite},
		{"OverwriteAtomic", testOverwriteAtomic},
		{"Create", testCreate},
		{"Delete", testDelete},
		{"List", testList},
		{"Stat", testStat},
		{"ListAfter", testListAfter},
		{"ListManyPages", testListManyPages},
		{"NotFound", testNotFound},
		{"Concurrent", testConcurrent},
		{"Large", testLarge},
		{"Cancel", testCancel},
		{"Location", testLocation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newBackend(t))
		})
	}
}

// Data returns n deterministic pseudo-random bytes for seed.
func Data(seed uint64, n int) []byte {
	var s [32]byte
	s[0], s[1] = byte(seed), byte(seed>>8)
	buf := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(buf)
	return buf
}

func testPutGet(t *testing.T, b backend.Backend) {
	ctx := context.Background()
	tests := []struct {
		key  string
		size int
	}{
		{"empty", 0},
		{"one", 1},
		{"config", 4096},
		{"packs/ab/ab0123", 1<<20 + 7},
		{"a/b/c/d/e/deep", 100},
	}
	for i, tt := range tests {
		data := Data(uint64(i), tt.size)
		if err := b.Put(ctx, tt.key, data); err != nil {
			t.Fatalf("Put(%s): %v", tt.key, err)
		}
		if got := get(t, b, tt.key); !bytes.Equal(got, data) {
			t.Errorf("Get(%s): got %d bytes, want %d (equal: false)", tt.key, len(got), len(data))
		}
		fi, err := b.Stat(ctx, tt.key)
		if err != nil {
			t.Fatalf("Stat(%s): %v", tt.key, err)
		}
		if fi.Size != int64(tt.size) || fi.Key != tt.key {
			t.Errorf("Stat(%s) = %+v, want size %d", tt.key, fi, tt.size)
		}
	}
	if got := list(t, b, ""); len(got) != len(tests) {
		t.Errorf("List(\"\") = %v, want %d objects", got, len(tests))
	}
}

func testGetRange(t *testing.T, b backend.Backend) {
	ctx := context.Background()
	const size = 10000
	data := Data(1, size)
	if err := b.Put(ctx, "obj", data); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name           string
		offset, length int64
		wantErr        bool
	}{
		{"start", 0, 100, false},
		{"middle", 4096, 1000, false},
		{"whole", 0, size, false},
		{"at end", size - 10, 10, false},
		{"last byte", size - 1, 1, false},
		{"empty at end", size, 0, false},
		{"empty in middle", 5, 0, false},
		{"past end", size - 10, 11, true},
		{"beyond end", size + 10, 5, true},
		{"negative offset", -1, 5, true},
		{"negative length", 0, -5, true},
	}
	// A backend that reads ranges into the caller's buffer answers each range as GetRange does.
	rr, ranged := b.(backend.RangeReader)
	check := func(t *testing.T, op string, offset, length int64, wantErr bool, got []byte, err error) {
		t.Helper()
		if wantErr {
			if err == nil {
				t.Fatalf("%s(%d, %d) = %d bytes, want an error", op, offset, length, len(got))
			}
			if errors.Is(err, backend.ErrNotFound) || errors.Is(err, backend.ErrUnavailable) {
				t.Fatalf("%s(%d, %d) = %v, want a range error, not a sentinel", op, offset, length, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("%s(%d, %d): %v", op, offset, length, err)
		}
		if want := data[offset : offset+length]; !bytes.Equal(got, want) {
			t.Fatalf("%s(%d, %d): got %d bytes, wrong content", op, offset, length, len(got))
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := b.GetRange(ctx, "obj", tt.offset, tt.length)
			check(t, "GetRange", tt.offset, tt.length, tt.wantErr, got, err)
		})
		if !ranged || tt.length < 0 {
			continue
		}
		t.Run("ReadRange "+tt.name, func(t *testing.T) {
			p := make([]byte, tt.length)
			err := rr.ReadRange(ctx, "obj", tt.offset, p)
			check(t, "ReadRange", tt.offset, tt.length, tt.wantErr, p, err)
		})
	}
	if !ranged {
		return
	}
	if err := rr.ReadRange(ctx, "missing", 0, make([]byte, 10)); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("ReadRange of a missing object = %v, want ErrNotFound", err)
	}
}

func testOverwrite(t *testing.T, b backend.Backend) {
	ctx := context.Background()
	for i, size := range []int{1000, 10, 0, 5000} {
		data := Data(uint64(i), size)
		if err := b.Put(ctx, "index/0", data); err != nil {
			t.Fatal(err)
		}
		if got := get(t, b, "index/0"); !bytes.Equal(got, data) {
			t.Fatalf("after overwrite %d: got %d bytes, want %d", i, len(got), size)
		}
	}
	if got := list(t, b, ""); !slices.Equal(got, []string{"index/0"}) {
		t.Fatalf("List after overwrites = %v, want [index/0]", got)
	}
}

// testCreate: of writers that create one key at once, one stores its object and the others
// get ErrExists; a key that holds an object is never replaced by Create.
func testCreate(t *testing.T, b backend.Backend) {
	c, ok := b.(backend.Creator)
	if !ok {
		t.Skip("the backend cannot create only where no object is")
	}
	ctx := context.Background()
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = c.Create(ctx, "config", Data(uint64(i), 1000)) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("creates %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, backend.ErrExists):
			t.Errorf("create %d: %v, want ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no create succeeded")
	}
	if got := get(t, b, "config"); !bytes.Equal(got, Data(uint64(winner), 1000)) {
		t.Errorf("the object is not the one whose create succeeded")
	}
	if got := list(t, b, ""); !slices.Equal(got, []string{"config"}) {
		t.Errorf("List after creates = %v, want [config]", got)
	}
}

// testOverwriteAtomic reads while another goroutine replaces the object: every read must
// see one version whole.
func testOverwriteAtomic(t *testing.T, b backend.Backend) {
	ctx := context.Background()
	versions := [][]byte{bytes.Repeat([]byte{'a'}, 256<<10), bytes.Repeat([]byte{'b'}, 512<<10)}
	if err := b.Put(ctx, "obj", versions[0]); err != nil {
		t.Fatal(err)
	}
	g, gctx := errgroup.WithContext(ctx)
	done := make(chan struct{})
	g.Go(func() error {
		defer close(done)
		for i := range 20 {
			if err := b.Put(gctx, "obj", versions[(i+1)%2]); err != nil {
				return err
			}
		}
		return nil
	})
	for range 2 {
		g.Go(func() error {
			for {
				select {
				case <-done:
					return nil
				default:
				}
				r, err := b.Get(gctx, "obj")
				if err != nil {
					return err
				}
				got, err := io.ReadAll(r)
				r.Close()
				if err != nil {
					return err
				}
				if !bytes.Equal(got, versions[0]) && !bytes.Equal(got, versions[1]) {
					return fmt.Errorf("read a torn object: %d bytes", len(got))
				}
				// Let the writer in: readers that never pause starve it behind a
				// concurrency limit on one CPU (GOMAXPROCS=1 took minutes).
				time.Sleep(time.Millisecond)
			}
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

func testDelete(t *testing.T, b backend.Backend) {
	ctx := context.Background()
	if err := b.Put(ctx, "locks/1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := b.Delete(ctx, "locks/1"); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	if err := b.Delete(ctx, "never/existed"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	if _, err := b.Stat(ctx, "locks/1"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Stat after Delete = %v, want ErrNotFound", err)
	}
	if got := list(t, b, ""); len(got) != 0 {
		t.Fatalf("List after Delete = %v, want none", got)
	}
}

func testList(t *testing.T, b backend.Backend) {
	ctx := context.Background()
	keys := []string{"config", "data/ab/ab01", "data/ab/ab02", "data/ac/ac01", "index/aa", "index/ab/x"}
	for i, k := range keys {
		if err := b.Put(ctx, k, Data(uint64(i), i*10)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", keys},
		{"data/", []string{"data/ab/ab01", "data/ab/ab02", "data/ac/ac01"}},
		{"data/a", []string{"data/ab/ab01", "data/ab/ab02", "data/ac/ac01"}},
		{"data/ab", []string{"data/ab/ab01", "data/ab/ab02"}},
		{"data/ab/", []string{"data/ab/ab01", "data/ab/ab02"}},
		{"data/ab/ab0", []string{"data/ab/ab01", "data/ab/ab02"}},
		{"data/ab/ab02", []string{"data/ab/ab02"}},
		{"index/a", []string{"index/aa", "index/ab/x"}},
		{"conf", []string{"config"}},
		{"nothing/", nil},
		{"data/zz", nil},
		{"x", nil},
	}
	for _, tt := range tests {
		if got := list(t, b, tt.prefix); !slices.Equal(got, tt.want) {
			t.Errorf("List(%q) = %v, want %v", tt.prefix, got, tt.want)
		}
		if got := listKeys(t, b, tt.prefix); !slices.Equal(got, tt.want) {
			t.Errorf("ListKeys(%q) = %v, want %v", tt.prefix, got, tt.want)
		}
	}
	// Sizes are reported.
	err := b.List(ctx, "", func(fi backend.ObjectInfo) error {
		if want := int64(slices.Index(keys, fi.Key) * 10); fi.Size != want {
			t.Errorf("List: %s has size %d, want %d", fi.Key, fi.Size, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// An error from fn stops the listing and is returned.
	stop := errors.New("stop")
	calls := 0
	err = b.List(ctx, "", func(backend.ObjectInfo) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("List with failing fn = %v after %d calls, want the fn's error after 1", err, calls)
	}
	calls = 0
	err = b.ListKeys(ctx, "", func(string) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("ListKeys with failing fn = %v after %d calls, want the fn's error after 1", err, calls)
	}
}

func testStat(t *testing.T, b backend.Backend) {
	ctx := context.Background()
	if err := b.Put(ctx, "snapshots/s1", Data(3, 1234)); err != nil {
		t.Fatal(err)
	}
	fi, err := b.Stat(ctx, "snapshots/s1")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Key != "snapshots/s1" || fi.Size != 1234 {
		t.Fatalf("Stat = %+v", fi)
	}
	// ModTime is the store's clock: within a minute of this machine's for a store here.
	if d := time.Since(fi.ModTime); d < -time.Minute || d > time.Minute {
		t.Fatalf("Stat ModTime = %v, %v from now", fi.ModTime, d)
	}
}

func testListAfter(t *testing.T, b backend.Backend) {
	ctx := context.Background()
	keys := []string{"log/0001-a", "log/0002-b", "log/0003-c", "log/0010-d", "other/0005"}
	for i, k := range keys {
		if err := b.Put(ctx, k, Data(uint64(i), 10)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		after string
		want  []string
	}{
		{"", []string{"log/0001-a", "log/0002-b", "log/0003-c", "log/0010-d"}},
		{"log/0002", []string{"log/0002-b", "log/0003-c", "log/0010-d"}},
		{"log/0002-b", []string{"log/0003-c", "log/0010-d"}},
		{"log/0011", nil},
	} {
		var got []string
		err := b.ListAfter(ctx, "log/", tt.after, func(oi backend.ObjectInfo) error {
			if oi.ModTime.IsZero() {
				t.Errorf("ListAfter: %s has no ModTime", oi.Key)
			}
			got = append(got, oi.Key)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(got)
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("ListAfter(log/, %q) = %v, want %v", tt.after, got, tt.want)
		}
	}
}

// testListManyPages lists more keys than one page of an S3 listing holds (1,000), from the
// start and from a key in a later page: a listing that stopped after its first page would
// hide backups from gc's mark, which would then delete what they reach.
func testListManyPages(t *testing.T, b backend.Backend) {
	ctx := context.Background()
	const n = 1500
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("many/%05d", i)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, k := range append(want, "many0", "manz/1") { // neighbours that are not under many/
		g.Go(func() error { return b.Put(gctx, k, []byte(k)) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := list(t, b, "many/"); !slices.Equal(got, want) {
		t.Fatalf("List(many/) gave %d keys, want %d", len(got), n)
	}
	if got := listKeys(t, b, "many/"); !slices.Equal(got, want) {
		t.Fatalf("ListKeys(many/) gave %d keys, want %d", len(got), n)
	}
	var got []string
	if err := b.ListAfter(ctx, "many/", want[249], func(oi backend.ObjectInfo) error {
		got = append(got, oi.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, want[250:]) {
		t.Fatalf("ListAfter(many/, %s) gave %d keys, want %d", want[249], len(got), n-250)
	}
}

func testNotFound(t *testing.T, b backend.Backend) {
	ctx := context.Background()
	// "dir" exists only as the parent of another key: it is not an object either.
	if err := b.Put(ctx, "dir/obj", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"missing", "dir", "dir/missing", "missing/dir/obj"} {
		if _, err := b.Get(ctx, key); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Get(%s) = %v, want ErrNotFound", key, err)
		}
		if _, err := b.GetRange(ctx, key, 0, 1); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("GetRange(%s) = %v, want ErrNotFound", key, err)
		}
		if _, err := b.Stat(ctx, key); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Stat(%s) = %v, want ErrNotFound", key, err)
		}
	}
}

func testConcurrent(t *testing.T, b backend.Backend) {
	ctx := context.Background()
	g, gctx := errgroup.WithContext(ctx)
	const workers, each = 8, 10
	for w := range workers {
		g.Go(func() error {
			for i := range each {
				key := fmt.Sprintf("data/%d/%d", w, i)
				data := Data(uint64(w*each+i), 1000+w*100+i)
				if err := b.Put(gctx, key, data); err != nil {
					return err
				}
				r, err := b.Get(gctx, key)
				if err != nil {
					return err
				}
				got, err := io.ReadAll(r)
				r.Close()
				if err != nil {
					return err
				}
				if !bytes.Equal(got, data) {
					return fmt.Errorf("%s: read back different bytes", key)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := list(t, b, "data/"); len(got) != workers*each {
		t.Fatalf("List found %d objects, want %d", len(got), workers*each)
	}
}

func testLarge(t *testing.T, b backend.Backend) {
	ctx := context.Background()
	const size = 20 << 20
	data := Data(7, size)
	if err := b.Put(ctx, "packs/large", data); err != nil {
		t.Fatal(err)
	}
	r, err := b.Get(ctx, "packs/large")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, r)
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if n != size || !bytes.Equal(h.Sum(nil), sha(data)) {
		t.Fatalf("Get: %d bytes, sha256 mismatch or short", n)
	}
	got, err := b.GetRange(ctx, "packs/large", size-(1<<20), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[size-(1<<20):]) {
		t.Fatal("GetRange of the last MiB: wrong content")
	}
}

// testCancel checks that a cancelled context fails every operation with the context's
// error, and that cancelling during a large transfer returns promptly.
func testCancel(t *testing.T, b backend.Backend) {
	if err := b.Put(context.Background(), "obj", []byte("data")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ops := map[string]func() error{
		"Get": func() error {
			r, err := b.Get(ctx, "obj")
			if err == nil {
				_, err = io.ReadAll(r)
				r.Close()
			}
			return err
		},
		"GetRange": func() error { _, err := b.GetRange(ctx, "obj", 0, 1); return err },
		"Put":      func() error { return b.Put(ctx, "new", []byte("x")) },
		"Delete":   func() error { return b.Delete(ctx, "obj") },
		"List":     func() error { return b.List(ctx, "", func(backend.ObjectInfo) error { return nil }) },
		"ListKeys": func() error { return b.ListKeys(ctx, "", func(string) error { return nil }) },
		"Stat":     func() error { _, err := b.Stat(ctx, "obj"); return err },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context = %v, want context.Canceled", name, err)
		}
	}
	if _, err := b.Stat(context.Background(), "new"); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("a Put with a cancelled context stored the object (Stat: %v)", err)
	}

	// Cancel in the middle of large puts: they return soon, with success or the ctx error.
	data := Data(9, 8<<20)
	ctx, cancel = context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = b.Put(ctx, fmt.Sprintf("big/%d", i), data) })
	}
	time.Sleep(5 * time.Millisecond)
	start := time.Now()
	cancel()
	wg.Wait()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Put returned %v after cancel, want promptly", d)
	}
	for i, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Put big/%d after cancel = %v, want nil or context.Canceled", i, err)
		}
	}
}

func testLocation(t *testing.T, b backend.Backend) {
	if b.Location() == "" {
		t.Fatal("Location() is empty")
	}
}

func get(t *testing.T, b backend.Backend, key string) []byte {
	t.Helper()
	r, err := b.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("Get(%s): read: %v", key, err)
	}
	return data
}

// list returns the sorted keys under prefix.
func list(t *testing.T, b backend.Backend, prefix string) []string {
	t.Helper()
	var keys []string
	err := b.List(context.Background(), prefix, func(fi backend.ObjectInfo) error {
		keys = append(keys, fi.Key)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	slices.Sort(keys)
	return keys
}

// listKeys is list by ListKeys.
func listKeys(t *testing.T, b backend.Backend, prefix string) []string {
	t.Helper()
	var keys []string
	err := b.ListKeys(context.Background(), prefix, func(key string) error {
		keys = append(keys, key)
		return nil
	})
	if err != nil {
		t.Fatalf("ListKeys(%q): %v", prefix, err)
	}
	slices.Sort(keys)
	return keys
}

func sha(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

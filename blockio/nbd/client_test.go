package nbd

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// A qcow2 image with a persistent bitmap b0, written through qemu-io after the bitmap began,
// exported by a real qemu-nbd: the client reads what qemu-img convert reads, finds the data
// where base:allocation says, and the dirty ranges where b0 says.
func TestQemuNBD(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "vm.qcow2")
	const size = 64 << 20
	testutil.Qemu(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
	testutil.Qemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", "-c", "write -P 0x22 10M 64k", img)
	testutil.Qemu(t, "qemu-img", "bitmap", "--add", "--enable", img, "b0")
	testutil.Qemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 20M 128k", "-c", "write -P 0x6b 40M 4k", "-c", "write -z 0 64k", img)
	raw := filepath.Join(dir, "vm.raw")
	testutil.Qemu(t, "qemu-img", "convert", "-O", "raw", img, raw)
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	uri := testutil.StartQemuNBD(t, "", img, "-f", "qcow2", "-B", "b0").URI()

	ctx := context.Background()
	s, err := Open(ctx, uri, "b0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Size() != size || !s.c.ReadOnly() || !s.HasBitmap("b0") || s.HasBitmap("other") {
		t.Fatalf("size %d, read-only %v, has b0 %v; want %d, true, true", s.Size(), s.c.ReadOnly(), s.HasBitmap("b0"), size)
	}

	// Reads from several goroutines at once, some larger than one request, one past the end.
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := make([]byte, 3<<20+512)
			for off := int64(w) << 20; off < size; off += 7 << 20 {
				n, err := s.ReadAt(p, off)
				if err != nil && err != io.EOF {
					t.Error(err)
					return
				}
				if !bytes.Equal(p[:n], want[off:off+int64(n)]) {
					t.Errorf("ReadAt(%d) differs from qemu-img convert", off)
					return
				}
			}
		}()
	}
	wg.Wait()

	// base:allocation: data where written, never where qemu says zeros.
	var data []extent
	for off := int64(0); ; {
		st, e, err := s.NextData(off)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, extent{st, e, 0})
		off = e
	}
	covered := func(a, b int64) bool {
		for _, x := range data {
			if x.start <= a && b <= x.end {
				return true
			}
		}
		return false
	}
	for _, r := range [][2]int64{{64 << 10, 1 << 20}, {10 << 20, 10<<20 + 64<<10}, {20 << 20, 20<<20 + 128<<10}, {40 << 20, 40<<20 + 4096}} {
		if !covered(r[0], r[1]) {
			t.Errorf("data extents %v miss the written range %v", data, r)
		}
	}
	var dataBytes int64
	for _, x := range data {
		dataBytes += x.end - x.start
	}
	if dataBytes > 4<<20 {
		t.Errorf("base:allocation reports %d bytes of data in an image with 1.2 MiB written: %v", dataBytes, data)
	}
	// Outside the data extents the image reads zeros.
	last := int64(0)
	for _, x := range append(data, extent{size, size, 0}) {
		if !bytes.Equal(want[last:x.start], make([]byte, x.start-last)) {
			t.Fatalf("[%d, %d) is not data by base:allocation but holds non-zero bytes", last, x.start)
		}
		last = x.end
	}

	// b0 marks what was written after it began, in its 64 KiB granularity.
	dirty, err := s.Dirty(ctx, "b0")
	if err != nil {
		t.Fatal(err)
	}
	wantDirty := [][2]int64{{0, 64 << 10}, {20 << 20, 20<<20 + 128<<10}, {40 << 20, 40<<20 + 64<<10}}
	if len(dirty) != len(wantDirty) {
		t.Fatalf("dirty %v, want %v", dirty, wantDirty)
	}
	for i, d := range dirty {
		if d.Start != wantDirty[i][0] || d.End != wantDirty[i][1] {
			t.Errorf("dirty range %d = %v, want %v", i, d, wantDirty[i])
		}
	}
}

// A bitmap the image does not have is not granted, and errors name what is wrong.
func TestQemuNBDMissingBitmapAndErrors(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "vm.qcow2")
	testutil.Qemu(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "4M")
	uri := testutil.StartQemuNBD(t, "", img, "-f", "qcow2", "-x", "disk").URI()
	ctx := context.Background()
	s, err := Open(ctx, strings.Replace(uri, ":///", ":///disk", 1), "nope")
	if err != nil {
		t.Fatal(err)
	}
	if s.HasBitmap("nope") {
		t.Error("a bitmap the image does not have was granted")
	}
	if _, err := s.Dirty(ctx, "nope"); err == nil {
		t.Error("Dirty of a bitmap that was not granted succeeded")
	}
	if st, _, err := s.NextData(0); err != io.EOF || st != 4<<20 {
		t.Errorf("NextData of an empty image = %d, %v; want the end and io.EOF", st, err)
	}
	s.Close()
	if _, err := Open(ctx, strings.Replace(uri, ":///", ":///other", 1), ""); err == nil || !strings.Contains(err.Error(), "no such export") {
		t.Errorf("opening a missing export: %v, want 'no such export'", err)
	}
	if _, err := Open(ctx, "nbd+unix:///?socket="+filepath.Join(dir, "none.sock"), ""); err == nil || !strings.Contains(err.Error(), "connect") {
		t.Errorf("opening a missing socket: %v", err)
	}
}

func TestParseURI(t *testing.T) {
	tests := []struct {
		uri  string
		want Address
		err  string
	}{
		{"nbd://example.com/disk", Address{"tcp", "example.com:10809", "disk"}, ""},
		{"nbd://127.0.0.1:10810/", Address{"tcp", "127.0.0.1:10810", ""}, ""},
		{"nbd://[::1]:7/hello%20world", Address{"tcp", "[::1]:7", "hello world"}, ""},
		{"nbd://example.com//disk", Address{"tcp", "example.com:10809", "/disk"}, ""},
		{"nbd+unix:///disk?socket=/run/nbd.sock", Address{"unix", "/run/nbd.sock", "disk"}, ""},
		{"nbd+unix:///?socket=sock", Address{"unix", "sock", ""}, ""},
		{"nbd+unix:///disk", Address{}, "names no socket"},
		{"nbd:///disk", Address{}, "names no host"},
		{"nbds://example.com/disk", Address{}, "TLS is not supported"},
		{"http://example.com/disk", Address{}, "is not nbd"},
	}
	for _, tt := range tests {
		got, err := ParseURI(tt.uri)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseURI(%q) = %v, %v; want an error with %q", tt.uri, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseURI(%q) = %+v, %v; want %+v", tt.uri, got, err, tt.want)
		}
	}
	if !IsURI("nbd+unix:///x?socket=s") || IsURI("/dev/sda") {
		t.Error("IsURI")
	}
}

// Reply chunks of one read must not overlap: two data chunks that answer the first half twice
// count as many bytes as the whole read, and the second half would be returned unanswered
// (whatever the buffer held). The read fails instead; one answered by disjoint chunks, data
// and a hole, returns their bytes.
func TestClientRefusesOverlappingChunks(t *testing.T) {
	data := func(b []byte, off uint64, n int, fill byte, flags uint16) []byte {
		b = AppendReplyHeader(b, ReplyHeader{Structured: true, Type: ReplyOffsetData, Flags: flags, Cookie: 1, Length: uint32(8 + n)})
		b = be.AppendUint64(b, off)
		return append(b, bytes.Repeat([]byte{fill}, n)...)
	}
	for _, tc := range []struct {
		name    string
		replies []byte
		want    []byte // nil: the read must fail
	}{
		{"overlapping", data(data(nil, 4096, 4096, 0x5a, 0), 4096, 4096, 0x5b, ReplyFlagDone), nil},
		{"one inside another", data(data(nil, 4096, 8192, 0x5a, 0), 6144, 2048, 0x5b, ReplyFlagDone), nil},
		{"disjoint", AppendOffsetHole(AppendReplyHeader(data(nil, 4096, 4096, 0x5a, 0),
			ReplyHeader{Structured: true, Type: ReplyOffsetHole, Flags: ReplyFlagDone, Cookie: 1, Length: 12}), 8192, 4096),
			append(bytes.Repeat([]byte{0x5a}, 4096), make([]byte, 4096)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			c := &Client{conn: client, size: 1 << 20, structured: true, maxPayload: 32 << 20, minBlock: 1,
				pending: map[uint64]*call{}, done: make(chan struct{})}
			defer c.Close()
			go func() {
				_, _ = io.CopyN(io.Discard, server, RequestLen)
				_, _ = server.Write(tc.replies)
				_, _ = io.Copy(io.Discard, server) // NBD_CMD_DISC, until the client closes
			}()
			go c.readReplies()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			buf := bytes.Repeat([]byte{0xee}, 8192) // stale bytes a reply must overwrite
			_, err := c.ReadAtContext(ctx, buf, 4096)
			switch {
			case tc.want == nil && err == nil:
				t.Fatalf("a read answered by overlapping chunks succeeded, with %x... at its end", buf[8188:])
			case tc.want != nil && err != nil:
				t.Fatal(err)
			case tc.want != nil && !bytes.Equal(buf, tc.want):
				t.Fatal("the read returned other bytes than its replies")
			}
		})
	}
}

// A URI where nothing serves (a socket that is gone, a port nothing listens on) says so and
// what to do, not only the dial's error.
func TestDialWhereNothingServes(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	for _, uri := range []string{"nbd+unix:///x?socket=" + filepath.Join(t.TempDir(), "gone.sock"), "nbd://" + closed + "/x"} {
		_, err := Dial(context.Background(), uri, Options{DialTimeout: 5 * time.Second})
		if err == nil || !strings.Contains(err.Error(), "nothing serves the export there") {
			t.Errorf("%s: %v, want it to say nothing serves there", uri, err)
		}
	}
}

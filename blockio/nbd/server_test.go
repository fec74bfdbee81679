package nbd

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// memExport is an export in memory whose blocks marked in data hold bytes and the others are
// holes (they read as zeros). Some data blocks hold zeros too: data is not "non-zero".
type memExport struct {
	b     []byte
	block int64
	data  []bool
}

const testBlock = 64 << 10

// newMemExport makes an export of size bytes with a pattern of data and holes from seed.
func newMemExport(size int64, seed uint64) *memExport {
	r := rand.New(rand.NewPCG(seed, 1))
	e := &memExport{b: make([]byte, size), block: testBlock, data: make([]bool, (size+testBlock-1)/testBlock)}
	for i := range e.data {
		if r.IntN(3) == 0 {
			continue // a hole
		}
		e.data[i] = true
		if r.IntN(5) == 0 {
			continue // data that happens to be zeros
		}
		end := min(int64(i+1)*testBlock, size)
		for j := int64(i) * testBlock; j < end; j += 8 {
			x := r.Uint64()
			for k := int64(0); k < 8 && j+k < end; k++ {
				e.b[j+k] = byte(x >> (8 * k))
			}
		}
	}
	return e
}

func (e *memExport) Size() int64 { return int64(len(e.b)) }

func (e *memExport) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if off >= int64(len(e.b)) {
		return 0, io.EOF
	}
	n := copy(p, e.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (e *memExport) NextData(_ context.Context, off int64) (int64, int64, error) {
	i := off / e.block
	for i < int64(len(e.data)) && !e.data[i] {
		i++
	}
	if i == int64(len(e.data)) {
		return e.Size(), e.Size(), io.EOF
	}
	start := max(i*e.block, off)
	for i < int64(len(e.data)) && e.data[i] {
		i++
	}
	return start, min(i*e.block, e.Size()), nil
}

// holeAt reports whether off is in a hole.
func (e *memExport) holeAt(off int64) bool { return !e.data[off/e.block] }

type memExports map[string]*memExport

func (m memExports) Lookup(_ context.Context, name string) (Export, error) {
	if e, ok := m[name]; ok {
		return e, nil
	}
	return nil, fmt.Errorf("%w %q: try one of the names NBD_OPT_LIST shows", ErrUnknownExport, name)
}

func (m memExports) List(context.Context) ([]string, error) {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

// serve starts a server of exports on network ("unix" or "tcp") and returns its address; the
// server stops when the test ends.
func serve(t testing.TB, network string, exports Exports) string {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "nbd.sock")
	}
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(exports, nil).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

// The server against cairn's own client: concurrent reads equal the source, block status
// reports exactly the holes, the export is read-only, and unknown names fail cleanly.
func TestServerWithClient(t *testing.T) {
	disk := newMemExport(40<<20+4096+17, 1) // a tail shorter than a block, larger than one read
	sock := serve(t, "unix", memExports{"disk": disk, "vm1/latest": newMemExport(1<<20, 2)})
	ctx := context.Background()
	c, err := Dial(ctx, "nbd+unix:///disk?socket="+sock, Options{MetaContexts: []string{ContextAllocation, "qemu:dirty-bitmap:x"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Size() != disk.Size() || !c.ReadOnly() || !c.HasContext(ContextAllocation) || c.HasContext("qemu:dirty-bitmap:x") {
		t.Fatalf("size %d read-only %v allocation %v; want %d true true", c.Size(), c.ReadOnly(), c.HasContext(ContextAllocation), disk.Size())
	}

	// 8 readers at once, reads of odd sizes and offsets, some larger than one request.
	got := make([]byte, disk.Size())
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 9))
			for range 20 {
				off := r.Int64N(disk.Size())
				n := min(1+r.Int64N(5<<20), disk.Size()-off)
				p := make([]byte, n)
				if _, err := c.ReadAt(p, off); err != nil && err != io.EOF {
					t.Error(err)
					return
				}
				if !bytes.Equal(p, disk.b[off:off+n]) {
					t.Errorf("read of %d at %d differs from the export", n, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	for off := int64(0); off < disk.Size(); off += 7 << 20 {
		if _, err := c.ReadAt(got[off:min(off+7<<20, disk.Size())], off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
	}
	if sha256.Sum256(got) != sha256.Sum256(disk.b) {
		t.Fatal("the export read whole differs from its source by sha256")
	}

	// base:allocation: every descriptor's flags match the source's holes.
	for off := int64(0); off < disk.Size(); {
		ds, err := c.BlockStatus(ctx, ContextAllocation, off, 1<<31) // more than MaxRequest
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			hole := d.Flags == StateHole|StateZero
			if !hole && d.Flags != 0 {
				t.Fatalf("descriptor at %d has flags %d", off, d.Flags)
			}
			for x := off; x < off+int64(d.Length); x += 4096 {
				if disk.holeAt(x) != hole {
					t.Fatalf("block status says hole=%v at %d, the source says %v", hole, x, disk.holeAt(x))
				}
			}
			off += int64(d.Length)
		}
	}

	if _, err := Dial(ctx, "nbd+unix:///nope?socket="+sock, Options{}); err == nil || !strings.Contains(err.Error(), `no such export: no such export "nope"`) {
		t.Errorf("dialling an unknown export: %v", err)
	}
	v, err := Dial(ctx, "nbd+unix:///vm1/latest?socket="+sock, Options{})
	if err != nil {
		t.Fatal(err)
	}
	v.Close()
}

// rawConn negotiates an export by hand, to send what cairn's client never does.
type rawConn struct {
	t *testing.T
	c net.Conn
}

func dialRaw(t *testing.T, sock, export string, structured bool) *rawConn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	r := &rawConn{t, c}
	var g [18]byte
	r.full(g[:])
	r.write(be.AppendUint32(nil, FlagCFixedNewstyle|FlagCNoZeroes))
	if structured {
		r.write(AppendOption(nil, OptStructuredRepl, nil))
		r.optReply(RepAck)
		r.write(AppendOption(nil, OptSetMetaCtx, AppendMetaContextQuery(nil, export, ContextAllocation)))
		r.optReply(RepMetaContext)
		r.optReply(RepAck)
	}
	r.write(AppendOption(nil, OptGo, AppendGo(nil, export)))
	for r.optReply(0).Type != RepAck {
	}
	return r
}

func (r *rawConn) full(p []byte) {
	r.t.Helper()
	if _, err := io.ReadFull(r.c, p); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) write(p []byte) {
	r.t.Helper()
	if _, err := r.c.Write(p); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) optReply(want uint32) OptionReply {
	r.t.Helper()
	o, err := ReadOptionReply(r.c, MaxOptionData)
	if err != nil {
		r.t.Fatal(err)
	}
	if want != 0 && o.Type != want {
		r.t.Fatalf("option reply %#x (%s), want %#x", o.Type, o.Data, want)
	}
	return o
}

// errno reads the one reply of a request that must fail, and returns its error.
func (r *rawConn) errno(cookie uint64) ErrorChunk {
	r.t.Helper()
	h, err := ReadReplyHeader(r.c)
	if err != nil {
		r.t.Fatal(err)
	}
	if h.Cookie != cookie || !h.Done() {
		r.t.Fatalf("reply %+v, want the last one for cookie %d", h, cookie)
	}
	if !h.Structured {
		return ErrorChunk{Errno: h.Error}
	}
	p := make([]byte, h.Length)
	r.full(p)
	e, err := DecodeErrorChunk(h.Type, p)
	if err != nil {
		r.t.Fatalf("reply type %d: %v", h.Type, err)
	}
	return e
}

// Writes, trims and write-zeroes are refused with EPERM; bad requests get EINVAL; the
// connection stays usable through all of it, with simple and structured replies alike.
func TestServerRefuses(t *testing.T) {
	disk := newMemExport(4<<20, 3)
	sock := serve(t, "unix", memExports{"disk": disk})
	for _, structured := range []bool{false, true} {
		r := dialRaw(t, sock, "disk", structured)
		cases := []struct {
			q       Request
			payload int
			errno   uint32
		}{
			{Request{Type: CmdWrite, Cookie: 1, Offset: 0, Length: 4096}, 4096, EPERM},
			{Request{Type: CmdTrim, Cookie: 2, Offset: 0, Length: 4096}, 0, EPERM},
			{Request{Type: CmdWriteZeroes, Cookie: 3, Offset: 0, Length: 4096}, 0, EPERM},
			{Request{Type: CmdRead, Cookie: 4, Offset: 4 << 20, Length: 1}, 0, EINVAL},
			{Request{Type: CmdRead, Cookie: 5, Offset: 0, Length: MaxRequest + 1}, 0, EINVAL},
			{Request{Type: CmdRead, Cookie: 6, Offset: 1<<64 - 1, Length: 2}, 0, EINVAL},
			{Request{Type: CmdRead, Cookie: 7, Offset: 0, Length: 0}, 0, EINVAL},
			{Request{Type: 99, Cookie: 8}, 0, EINVAL},
		}
		if !structured {
			cases = append(cases, struct {
				q       Request
				payload int
				errno   uint32
			}{Request{Type: CmdBlockStatus, Cookie: 9, Length: 4096}, 0, EINVAL})
		}
		for _, tc := range cases {
			r.write(append(AppendRequest(nil, tc.q), make([]byte, tc.payload)...))
			if e := r.errno(tc.q.Cookie); e.Errno != tc.errno {
				t.Errorf("structured %v: request %+v: errno %d (%s), want %d", structured, tc.q, e.Errno, e.Message, tc.errno)
			}
		}
		// Still serving: a flush and a read after the refusals.
		r.write(AppendRequest(nil, Request{Type: CmdFlush, Cookie: 10}))
		if h, err := ReadReplyHeader(r.c); err != nil || h.Cookie != 10 || h.Error != 0 || (h.Structured && h.Type != ReplyNone) {
			t.Fatalf("flush: %+v, %v", h, err)
		}
		r.write(AppendRequest(nil, Request{Type: CmdDisc}))
		if _, err := r.c.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("after NBD_CMD_DISC the server kept the connection: %v", err)
		}
	}

	// A write larger than any request ends the connection instead of being read.
	r := dialRaw(t, sock, "disk", true)
	r.write(AppendRequest(nil, Request{Type: CmdWrite, Cookie: 1, Length: 1 << 31}))
	_ = r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := io.Copy(io.Discard, r.c); err != nil || n != 0 {
		t.Errorf("a 2 GiB write: the server sent %d bytes, %v; want the connection closed", n, err)
	}
}

// NBD_OPT_LIST lists the exports; NBD_OPT_INFO describes one without choosing it.
func TestServerListAndInfo(t *testing.T) {
	sock := serve(t, "unix", memExports{"a": newMemExport(1<<20, 4), "b/latest": newMemExport(3<<20, 5)})
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := &rawConn{t, c}
	r.full(make([]byte, 18))
	r.write(be.AppendUint32(nil, FlagCFixedNewstyle))
	r.write(AppendOption(nil, OptList, nil))
	var names []string
	for {
		o := r.optReply(0)
		if o.Type == RepAck {
			break
		}
		if o.Type != RepServer || len(o.Data) < 4 || int(be.Uint32(o.Data)) != len(o.Data)-4 {
			t.Fatalf("list reply %#x %q", o.Type, o.Data)
		}
		names = append(names, string(o.Data[4:]))
	}
	if !slices.Equal(names, []string{"a", "b/latest"}) {
		t.Errorf("NBD_OPT_LIST: %q", names)
	}
	r.write(AppendOption(nil, OptInfo, AppendGo(nil, "b/latest", InfoName)))
	var in Info
	for o := r.optReply(0); o.Type != RepAck; o = r.optReply(0) {
		if err := DecodeInfo(o.Data, &in); err != nil {
			t.Fatal(err)
		}
	}
	if in.Size != 3<<20 || in.Flags&FlagReadOnly == 0 || in.Name != "b/latest" || in.MaxBlock != MaxRequest {
		t.Errorf("NBD_OPT_INFO: %+v", in)
	}
	r.write(AppendOption(nil, OptInfo, AppendGo(nil, "c")))
	if o := r.optReply(RepErrUnknown); !strings.Contains(string(o.Data), `"c"`) {
		t.Errorf("unknown export: %q", o.Data)
	}
	r.write(AppendOption(nil, OptStartTLS, nil))
	r.optReply(RepErrUnsup)
	r.write(AppendOption(nil, OptAbort, nil))
	r.optReply(RepAck)
}

// Real qemu tools against the server: qemu-img convert gives the export's bytes, qemu-img map
// its holes, qemu-io cannot write, and 8 qemu-img processes at once read it byte-exact.
func TestServerQemu(t *testing.T) {
	disk := newMemExport(32<<20, 6)
	addr := serve(t, "tcp", memExports{"disk": disk})
	uri := "nbd://" + addr + "/disk"
	dir := t.TempDir()
	want := sha256.Sum256(disk.b)

	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := filepath.Join(dir, fmt.Sprintf("out%d.raw", i))
			testutil.Qemu(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri, out)
			b, err := os.ReadFile(out)
			if err != nil {
				t.Error(err)
				return
			}
			if sha256.Sum256(b) != want {
				t.Errorf("qemu-img convert %d: the copy differs from the export by sha256", i)
			}
		}()
	}
	wg.Wait()

	var extents []struct {
		Start, Length int64
		Data, Zero    bool
	}
	if err := json.Unmarshal([]byte(testutil.Qemu(t, "qemu-img", "map", "--output=json", "-f", "raw", uri)), &extents); err != nil {
		t.Fatal(err)
	}
	holes := 0
	for _, e := range extents {
		for x := e.Start; x < e.Start+e.Length; x += 4096 {
			if disk.holeAt(x) != (!e.Data && e.Zero) {
				t.Fatalf("qemu-img map: %+v at %d; the source's hole=%v", e, x, disk.holeAt(x))
			}
		}
		if !e.Data {
			holes++
		}
	}
	if holes == 0 {
		t.Fatal("qemu-img map shows no holes")
	}

	bin := testutil.RequireCommand(t, "qemu-io")
	out, err := exec.Command(bin, "-f", "raw", "-c", "write 0 4k", uri).CombinedOutput()
	if err == nil || !(strings.Contains(string(out), "Permission denied") || strings.Contains(string(out), "read-only")) {
		t.Fatalf("qemu-io write: %v: %s; want it refused", err, out)
	}
	if !bytes.Equal(disk.b[:4096], newMemExport(32<<20, 6).b[:4096]) {
		t.Fatal("the export changed")
	}

	out, err = exec.Command(testutil.RequireCommand(t, "qemu-img"), "info", "nbd://"+addr+"/none").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no such export") {
		t.Errorf("qemu-img info of an unknown export: %v: %s", err, out)
	}
}

// failingExport fails every read that touches bad with an error naming the offset.
type failingExport struct {
	*memExport
	bad int64
}

func (e failingExport) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off <= e.bad && e.bad < off+int64(len(p)) {
		return 0, fmt.Errorf("backup b1: block at offset %d: checksum mismatch", e.bad/testBlock*testBlock)
	}
	return e.memExport.ReadAtContext(ctx, p, off)
}

type oneExport struct{ e Export }

func (o oneExport) Lookup(context.Context, string) (Export, error) { return o.e, nil }
func (o oneExport) List(context.Context) ([]string, error)         { return []string{"x"}, nil }

// A read the export fails gets EIO with the export's reason; the connection serves on.
func TestServerReadError(t *testing.T) {
	disk := newMemExport(4<<20, 13)
	disk.data[20] = true // the bad block must be read, not answered as a hole
	bad := int64(20*testBlock + 100)
	sock := serve(t, "unix", oneExport{failingExport{disk, bad}})
	c, err := Dial(context.Background(), "nbd+unix:///x?socket="+sock, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var re *RemoteError
	_, err = c.ReadAt(make([]byte, 1<<20), 1<<20)
	if !errors.As(err, &re) || re.Errno != EIO || !strings.Contains(re.Message, "block at offset 1310720: checksum mismatch") {
		t.Fatalf("read over a bad block: %v, want EIO naming the block", err)
	}
	p := make([]byte, 1<<20)
	if _, err := c.ReadAt(p, 2<<20); err != nil || !bytes.Equal(p, disk.b[2<<20:3<<20]) {
		t.Fatalf("read after the failed one: %v", err)
	}
}

// Cancelling Serve closes idle and busy connections and returns.
func TestServerStops(t *testing.T) {
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(memExports{"d": newMemExport(1<<20, 7)}, nil).Serve(ctx, l) }()
	c, err := Dial(context.Background(), "nbd+unix:///d?socket="+l.Addr().String(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	idle, err := net.Dial("unix", l.Addr().String()) // stuck in the handshake
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := c.ReadAt(make([]byte, 10), 0); err == nil || err == io.EOF {
		t.Errorf("read after the server stopped: %v", err)
	}
}

// Export names may carry a credential before an '@' (TOKEN@NAME): logs never show it.
func TestLogNameHidesCredential(t *testing.T) {
	for in, want := range map[string]string{
		"tok-secret@1f2e/lvm/vg0/root": "…@1f2e/lvm/vg0/root",
		"a@b@vm1/latest":               "…@vm1/latest",
		"vm1/latest":                   "vm1/latest",
	} {
		if got := logName(in); got != want || strings.Contains(got, "secret") {
			t.Errorf("logName(%q) = %q, want %q", in, got, want)
		}
	}
}

// eofExport fails every read that touches bad with an error that wraps io.EOF, as a block of
// a pack cut short may.
type eofExport struct {
	*memExport
	bad int64
}

func (e eofExport) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off <= e.bad && e.bad < off+int64(len(p)) {
		return 0, fmt.Errorf("backup b1: block at offset %d: get pack range: %w", e.bad/testBlock*testBlock, io.EOF)
	}
	return e.memExport.ReadAtContext(ctx, p, off)
}

// A read to the export's end that fails with an error wrapping io.EOF is a failed read, not
// the end of the volume: before (found by review), the server sent its reply buffer as data.
func TestServerReadErrorWrappingEOFAtTheEnd(t *testing.T) {
	const size = 4 << 20
	disk := newMemExport(size, 14)
	last := len(disk.data) - 1
	disk.data[last] = true // read, not answered as a hole
	sock := serve(t, "unix", oneExport{eofExport{disk, int64(last)*testBlock + 1}})
	c, err := Dial(context.Background(), "nbd+unix:///x?socket="+sock, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := make([]byte, 64<<10)
	var re *RemoteError
	if _, err := c.ReadAt(p, size-int64(len(p))); !errors.As(err, &re) || re.Errno != EIO {
		t.Fatalf("read to the end over a block that fails with a wrapped EOF: %v, want EIO (bytes as stored: %v)",
			err, bytes.Equal(p, disk.b[size-len(p):]))
	}
}

// noExports refuses every name without echoing it, as cairn's gateway does with tokens.
type noExports struct{}

func (noExports) Lookup(context.Context, string) (Export, error) { return nil, ErrUnknownExport }
func (noExports) List(context.Context) ([]string, error)         { return nil, nil }

// A refused NBD_OPT_EXPORT_NAME is logged without the credential its name may carry.
func TestServerExportNameRefusalHidesCredential(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(noExports{}, log)
	c, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() {
		var g [18]byte
		_, _ = io.ReadFull(c, g[:])
		_, _ = c.Write(be.AppendUint32(nil, FlagCFixedNewstyle|FlagCNoZeroes))
		_, _ = c.Write(AppendOption(nil, OptExportName, []byte("tok-secret@1f2e")))
	}()
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s.ServeConn(context.Background(), sc) // returns once the refusal closed the connection
	if !strings.Contains(logs.String(), "1f2e") || strings.Contains(logs.String(), "tok-secret") {
		t.Errorf("log of a refused export name: %q; want the name without its token", logs.String())
	}
}

// heldExport holds every read until release closes, counting the bytes of reads in flight.
type heldExport struct {
	release        chan struct{}
	mu             sync.Mutex
	inFlight, peak int64
}

func (e *heldExport) Size() int64 { return 1 << 40 }

func (e *heldExport) NextData(_ context.Context, off int64) (int64, int64, error) {
	return off, e.Size(), nil
}

func (e *heldExport) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	e.mu.Lock()
	e.inFlight += int64(len(p))
	e.peak = max(e.peak, e.inFlight)
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.inFlight -= int64(len(p))
		e.mu.Unlock()
	}()
	select {
	case <-e.release:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	clear(p)
	return len(p), nil
}

// Many connections each reading MaxRequest hold no more than serverBudget of read buffers
// between them, and every read is served once the export answers.
func TestServerBoundsReadsOfManyConnections(t *testing.T) {
	ex := &heldExport{release: make(chan struct{})}
	sock := serve(t, "unix", oneExport{ex})
	n := serverBudget/MaxRequest + 4
	var conns []*rawConn
	for i := range n {
		r := dialRaw(t, sock, "x", false)
		r.write(AppendRequest(nil, Request{Type: CmdRead, Cookie: uint64(i), Length: MaxRequest}))
		conns = append(conns, r)
	}
	time.Sleep(500 * time.Millisecond) // time for the server to start every read it would
	ex.mu.Lock()
	peak := ex.peak
	ex.mu.Unlock()
	if peak > serverBudget {
		t.Errorf("%d connections had %d bytes of reads in flight at once, more than %d", n, peak, serverBudget)
	}
	close(ex.release)
	for i, r := range conns {
		h, err := ReadReplyHeader(r.c)
		if err != nil || h.Cookie != uint64(i) || h.Error != 0 {
			t.Fatalf("reply of connection %d: %+v, %v", i, h, err)
		}
		if _, err := io.CopyN(io.Discard, r.c, MaxRequest); err != nil {
			t.Fatal(err)
		}
	}
}

// Connections whose client stops reading replies give their share of the server's budget
// back after replyTimeout: other clients' reads are served again.
func TestServerStalledClientsReleaseTheBudget(t *testing.T) {
	d := replyTimeout
	t.Cleanup(func() { replyTimeout = d }) // after the server's end: cleanups run last first
	replyTimeout = 200 * time.Millisecond
	ex := &heldExport{release: make(chan struct{})}
	close(ex.release)
	sock := serve(t, "unix", oneExport{ex})
	for i := range serverBudget / MaxRequest {
		r := dialRaw(t, sock, "x", false) // never reads a reply
		r.write(AppendRequest(nil, Request{Type: CmdRead, Cookie: uint64(i), Length: MaxRequest}))
	}
	r := dialRaw(t, sock, "x", false)
	_ = r.c.SetDeadline(time.Now().Add(10 * time.Second))
	r.write(AppendRequest(nil, Request{Type: CmdRead, Cookie: 99, Length: MaxRequest}))
	h, err := ReadReplyHeader(r.c)
	if err != nil || h.Cookie != 99 || h.Error != 0 {
		t.Fatalf("read beside stalled clients: %+v, %v", h, err)
	}
}

package repo

import (
	"bufio"
	"bytes"
	"container/heap"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
)

// markSet is the set of blobs gc marks reachable, in bounded memory: a repository in front of
// a petabyte holds ~10^9 blobs, and a map entry for each (about 80 bytes) would not fit.
// Addresses are gathered in a buffer of at most limit addresses; a full buffer is sorted,
// stripped of repeats and written to a run file in a temporary directory. finish merges the
// runs into one sorted file of distinct addresses. A repository whose reachable blobs fit in
// the buffer never touches the disk.
//
// It holds full 32-byte addresses, so it answers exactly; gc's safety rests only on it never
// answering "unreachable" for an address that was added (docs/design.md, "The mark set").
// One goroutine owns it.
type markSet struct {
	dir   string // temporary directory, "" until the first run is written
	tmp   string // where dir is made
	limit int
	buf   []Address // unsorted until finish; sorted and distinct after it when runs is empty
	runs  []string
	n     int64 // distinct addresses, known after finish

	merged *os.File // the merged run (after finish, when there were runs)
	cur    *bufio.Reader
	head   Address // the merged run's next address not yet passed by contains
	more   bool
	last   Address // the last address contains was asked about
	asked  bool
}

// errMarkSet marks the mark set's own failures (a full or unwritable temporary directory), so
// that gc does not blame a backup for them.
var errMarkSet = errors.New("gc: the mark set's temporary files (set TMPDIR to a directory with space)")

// markBufferAddrs is the default buffer: 1 Mi addresses, 32 MiB.
const markBufferAddrs = 1 << 20

func newMarkSet(tmpDir string, limit int) *markSet {
	if limit <= 0 {
		limit = markBufferAddrs
	}
	return &markSet{tmp: tmpDir, limit: limit}
}

// add marks a (repeats are fine).
func (s *markSet) add(a Address) error {
	if s.buf == nil {
		// Its final size at once: growing by append would hold the old array and the new one
		// (up to 1.8 times the buffer) while it copies. The pages of a fresh large allocation
		// are the kernel's zero pages until written, so a small repository's gc costs what it
		// fills, not 32 MiB.
		s.buf = make([]Address, 0, s.limit)
	}
	s.buf = append(s.buf, a)
	if len(s.buf) >= s.limit {
		return s.spill()
	}
	return nil
}

func cmpAddr(a, b Address) int { return bytes.Compare(a[:], b[:]) }

func sortDistinct(as []Address) []Address {
	slices.SortFunc(as, cmpAddr)
	return slices.Compact(as)
}

// spill writes the buffer as one sorted run.
func (s *markSet) spill() error {
	if s.dir == "" {
		d, err := os.MkdirTemp(s.tmp, "cairn-mark-")
		if err != nil {
			return fmt.Errorf("%w: %w", errMarkSet, err)
		}
		s.dir = d
	}
	name := filepath.Join(s.dir, fmt.Sprintf("run-%06d", len(s.runs)))
	if err := writeRun(name, sortDistinct(s.buf)); err != nil {
		return err
	}
	s.runs = append(s.runs, name)
	s.buf = s.buf[:0]
	return nil
}

func writeRun(name string, as []Address) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("%w: %w", errMarkSet, err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for _, a := range as {
		w.Write(a[:])
	}
	err = w.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: %w", errMarkSet, err)
	}
	return nil
}

// finish ends adding: afterwards has and contains answer, and len counts.
func (s *markSet) finish() error {
	if len(s.runs) == 0 {
		s.buf = sortDistinct(s.buf)
		s.n = int64(len(s.buf))
		return nil
	}
	if len(s.buf) > 0 {
		if err := s.spill(); err != nil {
			return err
		}
	}
	s.buf = nil
	name := filepath.Join(s.dir, "merged")
	n, err := mergeRuns(name, s.runs)
	if err != nil {
		return err
	}
	for _, r := range s.runs {
		os.Remove(r)
	}
	s.runs = []string{name}
	s.n = n
	if s.merged, err = os.Open(name); err != nil {
		return fmt.Errorf("%w: %w", errMarkSet, err)
	}
	return s.rewind()
}

// runReader is one run being merged.
type runReader struct {
	r    *bufio.Reader
	f    *os.File
	head Address
}

type runHeap []*runReader

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return cmpAddr(h[i].head, h[j].head) < 0 }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)        { *h = append(*h, x.(*runReader)) }
func (h *runHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// mergeRuns merges sorted runs into one sorted run of distinct addresses and counts them.
// Each run costs a 64 KiB read buffer; gc's runs are few (one per 32 MiB of addresses).
func mergeRuns(name string, runs []string) (int64, error) {
	var h runHeap
	defer func() {
		for _, rr := range h {
			rr.f.Close()
		}
	}()
	for _, r := range runs {
		f, err := os.Open(r)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", errMarkSet, err)
		}
		rr := &runReader{r: bufio.NewReaderSize(f, 64<<10), f: f}
		if ok, err := rr.next(); err != nil {
			f.Close()
			return 0, err
		} else if !ok {
			f.Close()
			continue
		}
		h = append(h, rr)
	}
	heap.Init(&h)
	out, err := os.Create(name)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errMarkSet, err)
	}
	w := bufio.NewWriterSize(out, 1<<20)
	var n int64
	var prev Address
	for h.Len() > 0 {
		rr := h[0]
		if n == 0 || rr.head != prev {
			w.Write(rr.head[:])
			prev = rr.head
			n++
		}
		ok, err := rr.next()
		if err != nil {
			out.Close()
			return 0, err
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			rr.f.Close()
			heap.Pop(&h)
		}
	}
	err = w.Flush()
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errMarkSet, err)
	}
	return n, nil
}

func (rr *runReader) next() (bool, error) {
	_, err := io.ReadFull(rr.r, rr.head[:])
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%w: %w", errMarkSet, err)
	}
	return true, nil
}

func (s *markSet) rewind() error {
	if _, err := s.merged.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("%w: %w", errMarkSet, err)
	}
	if s.cur == nil {
		s.cur = bufio.NewReaderSize(s.merged, 256<<10)
	} else {
		s.cur.Reset(s.merged)
	}
	s.asked = false
	return s.advance()
}

func (s *markSet) advance() error {
	_, err := io.ReadFull(s.cur, s.head[:])
	s.more = err == nil
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %w", errMarkSet, err)
	}
	return nil
}

// len is the number of distinct addresses (after finish).
func (s *markSet) len() int64 { return s.n }

// has reports whether a was added: a binary search in memory or in the merged run.
func (s *markSet) has(a Address) (bool, error) {
	if s.merged == nil {
		_, ok := slices.BinarySearchFunc(s.buf, a, cmpAddr)
		return ok, nil
	}
	lo, hi := int64(0), s.n
	var b Address
	for lo < hi {
		mid := lo + (hi-lo)/2
		if _, err := s.merged.ReadAt(b[:], mid*int64(len(b))); err != nil {
			return false, fmt.Errorf("%w: %w", errMarkSet, err)
		}
		switch c := cmpAddr(b, a); {
		case c == 0:
			return true, nil
		case c < 0:
			lo = mid + 1
		default:
			hi = mid
		}
	}
	return false, nil
}

// contains is has for a caller that asks in ascending order (the index lists its blobs so):
// one pass over the merged run instead of a search each. Asked out of order, it searches.
func (s *markSet) contains(a Address) (bool, error) {
	if s.merged == nil || (s.asked && cmpAddr(a, s.last) < 0) {
		return s.has(a)
	}
	s.asked, s.last = true, a
	for s.more && cmpAddr(s.head, a) < 0 {
		if err := s.advance(); err != nil {
			return false, err
		}
	}
	return s.more && s.head == a, nil
}

// close removes the temporary files.
func (s *markSet) close() {
	if s.merged != nil {
		s.merged.Close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

package faulty

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Method selects backend methods as a bit set.
type Method uint

// The methods a Rule can match.
const (
	Get Method = 1 << iota
	GetRange
	Put
	Delete
	List
	Stat
	// All matches every method above.
	All = Get | GetRange | Put | Delete | List | Stat
)

var methodNames = map[Method]string{Get: "get", GetRange: "getrange", Put: "put", Delete: "delete", List: "list", Stat: "stat"}

// String names a single method.
func (m Method) String() string {
	if s, ok := methodNames[m]; ok {
		return s
	}
	return fmt.Sprintf("methods(%#x)", uint(m))
}

// Effect is what a matching rule does to a call.
type Effect int

const (
	// Fail returns the rule's error without calling the inner backend.
	Fail Effect = iota
	// FailAfter calls the inner backend, then returns the rule's error anyway: a Put that
	// landed but whose acknowledgement was lost.
	FailAfter
	// Corrupt flips one bit of the data a Get or GetRange returns; on other methods a
	// Corrupt rule counts as fired and does nothing.
	Corrupt
)

// Rule says which calls to hit and how.
type Rule struct {
	// Methods the rule applies to.
	Methods Method
	// Prefix, when set, limits the rule to calls whose key (a listing's prefix) starts with
	// it: one kind of object, such as manifests/.
	Prefix string
	// Nth hits only the Nth call (counting from 1) of the matching methods since the rule was
	// added; 0 hits calls with probability Fraction.
	Nth int
	// Fraction is the probability of hitting a call when Nth is 0; 0 means every call.
	Fraction float64
	// Times bounds how often the rule fires; 0 means without limit.
	Times int
	// Effect is what happens to a hit call.
	Effect Effect
	// Err is returned by Fail and FailAfter; nil means backend.ErrUnavailable.
	Err error
}

// Faulty is a backend.Backend that injects faults into its inner backend's calls.
type Faulty struct {
	backend.Backend

	mu    sync.Mutex // guards everything below
	rng   *rand.Rand
	rules []*rule
	calls map[Method]int
}

type rule struct {
	Rule
	seen, fired int
}

var (
	_ backend.Backend = (*Faulty)(nil)
	_ backend.Creator = (*Faulty)(nil)
)

// New wraps b; seed makes the Fraction decisions repeatable.
func New(b backend.Backend, seed uint64) *Faulty {
	return &Faulty{Backend: b, rng: rand.New(rand.NewPCG(seed, 0)), calls: make(map[Method]int)}
}

// Add adds a rule. Rules are checked in the order added; the first that fires wins.
func (f *Faulty) Add(r Rule) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &rule{Rule: r})
}

// Reset removes all rules; call counts stay.
func (f *Faulty) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

// Calls returns how many calls of the method(s) the wrapper has seen.
func (f *Faulty) Calls(m Method) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for k, c := range f.calls {
		if k&m != 0 {
			n += c
		}
	}
	return n
}

// decide counts the call and returns the rule that fires for it, if any.
func (f *Faulty) decide(m Method, key string) *Rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[m]++
	for _, r := range f.rules {
		if r.Methods&m == 0 || !strings.HasPrefix(key, r.Prefix) || (r.Times > 0 && r.fired >= r.Times) {
			continue
		}
		r.seen++
		hit := false
		switch {
		case r.Nth > 0:
			hit = r.seen == r.Nth
		case r.Fraction > 0:
			hit = f.rng.Float64() < r.Fraction
		default:
			hit = true
		}
		if hit {
			r.fired++
			rr := r.Rule
			return &rr
		}
	}
	return nil
}

// fault returns the error for a Fail or FailAfter rule.
func fault(r *Rule, m Method, key string) error {
	if r.Err != nil {
		return fmt.Errorf("faulty %s %s: %w", m, key, r.Err)
	}
	return fmt.Errorf("faulty %s %s: injected fault: %w", m, key, backend.ErrUnavailable)
}

// Get may fail, or flip a bit of the first byte read.
func (f *Faulty) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	r := f.decide(Get, key)
	if r != nil && r.Effect == Fail {
		return nil, fault(r, Get, key)
	}
	rc, err := f.Backend.Get(ctx, key)
	if err != nil || r == nil {
		return rc, err
	}
	if r.Effect == FailAfter {
		rc.Close()
		return nil, fault(r, Get, key)
	}
	return &corrupter{ReadCloser: rc}, nil
}

// GetRange may fail, or flip a bit of a byte chosen by the seeded generator.
func (f *Faulty) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	r := f.decide(GetRange, key)
	if r != nil && r.Effect == Fail {
		return nil, fault(r, GetRange, key)
	}
	data, err := f.Backend.GetRange(ctx, key, offset, length)
	if err != nil || r == nil {
		return data, err
	}
	if r.Effect == FailAfter {
		return nil, fault(r, GetRange, key)
	}
	if len(data) > 0 {
		f.mu.Lock()
		i := f.rng.IntN(len(data))
		f.mu.Unlock()
		data[i] ^= 1
	}
	return data, nil
}

// Put may fail before or after storing.
func (f *Faulty) Put(ctx context.Context, key string, data []byte) error {
	return f.call(Put, key, func() error { return f.Backend.Put(ctx, key, data) })
}

// Create may fail before or after storing, as a Put does (backend.Creator).
func (f *Faulty) Create(ctx context.Context, key string, data []byte) error {
	c, err := backend.CreatorOf(f.Backend, key)
	if err != nil {
		return err
	}
	return f.call(Put, key, func() error { return c.Create(ctx, key, data) })
}

// Delete may fail before or after deleting.
func (f *Faulty) Delete(ctx context.Context, key string) error {
	return f.call(Delete, key, func() error { return f.Backend.Delete(ctx, key) })
}

// Stat may fail before or after the lookup.
func (f *Faulty) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	var fi backend.ObjectInfo
	err := f.call(Stat, key, func() error {
		var err error
		fi, err = f.Backend.Stat(ctx, key)
		return err
	})
	return fi, err
}

// List may fail before listing, or after listing everything.
func (f *Faulty) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	return f.call(List, prefix, func() error { return f.Backend.List(ctx, prefix, fn) })
}

// ListAfter may fail like List.
func (f *Faulty) ListAfter(ctx context.Context, prefix, after string, fn func(backend.ObjectInfo) error) error {
	return f.call(List, prefix, func() error { return f.Backend.ListAfter(ctx, prefix, after, fn) })
}

// ListKeys may fail like List.
func (f *Faulty) ListKeys(ctx context.Context, prefix string, fn func(key string) error) error {
	return f.call(List, prefix, func() error { return f.Backend.ListKeys(ctx, prefix, fn) })
}

// call applies a Fail or FailAfter rule around a call without data to corrupt.
func (f *Faulty) call(m Method, key string, inner func() error) error {
	r := f.decide(m, key)
	if r != nil && r.Effect == Fail {
		return fault(r, m, key)
	}
	if err := inner(); err != nil {
		return err
	}
	if r != nil && r.Effect == FailAfter {
		return fault(r, m, key)
	}
	return nil
}

// corrupter flips the lowest bit of the first byte read.
type corrupter struct {
	io.ReadCloser
	done bool
}

func (c *corrupter) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if n > 0 && !c.done {
		p[0] ^= 1
		c.done = true
	}
	return n, err
}

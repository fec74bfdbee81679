// Package faulty wraps a backend.Backend and injects faults for tests: it fails chosen calls
// (the Nth, or a seeded fraction, of some methods, on keys with a given prefix if asked) with backend.ErrUnavailable or another error, before or
// after the inner call ran, and corrupts bytes returned by Get and GetRange. Decisions come
// from a seeded generator and per-method call counters, so a test that calls in a fixed order
// sees the same faults every run. It is for tests only and knows nothing of the inner backend.
package faulty

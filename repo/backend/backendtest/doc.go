// Package backendtest is the conformance suite every backend.Backend passes: local and s3
// directly, and the retry and limit wrappers over them. Run calls the given constructor once
// per subtest, so each subtest starts from an empty namespace. The suite knows only the
// backend.Backend contract, nothing of a particular implementation.
package backendtest

// Package slab hands out large byte buffers (pack buffers, leaf read buffers) from anonymous
// memory mappings outside the Go heap, backed by transparent huge pages where the kernel
// allows it, and keeps a bounded stock of returned ones for the next user in the process.
//
// Why: a backup touches tens of MiB of fresh buffer memory, and each 4 KiB page's first touch
// is a page fault. On a virtual machine a fault is dear: touching 17 MiB of fresh Go heap took
// 200 ms here, the same in 2 MiB huge pages 2 ms. A stocked buffer is not faulted again, and
// the collector neither scans nor frees it.
//
// A buffer is plain memory: it holds no Go pointers, and its contents on Get are whatever the
// last user left (zero only when new). It must not be used after Put. A mapping is never
// unmapped (past the stock's bound its memory is given back instead), so a reference kept by
// mistake reads wrong bytes but never crashes the process. Buffers that are never Put are
// never reclaimed: a user that may stop half-way (an error, a cancel) must return what it
// holds when it ends (see Lender). slab knows nothing of what the bytes mean.
package slab

// Package limit wraps a backend.Backend and bounds how many operations are in flight at once,
// so a backup with many workers does not open hundreds of connections to a server, and,
// optionally, the bytes a second it stores and reads (Meters, made from Rates), so backups
// leave room on a shared link. Its Meter bounds other byte streams the same way. A waiting
// call gives up as soon as its context is cancelled. It knows only the backend.Backend and
// backend.Versioned contracts, not which implementation it wraps.
package limit

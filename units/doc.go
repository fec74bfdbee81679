// Package units writes byte counts, sizes and rates in one family, binary units (KiB, MiB,
// GiB, TiB), for every place a person reads them: CLI tables and progress, job logs and the
// web console. It is a leaf: it imports nothing of cairn.
package units

// Package retention decides which backups of one volume a prune keeps. Its rules are those of
// restic's "forget --keep-*" and Proxmox Backup Server's prune: keep the N newest backups, the
// newest backup of each of the last N hours, days, ISO weeks, months and years that hold one,
// and every backup made within a duration of the newest; the rules add up, and the newest
// backup is always kept.
//
// It is pure arithmetic over ids and times and imports only the standard library. It knows
// nothing of repositories, the index, chains of incrementals or deleting: the caller decides
// what a dropped backup means (an incremental's parent may have to stay although no rule
// keeps it) and refuses to prune with empty rules.
package retention

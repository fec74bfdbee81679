// Package calendar parses systemd calendar expressions, the schedule syntax of systemd timers
// (systemd.time(7)) that Proxmox Backup Server uses too, and computes when one elapses next:
// "daily", "Mon..Fri 02:00", "*:0/15", "*-*-01 00:00", "2026-12-24 18:00 UTC".
//
// An expression is [weekdays] [date] [time] [time zone]. A missing date means every day, a
// missing time 00:00:00 and missing seconds :00. Each of year, month, day, hour, minute and
// second is "*" or a list of values, ranges (8..17) and repetitions (0/15: from 0 every 15,
// 1..20/5: 1, 6, 11, 16); "*-*~01" counts days back from the end of the month (the last day,
// "~07/1" the last seven). Times are whole seconds; years run from 1970 to 2199.
//
// Daylight saving time follows systemd: a wall time that does not exist on the day the clock
// jumps forward (02:30 in Europe/Berlin on the last Sunday of March) is skipped that day, not
// moved; a wall time the clock shows twice when it goes back fires once, at its first
// occurrence, so the repeated hour fires nothing. (Asked from inside the repeated hour, systemd
// may answer a time in it, depending on its C library's guess of the offset; Next's answer
// depends only on its argument.)
//
// The package is a leaf: it imports only the standard library and knows nothing of jobs,
// volumes or repositories; the gateway decides what a schedule starts.
package calendar

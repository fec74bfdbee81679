#!/usr/bin/env bash
# gc at scale: time and peak RSS of 'cairn repo gc' on a local repository of many backups.
# GC_BACKUPS=1000 backups of GC_SIZE (4 MiB) volumes, clones with 1% of blocks changed
# (contrib/bench/gcbench), then: the first gc (the index learns every backup first), a gc with
# nothing to do, and a gc after deleting half of the backups. Prints one line per step.
set -euo pipefail
cd "$(dirname "$0")/../.."
CAIRN=${CAIRN_BIN:-$PWD/bin/cairn}
N=${GC_BACKUPS:-1000}
SIZE=${GC_SIZE:-4194304}
DIR=$(mktemp -d /tmp/cairn-gcbench.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
go run ./contrib/bench/gcbench -repo "$DIR/repo" -backups "$N" -size "$SIZE"
export CAIRN_REPO=$DIR/repo
measure() { # label, command...
	local label=$1; shift
	/usr/bin/time -f "%e %M" -o "$DIR/time" "$@" >/dev/null
	read -r secs kib <"$DIR/time"
	printf '%-34s %7.2f s  peak RSS %4d MiB\n' "$label" "$secs" $((kib / 1024))
}
measure "gc, first (index catches up)" "$CAIRN" --quiet repo gc
measure "gc, nothing to reclaim" "$CAIRN" --quiet repo gc
ids=$("$CAIRN" --format json backup list | grep -o '"id": *"bench-[0-9]*[02468]"' | grep -o 'bench-[0-9]*')
for id in $ids; do echo "$id"; done | xargs -n 50 sh -c 'for i; do "$0" --quiet backup delete --yes "$i" >/dev/null; done' "$CAIRN"
measure "gc after deleting half" "$CAIRN" --quiet repo gc
measure "repo check" "$CAIRN" --quiet repo check

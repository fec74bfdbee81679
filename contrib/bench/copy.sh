#!/usr/bin/env bash
# cairn backup copy against restic copy, on make bench's volume image: a full backup and an
# incremental after 1 % scattered writes in each tool's repository (encrypted), then each
# copied into a second repository (another passphrase), cold caches before every copy.
# Usage: contrib/bench/copy.sh [ROUNDS]; prints each round and the medians. Needs root
# (drop_caches), restic (0.14 or later: copy --from-repo) and bin/cairn (make build).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-3}
[ "$(id -u)" = 0 ] || { echo "run as root (drop_caches)" >&2; exit 1; }
IMG=$(BENCH_IMAGE_ONLY=1 ./contrib/bench/run.sh)
BENCH_DIR=${BENCH_DIR:-$PWD/.bench}
go build -o "$BENCH_DIR/mkimage" ./contrib/bench/mkimage
CAIRN=$PWD/bin/cairn
WORK=$(mktemp -d /tmp/cairn-copy.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export CAIRN_PASSWORD=bench CAIRN_TO_PASSWORD=offsite RESTIC_PASSWORD=offsite RESTIC_FROM_PASSWORD=bench
measure() { # prints "seconds peak_rss_MiB" of "$@"
	sync; echo 3 >/proc/sys/vm/drop_caches
	/usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >/dev/null
	awk '{printf "%s %d\n", $1, $2/1024}' "$WORK/time"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A col
for r in $(seq "$ROUNDS"); do
	rm -rf "$WORK"/{ca,cb,ra,rb,vol.img}
	cp --sparse=always "$IMG" "$WORK/vol.img"
	"$CAIRN" --repo "$WORK/ca" -q repo init >/dev/null
	CAIRN_PASSWORD=offsite "$CAIRN" --repo "$WORK/cb" -q repo init >/dev/null
	RESTIC_PASSWORD=bench restic -q -r "$WORK/ra" init >/dev/null
	restic -q -r "$WORK/rb" init >/dev/null
	"$CAIRN" --repo "$WORK/ca" -q backup create "$WORK/vol.img" >/dev/null
	RESTIC_PASSWORD=bench restic -q -r "$WORK/ra" backup "$WORK/vol.img" >/dev/null
	"$BENCH_DIR/mkimage" scatter -image "$WORK/vol.img" -seed 2 -fraction 0.01 -min 4096 -max 65536 >/dev/null
	"$CAIRN" --repo "$WORK/ca" -q backup create "$WORK/vol.img" --incremental >/dev/null
	RESTIC_PASSWORD=bench restic -q -r "$WORK/ra" backup "$WORK/vol.img" >/dev/null
	read -r full inc < <("$CAIRN" --repo "$WORK/ca" -q -f json backup list |
		python3 -c 'import json,sys; print(" ".join(b["id"] for b in json.load(sys.stdin)))')
	read -r sfull sinc < <(RESTIC_PASSWORD=bench restic -r "$WORK/ra" snapshots --json |
		python3 -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)))')
	read -r cf cfm < <(measure "$CAIRN" --repo "$WORK/ca" -q backup copy "$full" --to "$WORK/cb")
	read -r ci cim < <(measure "$CAIRN" --repo "$WORK/ca" -q backup copy "$inc" --to "$WORK/cb")
	read -r rf rfm < <(measure restic -q -r "$WORK/rb" copy --from-repo "$WORK/ra" "$sfull")
	read -r ri rim < <(measure restic -q -r "$WORK/rb" copy --from-repo "$WORK/ra" "$sinc")
	cs=$(du -sm "$WORK/cb" | cut -f1) rs=$(du -sm "$WORK/rb" | cut -f1)
	echo "round $r: full cairn $cf s ($cfm MiB) restic $rf s ($rfm MiB); incremental cairn $ci s ($cim MiB) restic $ri s ($rim MiB); stored cairn $cs MiB restic $rs MiB"
	col[cf]+="$cf "; col[ci]+="$ci "; col[rf]+="$rf "; col[ri]+="$ri "
	col[cfm]+="$cfm "; col[cim]+="$cim "; col[rfm]+="$rfm "; col[rim]+="$rim "
done
m() { tr ' ' '\n' <<<"${col[$1]}" | grep . | median; }
echo "median: full copy cairn $(m cf) s, restic $(m rf) s (ratio $(echo "scale=2; $(m rf) / $(m cf)" | bc)); peak RSS $(m cfm) / $(m rfm) MiB"
echo "median: incremental copy cairn $(m ci) s, restic $(m ri) s (ratio $(echo "scale=2; $(m ri) / $(m ci)" | bc)); peak RSS $(m cim) / $(m rim) MiB"

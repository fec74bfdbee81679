#!/usr/bin/env bash
# A/B of two cairn binaries on make bench's volume image: full and incremental backup wall
# times, alternating the binaries round by round, cold caches for every step, same encryption
# and compression as make bench. Usage: contrib/bench/ab.sh OLD_BIN NEW_BIN [ROUNDS]
# Prints one line per step and the median of each binary. BENCH_SIZE etc. as for run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
OLD=$(realpath "$1") NEW=$(realpath "$2") ROUNDS=${3:-3}
[ "$(id -u)" = 0 ] || { echo "run as root (drop_caches)" >&2; exit 1; }
IMG=$(BENCH_IMAGE_ONLY=1 ./contrib/bench/run.sh)
BENCH_DIR=${BENCH_DIR:-$PWD/.bench}
go build -o "$BENCH_DIR/mkimage" ./contrib/bench/mkimage
WORK=$(mktemp -d /tmp/cairn-ab.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export CAIRN_PASSWORD=bench
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
timed() { # prints seconds of "$@" (plus a final sync)
	local t0 t1
	drop_caches
	t0=$(date +%s.%N); "$@" >/dev/null; sync; t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc
}
declare -A full inc
for r in $(seq "$ROUNDS"); do
	order=("old $OLD" "new $NEW")
	[ $((r % 2)) = 0 ] && order=("new $NEW" "old $OLD")
	for pair in "${order[@]}"; do
		set -- $pair; name=$1 bin=$2
		vol="$WORK/vol.img"; cp --sparse=always "$IMG" "$vol"
		export CAIRN_REPO="$WORK/repo-$name-$r"
		"$bin" repo init --encryption aes-256-gcm --compression zstd >/dev/null
		f=$(timed "$bin" backup create "$vol" -q)
		"$BENCH_DIR/mkimage" scatter -image "$vol" -seed 2 -fraction 0.01 -min 4096 -max 65536 >/dev/null
		i=$(timed "$bin" backup create "$vol" --incremental -q)
		full[$name]+="$f "; inc[$name]+="$i "
		printf 'round %d %-3s full %6.2f s  incremental %6.2f s\n' "$r" "$name" "$f" "$i"
		rm -rf "$CAIRN_REPO" "$vol"
	done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for name in old new; do
	printf '%-3s median: full %s s, incremental %s s\n' "$name" "$(echo "${full[$name]}" | median)" "$(echo "${inc[$name]}" | median)"
done

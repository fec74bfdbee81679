#!/usr/bin/env bash
# make fuzz: every fuzz target (decoders of repository and wire data) for FUZZTIME each.
# Usage: contrib/fuzz.sh FUZZTIME PARALLEL [GO [LANES]]
# LANES targets run at once (one after another by default), each with PARALLEL workers: CI
# runs two lanes of one worker, since most of a 3 s target's time is its build and baseline
# coverage, one core each.
#
# A target that fails with nothing but "context deadline exceeded", and wrote no failing
# input, hit Go's own race at the -fuzztime boundary (go.dev/issue/75804, fixed in Go 1.27; a
# worker still running when the deadline fires is reported as a failure). It runs once more;
# a second failure, or any failure that wrote an input or printed anything else, fails.
set -euo pipefail
fuzztime=${1:-5s} parallel=${2:-$(nproc)} go=${3:-go} lanes=${4:-1}

# boundary_race OUTPUT: the failure is the coordinator's deadline race and nothing else.
boundary_race() {
	grep -q 'context deadline exceeded' <<<"$1" &&
		! grep -q 'Failing input written to' <<<"$1" &&
		! grep -qE 'panic:|_test\.go:[0-9]+:' <<<"$1"
}

# The targets are found in the packages' test files (go list compiles nothing; go test -list
# would build every package's tests once more, without the fuzzing instrumentation).
mapfile -t pkgs < <($go list -f '{{.ImportPath}} {{.Dir}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' ./...)
[ ${#pkgs[@]} -gt 0 ] || { echo "fuzz: go list found no packages"; exit 1; }
targets=()
for line in "${pkgs[@]}"; do
	read -r pkg dir files <<<"$line"
	[ -n "$files" ] || continue
	for fz in $(cd "$dir" && grep -ho '^func Fuzz[A-Za-z0-9_]*(' $files | sed 's/^func //; s/($//' || true); do
		targets+=("$pkg $fz")
	done
done
[ ${#targets[@]} -gt 0 ] || { echo "fuzz: no fuzz targets found"; exit 1; }

# fuzz_one PKG TARGET: fuzzes one target; on a finding prints it, replays it, and fails.
fuzz_one() {
	local pkg=$1 fz=$2 out attempt
	echo "fuzz $pkg $fz ($fuzztime)"
	for attempt in 1 2; do
		if out=$($go test -run XXX -fuzz "^$fz\$" -fuzztime "$fuzztime" -parallel "$parallel" "$pkg" 2>&1); then
			return 0
		fi
		if [ "$attempt" = 1 ] && boundary_race "$out"; then
			echo "fuzz $fz: Go's -fuzztime deadline race (go.dev/issue/75804), no input found: once more"
			continue
		fi
		echo "$out" | tail -n 40
		$go test -run XXX -fuzz "^$fz\$" -fuzztime 1x "$pkg" || true
		return 1
	done
}

# Each lane takes a run of consecutive targets (go list's order, package by package), so a
# package's instrumented build is made by one lane, not by two at once. A failure fails the run
# once every lane ended.
per=$(((${#targets[@]} + lanes - 1) / lanes))
pids=()
for ((k = 0; k < lanes; k++)); do
	(
		for ((i = k * per; i < (k + 1) * per && i < ${#targets[@]}; i++)); do
			fuzz_one ${targets[$i]} || exit 1
		done
	) &
	pids+=($!)
done
rc=0
for pid in "${pids[@]}"; do
	wait "$pid" || rc=1
done
[ "$rc" = 0 ] || { echo "fuzz: a target failed (its output is above)"; exit 1; }
echo "fuzz: ${#targets[@]} targets, $fuzztime each, in $lanes lane(s)"

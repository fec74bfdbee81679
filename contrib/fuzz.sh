#!/usr/bin/env bash
# make fuzz: every fuzz target (decoders of repository and wire data) for FUZZTIME each.
# Usage: contrib/fuzz.sh FUZZTIME PARALLEL [GO]
#
# A target that fails with nothing but "context deadline exceeded", and wrote no failing
# input, hit Go's own race at the -fuzztime boundary (go.dev/issue/75804, fixed in Go 1.27; a
# worker still running when the deadline fires is reported as a failure). It runs once more;
# a second failure, or any failure that wrote an input or printed anything else, fails.
set -euo pipefail
fuzztime=${1:-5s} parallel=${2:-$(nproc)} go=${3:-go}

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
n=0
for line in "${pkgs[@]}"; do
	read -r pkg dir files <<<"$line"
	[ -n "$files" ] || continue
	for fz in $(cd "$dir" && grep -ho '^func Fuzz[A-Za-z0-9_]*(' $files | sed 's/^func //; s/($//' || true); do
		echo "fuzz $pkg $fz ($fuzztime)"
		n=$((n + 1))
		for attempt in 1 2; do
			if out=$($go test -run XXX -fuzz "^$fz\$" -fuzztime "$fuzztime" -parallel "$parallel" "$pkg" 2>&1); then
				break
			fi
			if [ "$attempt" = 1 ] && boundary_race "$out"; then
				echo "fuzz $fz: Go's -fuzztime deadline race (go.dev/issue/75804), no input found: once more"
				continue
			fi
			echo "$out" | tail -n 40
			$go test -run XXX -fuzz "^$fz\$" -fuzztime 1x "$pkg" || true
			exit 1
		done
	done
done
[ "$n" -gt 0 ] || { echo "fuzz: no fuzz targets found"; exit 1; }

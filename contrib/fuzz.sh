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

for pkg in $($go list ./...); do
	for fz in $($go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "fuzz $pkg $fz ($fuzztime)"
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

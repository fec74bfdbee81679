#!/usr/bin/env bash
# make bench, changed-block tracking: the incremental after 1 % of scattered writes, four ways,
# on the same image and the same writes, each step on cold caches:
#   cairn untracked   reads every data extent and fingerprints it (the fallback)
#   cairn reflink     the image on XFS (reflink=1), tracked: reads what FIEMAP says changed
#   cairn NBD bitmap  the image behind a qcow2 overlay with a persistent bitmap, exported by
#                     qemu-nbd -B: reads what the bitmap marks
#   restic            reads the whole file and chunks it
# on make bench's 1 GiB ext4 image and on a large non-sparse image (CBT_BIG, default 16G; 8G
# when the disk is short, and the report says so). Run by contrib/bench/run.sh, or alone:
#   contrib/bench/cbt.sh            (as root; CBT_SIZES="1G 16G" by default)
# Then CBT_FIXED (10M) of scattered writes at every size, and the tracked incrementals again:
# from the embedded CLI, and through a running 'cairn serve' (the CLI forwards to it).
# Knobs: CBT_SIZES, CBT_BIG=16G, CBT_FIXED=10M, CBT_RUNS (BENCH_RUNS, else 3: rounds of the
# fixed-change incrementals, reported as medians), CBT_VERIFY=1 (restore the tracked and bitmap
# incrementals and compare sha256), BENCH_DIR, CAIRN_BIN, BENCH_FRACTION, BENCH_ENCRYPTION, BENCH_COMPRESSION.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CAIRN=${CAIRN_BIN:-$ROOT/bin/cairn}
BENCH_DIR=${BENCH_DIR:-$ROOT/.bench}
BENCH_FRACTION=${BENCH_FRACTION:-0.01}
BENCH_ENCRYPTION=${BENCH_ENCRYPTION:-aes-256-gcm}
BENCH_COMPRESSION=${BENCH_COMPRESSION:-zstd}
CBT_BIG=${CBT_BIG:-16G}
CBT_SIZES=${CBT_SIZES:-"1G $CBT_BIG"}
CBT_VERIFY=${CBT_VERIFY:-1}
CBT_FIXED=${CBT_FIXED:-10M}
CBT_RUNS=${CBT_RUNS:-${BENCH_RUNS:-3}}

log() { printf '[cbt %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root: loop devices, mounts, drop_caches"
[ -x "$CAIRN" ] || die "$CAIRN missing: run make build"
for pair in qemu-nbd:qemu-utils mkfs.xfs:xfsprogs restic:restic jq:jq /usr/bin/time:time; do
	command -v "${pair%%:*}" >/dev/null 2>&1 || {
		[ "${BENCH_NO_INSTALL:-}" = 1 ] && die "missing ${pair#*:}"
		log "installing ${pair#*:}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pair#*:}" >/dev/null ||
			{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pair#*:}" >/dev/null; }
	}
done

WORK=$BENCH_DIR/cbt
RES=$WORK/results
mkdir -p "$BENCH_DIR"
go build -o "$BENCH_DIR/mkimage" ./contrib/bench/mkimage
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench

MNT= LOOP= NBD_PID= GW_PID=
cleanup() {
	set +e
	[ -n "$NBD_PID" ] && kill "$NBD_PID" 2>/dev/null && wait "$NBD_PID" 2>/dev/null
	[ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
	[ -n "$MNT" ] && mountpoint -q "$MNT" && umount "$MNT"
	[ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
	rm -rf "$WORK/run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
put() { printf '%s\n' "$2" >"$RES/$1"; }
get() { if [ -s "$RES/$1" ]; then cat "$RES/$1"; else echo "-"; fi; }
# timed KEY CMD...: cold caches, wall time including a final sync, peak RSS
timed() {
	local key=$1 t0 t1
	shift
	drop_caches
	t0=$(date +%s%N)
	if ! /usr/bin/time -f %M -o "$RES/$key.rss" "$@" >"$RES/$key.out" 2>"$RES/$key.err"; then
		log "$key failed: $(tail -n 3 "$RES/$key.err" | tr '\n' ' ')"
		return 1
	fi
	sync
	t1=$(date +%s%N)
	put "$key.secs" "$(awk -v n=$((t1 - t0)) 'BEGIN{printf "%.2f", n/1e9}')"
	put "$key.rss" "$(tail -n 1 "$RES/$key.rss")"
}

start_nbd() {
	qemu-nbd -r --persistent --shared=4 -k "$RUN/nbd.sock" -f qcow2 -B b0 "$XFS/nbd.qcow2" >"$RUN/qemu-nbd.log" 2>&1 &
	NBD_PID=$!
	for _ in $(seq 200); do [ -S "$RUN/nbd.sock" ] && return 0; sleep 0.05; done
	die "qemu-nbd did not start: $(cat "$RUN/qemu-nbd.log")"
}
stop_nbd() { kill "$NBD_PID"; wait "$NBD_PID" 2>/dev/null || true; NBD_PID=; rm -f "$RUN/nbd.sock"; }

# median PREFIX KEY: the median of PREFIX.rN.KEY over the CBT_RUNS rounds ("-" when none);
# spread PREFIX KEY: their min-max.
rounds() { for r in $(seq "$CBT_RUNS"); do get "$1.r$r.$2"; done | grep -v '^-$' | sort -g; }
median() { rounds "$1" "$2" | awk '{v[NR]=$1} END{if (NR == 0) print "-"; else if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
spread() { rounds "$1" "$2" | awk 'NR==1{lo=$1} {hi=$1} END{if (NR == 0) print "-"; else print lo "–" hi}'; }

# job_secs OUT: a backup's own time, from its record's created_at to updated_at (the commit):
# after the source is opened and before the base is kept, without the process (since
# 2026-12-04 a reflink incremental clones no whole image: its comparison and the clone of the
# changed ranges into the base are inside the job; before, the whole clone came before it)
job_secs() {
	jq -r '[.created_at, .updated_at] | map(capture("T(?<h>[0-9]+):(?<m>[0-9]+):(?<s>[0-9.]+)Z") | (.h|tonumber)*3600 + (.m|tonumber)*60 + (.s|tonumber)) | .[1] - .[0] | . * 100 | round / 100' "$1" 2>/dev/null || echo -
}

# a gateway on the repository: the CLI then forwards its commands to it
start_gateway() {
	$CAIRN --repo "$RUN/cairn-repo" --quiet serve >"$RUN/serve.log" 2>&1 &
	GW_PID=$!
	for _ in $(seq 200); do [ -S "$RUN/cairn-repo/cairn.sock" ] && return 0; sleep 0.05; done
	die "cairn serve did not start: $(cat "$RUN/serve.log")"
}
stop_gateway() { kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true; GW_PID=; }

# one SIZE: the whole comparison on a fresh XFS, repository and restic repository
run_size() {
	local label=$1 bytes=$2 src=$3 p=$1 cairn id changed
	RUN=$WORK/run
	rm -rf "$RUN"
	mkdir -p "$RUN"
	# XFS with reflinks on a loop device, room for the image and what changes
	truncate -s $((bytes * 2 + (2 << 30))) "$RUN/xfs.img"
	mkfs.xfs -q -m reflink=1 "$RUN/xfs.img"
	LOOP=$(losetup -f --show "$RUN/xfs.img")
	MNT=$RUN/xfs
	XFS=$MNT
	mkdir -p "$MNT"
	mount "$LOOP" "$MNT"
	log "$label: image"
	if [ -n "$src" ]; then
		cp --sparse=always "$src" "$XFS/vol.img"
	else
		"$BENCH_DIR/mkimage" fill -image "$XFS/vol.img" -size "$bytes" -seed 7
	fi
	ln "$XFS/vol.img" "$XFS/untracked.img" # the same file, managed a second time untracked
	cp --reflink=always "$XFS/vol.img" "$XFS/nbd-base.img"
	qemu-img create -q -f qcow2 -b nbd-base.img -F raw "$XFS/nbd.qcow2"
	qemu-img bitmap --add --enable "$XFS/nbd.qcow2" b0
	put "$p.used" "$(du -B1 "$XFS/vol.img" | cut -f1)"
	start_nbd

	cairn="$CAIRN --repo $RUN/cairn-repo"
	$cairn repo init -q --encryption "$BENCH_ENCRYPTION" --compression "$BENCH_COMPRESSION" >/dev/null
	$cairn volume manage "$XFS/vol.img" --name reflink -q -f json | jq -e .track_changes >/dev/null ||
		die "the image on XFS is not tracked"
	$cairn volume manage "$XFS/untracked.img" --name untracked --no-track-changes -q >/dev/null
	$cairn volume manage "nbd+unix:///?socket=$RUN/nbd.sock" --name nbd -q >/dev/null
	restic -r "$RUN/restic-repo" init -q >/dev/null

	log "$label: full backups"
	timed "$p.untracked.full" $cairn backup create untracked -q -f json
	timed "$p.reflink.full" $cairn backup create reflink -q -f json
	timed "$p.nbd.full" $cairn backup create nbd -q -f json
	timed "$p.restic.full" restic -r "$RUN/restic-repo" backup --json --host bench "$XFS/vol.img"

	log "$label: scattered writes ($BENCH_FRACTION of the volume)"
	stop_nbd
	"$BENCH_DIR/mkimage" scatter -image "$XFS/vol.img" -seed 8 -fraction "$BENCH_FRACTION" -min 4096 -max 65536 \
		-list "$RUN/writes.txt" >"$RES/$p.scatter.json"
	changed=$(jq .bytes_changed "$RES/$p.scatter.json")
	put "$p.changed" "$changed"
	put "$p.writes" "$(jq .writes "$RES/$p.scatter.json")"
	# the same writes into the qcow2 overlay, through qemu (which keeps the bitmap)
	head -c 65536 /dev/urandom >"$RUN/pattern"
	awk -v pat="$RUN/pattern" '{print "write -q -s " pat " " $1 " " $2}' "$RUN/writes.txt" |
		qemu-io -f qcow2 "$XFS/nbd.qcow2" >/dev/null
	start_nbd

	log "$label: incrementals"
	timed "$p.untracked.inc" $cairn backup create untracked --incremental -q -f json
	timed "$p.reflink.inc" $cairn backup create reflink --incremental -q -f json
	timed "$p.nbd.inc" $cairn backup create nbd --incremental --bitmap b0 -q -f json
	timed "$p.restic.inc" restic -r "$RUN/restic-repo" backup --json --host bench "$XFS/vol.img"
	for k in untracked reflink nbd; do
		put "$p.$k.read" "$(jq .read_bytes "$RES/$p.$k.inc.out")"
		put "$p.$k.mode" "$(jq -r .read_mode "$RES/$p.$k.inc.out")"
		put "$p.$k.stored" "$(jq .stored_bytes "$RES/$p.$k.inc.out")"
	done
	if [ "$CBT_VERIFY" = 1 ]; then
		log "$label: verifying the tracked incrementals by sha256"
		local want got
		want=$(sha256sum <"$XFS/vol.img" | cut -d' ' -f1)
		id=$(jq -r .id "$RES/$p.reflink.inc.out")
		got=$($cairn backup restore "$id" --to "$XFS/check.img" -q >/dev/null && sha256sum <"$XFS/check.img" | cut -d' ' -f1)
		rm -f "$XFS/check.img"
		[ "$got" = "$want" ] && put "$p.reflink.verified" ok || put "$p.reflink.verified" MISMATCH
		qemu-img convert -O raw "$XFS/nbd.qcow2" "$XFS/guest.raw"
		want=$(sha256sum <"$XFS/guest.raw" | cut -d' ' -f1)
		rm -f "$XFS/guest.raw"
		id=$(jq -r .id "$RES/$p.nbd.inc.out")
		got=$($cairn backup restore "$id" --to "$XFS/check.img" -q >/dev/null && sha256sum <"$XFS/check.img" | cut -d' ' -f1)
		rm -f "$XFS/check.img"
		[ "$got" = "$want" ] && put "$p.nbd.verified" ok || put "$p.nbd.verified" MISMATCH
	fi
	stop_nbd
	# The bitmap has marked every write since the full backup; cleared now, it marks what
	# changes after the incremental (what libvirt's checkpoints do, by hand).
	qemu-img bitmap --clear "$XFS/nbd.qcow2" b0

	# The same amount of change at every size (CBT_FIXED, default 10 MiB: 1 % of 1 GiB), so
	# the times show whether a tracked incremental costs what changed or what exists; once
	# from the embedded CLI (a cold process: scrypt on the passphrase, the index opened) and
	# once through a running gateway (the CLI forwards the command to 'cairn serve').
	local frac
	frac=$(awk -v c="$(numfmt --from=iec "$CBT_FIXED")" -v b="$bytes" 'BEGIN{printf "%.6f", c/b}')
	for how in cli gateway; do
		if [ $how = gateway ]; then
			# A gateway runs for months: its first backup after a start warms its heap, buffer
			# stock and index caches. That warm-up is one untimed incremental of each volume
			# before the writes (they read nothing: nothing changed since the last backups).
			start_nbd
			start_gateway
			$cairn backup create reflink --incremental --wait -q >/dev/null
			$cairn backup create nbd --incremental --bitmap b0 --wait -q >/dev/null
			stop_nbd
			qemu-img bitmap --clear "$XFS/nbd.qcow2" b0
		fi
		local wait= r q
		[ $how = gateway ] && wait=--wait
		# CBT_RUNS rounds of new writes and both incrementals; the report shows each figure's
		# median over the rounds and their spread, so no figure is one lucky sample.
		for r in $(seq "$CBT_RUNS"); do
			log "$label: $CBT_FIXED of scattered writes, tracked incrementals ($how, round $r of $CBT_RUNS)"
			q=$p.fixed.$how.r$r
			"$BENCH_DIR/mkimage" scatter -image "$XFS/vol.img" -seed "$([ $how = cli ] && echo 21 || echo 22)$r" -fraction "$frac" \
				-min 4096 -max 65536 -list "$RUN/writes.txt" >"$RES/$q.scatter.json"
			put "$q.changed" "$(jq .bytes_changed "$RES/$q.scatter.json")"
			# The reflink comparison walks the image's and the base's extents: their count,
			# which grows with every round of writes, is what its time follows.
			put "$q.extents" "$(xfs_io -c fiemap "$XFS/vol.img" | awk 'NR > 1 && !/hole/' | wc -l)"
			awk -v pat="$RUN/pattern" '{print "write -q -s " pat " " $1 " " $2}' "$RUN/writes.txt" |
				qemu-io -f qcow2 "$XFS/nbd.qcow2" >/dev/null
			start_nbd
			timed "$q.reflink" $cairn backup create reflink --incremental $wait -q -f json
			timed "$q.nbd" $cairn backup create nbd --incremental --bitmap b0 $wait -q -f json
			stop_nbd
			qemu-img bitmap --clear "$XFS/nbd.qcow2" b0
			for k in reflink nbd; do
				put "$q.$k.job" "$(job_secs "$RES/$q.$k.out")"
				put "$q.$k.read" "$(jq .read_bytes "$RES/$q.$k.out")"
			done
		done
		[ $how = gateway ] && stop_gateway
		for k in changed extents reflink.secs reflink.job reflink.read nbd.secs nbd.job nbd.read; do
			put "$p.fixed.$how.$k" "$(median "$p.fixed.$how" "$k")"
			put "$p.fixed.$how.$k.spread" "$(spread "$p.fixed.$how" "$k")"
		done
	done

	umount "$MNT"
	MNT=
	losetup -d "$LOOP"
	LOOP=
	rm -rf "$RUN"
}

rm -rf "$RES"
mkdir -p "$RES"
REV=$(git describe --always --dirty 2>/dev/null || echo unknown) # of the tree the binary was built from, if make build ran
NOTES=()
SIZES=()
for s in $CBT_SIZES; do
	bytes=$(numfmt --from=iec "$s")
	src=
	if [ "$s" = 1G ]; then
		src=$(BENCH_SIZE=1G BENCH_IMAGE_ONLY=1 ./contrib/bench/run.sh | tail -n 1)
	else
		# image + its copy in the restore check + repositories: about 3.5x the size
		free=$(df -B1 --output=avail "$BENCH_DIR" | tail -n 1)
		if [ "$free" -lt $((bytes * 7 / 2)) ]; then
			NOTES+=("$s needs about $(numfmt --to=iec $((bytes * 7 / 2))) free and $(numfmt --to=iec "$free") is: measured 8G instead")
			s=8G
			bytes=$(numfmt --from=iec 8G)
		fi
	fi
	SIZES+=("$s")
	run_size "$s" "$bytes" "$src"
done

mib() { awk -v b="$1" 'BEGIN{ if (b == "-" || b == "null") print "-"; else printf "%.2f", b/1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "-" || b == "-" || b <= 0) print "-"; else printf "%.2f", a/b }'; }
{
	echo "## Changed-block tracking: the incremental after $BENCH_FRACTION of scattered writes"
	echo
	echo "- $(nproc) cores, kernel $(uname -r), cairn $REV, restic $(restic version | awk '{print $2}'), qemu-nbd $(qemu-nbd --version | head -n 1 | awk '{print $2}'); load at end $(uptime | sed 's/.*load average: //')"
	echo "- each step on cold caches (drop_caches), wall time including a final sync; one repository for the three cairn volumes (aes-256-gcm, zstd), so the later fulls deduplicate against the first"
	echo "- reflink: the image on XFS (reflink=1) on a loop device; NBD: a qcow2 overlay on a reflink copy of the image with bitmap b0, the same writes through qemu-io, exported by qemu-nbd -r -B b0"
	for n in "${NOTES[@]}"; do echo "- note: $n"; done
	echo
	echo "| image | written | incremental | seconds | read, MiB | read / written | stored, MiB | mode | restore |"
	echo "|---|---|---|---|---|---|---|---|---|"
	for s in "${SIZES[@]}"; do
		for k in untracked reflink nbd; do
			echo "| $s ($(mib "$(get "$s.used")") MiB allocated) | $(mib "$(get "$s.changed")") MiB in $(get "$s.writes") writes | cairn $k | $(get "$s.$k.inc.secs") | $(mib "$(get "$s.$k.read")") | $(ratio "$(get "$s.$k.read")" "$(get "$s.changed")") | $(mib "$(get "$s.$k.stored")") | $(get "$s.$k.mode") | $(get "$s.$k.verified") |"
		done
		echo "| $s | | restic | $(get "$s.restic.inc.secs") | (whole file) | | $(mib "$(jq -s 'map(select(.message_type=="summary"))[0].data_added' "$RES/$s.restic.inc.out" 2>/dev/null || echo -)") | | |"
	done
	echo
	echo "Tracked incrementals after $CBT_FIXED of scattered writes at every size: the command's wall time (cold caches, final sync included) and the job's own (the record's created_at to its commit); each the median of $CBT_RUNS rounds of new writes, with the rounds' min–max"
	echo
	echo "| image | written | how | image's extents | reflink: command, s | job, s | read, MiB | NBD bitmap: command, s | job, s | read, MiB |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
	for s in "${SIZES[@]}"; do
		for how in cli gateway; do
			f=$s.fixed.$how
			echo "| $s | $(mib "$(get "$f.changed")") MiB | $([ $how = cli ] && echo "embedded CLI" || echo "through cairn serve") | $(get "$f.extents") ($(get "$f.extents.spread")) | $(get "$f.reflink.secs") ($(get "$f.reflink.secs.spread")) | $(get "$f.reflink.job") ($(get "$f.reflink.job.spread")) | $(mib "$(get "$f.reflink.read")") | $(get "$f.nbd.secs") ($(get "$f.nbd.secs.spread")) | $(get "$f.nbd.job") ($(get "$f.nbd.job.spread")) | $(mib "$(get "$f.nbd.read")") |"
		done
	done
	echo
	echo "| image | full backup, s: cairn untracked / reflink (after dedup) / NBD / restic | tracked vs untracked incremental |"
	echo "|---|---|---|"
	for s in "${SIZES[@]}"; do
		echo "| $s | $(get "$s.untracked.full.secs") / $(get "$s.reflink.full.secs") / $(get "$s.nbd.full.secs") / $(get "$s.restic.full.secs") | reflink $(ratio "$(get "$s.untracked.inc.secs")" "$(get "$s.reflink.inc.secs")")x, NBD $(ratio "$(get "$s.untracked.inc.secs")" "$(get "$s.nbd.inc.secs")")x faster |"
	done
} | tee "$BENCH_DIR/cbt-results.md"

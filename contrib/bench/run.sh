#!/usr/bin/env bash
# make bench: whole-process figures for cairn and restic on the same deterministic ext4 volume
# image, in one run, cold caches for every step. See docs/benchmarks.md for what is measured,
# the targets and recorded results.
#
# Knobs (environment):
#   BENCH_SIZE=1G          volume image size (develop with 128M)
#   BENCH_SEED=1           image content seed (the scattered writes use BENCH_SEED+1)
#   BENCH_FRACTION=0.01    fraction of the volume rewritten before the incremental
#   BENCH_ENCRYPTION=aes-256-gcm   cairn repository encryption (restic always encrypts)
#   BENCH_COMPRESSION=zstd cairn repository compression
#   BENCH_S3=auto|0        S3 section (needs /usr/local/bin/versitygw or versitygw in PATH)
#   BENCH_FUSE=auto|0      FUSE section (needs `cairn mount`)
#   BENCH_NBD=auto|0       NBD section (needs `cairn nbd`, qemu-img and fio's nbd engine)
#   BENCH_FIO_SECONDS=12   length of each fio run
#   BENCH_DIR=.bench       where the image cache, repositories and results live
#   CAIRN_BIN=bin/cairn    the cairn binary to measure
#   BENCH_NO_INSTALL=1     do not apt-get missing tools
#   BENCH_IMAGE_ONLY=1     build (or find) the cached image, print its path and stop
#   BENCH_RUNS=3           measured runs; every figure is the median over them
#   BENCH_CBT=1|0          changed-block tracking section (contrib/bench/cbt.sh; CBT_SIZES, CBT_BIG)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CAIRN=${CAIRN_BIN:-$ROOT/bin/cairn}
BENCH_DIR=${BENCH_DIR:-$ROOT/.bench}
BENCH_SIZE=${BENCH_SIZE:-1G}
BENCH_SEED=${BENCH_SEED:-1}
BENCH_FRACTION=${BENCH_FRACTION:-0.01}
BENCH_ENCRYPTION=${BENCH_ENCRYPTION:-aes-256-gcm}
BENCH_COMPRESSION=${BENCH_COMPRESSION:-zstd}
BENCH_S3=${BENCH_S3:-auto}
BENCH_FUSE=${BENCH_FUSE:-auto}
BENCH_NBD=${BENCH_NBD:-auto}
BENCH_FIO_SECONDS=${BENCH_FIO_SECONDS:-12}
# IMAGE_VERSION names the image recipe (mkimage + mkfs options): bump it when either changes,
# so a cached image from an older recipe is never used.
IMAGE_VERSION=1

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: the benchmark uses loop devices, mounts and drop_caches"
[ -x "$CAIRN" ] || die "$CAIRN missing: run make build (make bench does)"

# --- dependencies ---------------------------------------------------------------------------
install_deps() {
	local want=() cmd pkg
	for pair in restic:restic fio:fio mkfs.ext4:e2fsprogs debugfs:e2fsprogs /usr/bin/time:time \
		fusermount3:fuse3 losetup:util-linux jq:jq curl:curl fallocate:util-linux qemu-img:qemu-utils; do
		cmd=${pair%%:*} pkg=${pair#*:}
		command -v "$cmd" >/dev/null 2>&1 || want+=("$pkg")
	done
	[ ${#want[@]} = 0 ] && return 0
	[ "${BENCH_NO_INSTALL:-}" = 1 ] && die "missing packages: ${want[*]}"
	log "installing ${want[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${want[@]}" >/dev/null ||
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${want[@]}" >/dev/null; }
}
install_deps

SIZE=$(numfmt --from=iec "$BENCH_SIZE")
[ "$SIZE" -ge $((64 << 20)) ] || die "BENCH_SIZE must be at least 64M"
SIZE_MIB=$(awk -v s="$SIZE" 'BEGIN{printf "%.0f", s/1048576}')
WORK=$BENCH_DIR/work
RES=$WORK/results
mkdir -p "$BENCH_DIR"
rm -rf "$WORK"
mkdir -p "$RES"
: >"$WORK/loops" >"$WORK/mounts" >"$WORK/pids"
VOL=$WORK/vol.img

# --- cleanup: every loop device, mount and process this run started, even on failure --------
cleanup() {
	local m l p
	set +e
	tac "$WORK/mounts" 2>/dev/null | while read -r m; do
		mountpoint -q "$m" && { umount "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || umount -l "$m"; }
	done
	while read -r p; do kill "$p" 2>/dev/null; done <"$WORK/pids"
	tac "$WORK/loops" 2>/dev/null | while read -r l; do
		losetup "$l" >/dev/null 2>&1 && losetup -d "$l" 2>/dev/null
	done
	[ -n "${S3_PID:-}" ] && kill "$S3_PID" 2>/dev/null && wait "$S3_PID" 2>/dev/null
	rm -f "$WORK/target.img"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- results: one file per value under $RES, so steps can run in subshells ------------------
put() { printf '%s\n' "$2" >"$RES/$1"; }
get() { if [ -s "$RES/$1" ]; then cat "$RES/$1"; else echo "-"; fi; }
fail_note() { printf -- '- %s\n' "$*" >>"$RES/notes"; log "$*"; }

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# timed KEY CMD...: drops caches, runs CMD (stdout to KEY.out), then sync; records the wall
# time including that sync in KEY.secs and the peak RSS in KiB in KEY.rss.
timed() {
	local key=$1 t0 t1
	shift
	drop_caches
	t0=$(date +%s%N)
	if ! /usr/bin/time -f %M -o "$RES/$key.rss" "$@" >"$RES/$key.out" 2>"$RES/$key.err"; then
		fail_note "$key failed: $(tail -n 3 "$RES/$key.err" | tr '\n' ' ')"
		rm -f "$RES/$key.rss"
		return 1
	fi
	sync
	t1=$(date +%s%N)
	put "$key.secs" "$(awk -v n=$((t1 - t0)) 'BEGIN{printf "%.3f", n/1e9}')"
	put "$key.rss" "$(tail -n 1 "$RES/$key.rss")"
}

# step NAME FUNC: runs FUNC in a child shell with errexit in force; a failure is noted and the
# run goes on, so one broken part does not cost the figures of the others.
step() {
	local name=$1
	shift
	log "$name"
	("$@") &
	wait $! || fail_note "step '$name' failed (see $RES)"
}

mibs() { # mibs BYTES SECS
	awk -v b="$1" -v s="$2" 'BEGIN{ if (s == "-" || s <= 0) print "-"; else printf "%.1f", b/1048576/s }'
}

# new_target: a fresh loop device over a preallocated file the size of the volume, on the same
# disk as everything else; dd and every restore write to such a device.
new_target() {
	rm -f "$WORK/target.img"
	fallocate -l "$SIZE" "$WORK/target.img"
	local dev
	dev=$(losetup -f --show --direct-io=on "$WORK/target.img" 2>/dev/null || losetup -f --show "$WORK/target.img")
	echo "$dev" >>"$WORK/loops"
	echo "$dev"
}
drop_target() { losetup -d "$1"; rm -f "$WORK/target.img"; }

# verify KEY DEV: compares the first SIZE bytes of DEV with the volume by sha256.
verify() {
	local got
	got=$(head -c "$SIZE" "$2" | sha256sum | cut -d' ' -f1)
	if [ "$got" = "$(cat "$WORK/vol.sha256")" ]; then put "$1.verified" ok; else
		put "$1.verified" MISMATCH
		fail_note "$1: restored bytes differ from the volume (sha256 $got)"
	fi
}

# --- 1. the volume image, cached by recipe version, size and seed --------------------------
IMAGE=$BENCH_DIR/image-v$IMAGE_VERSION-$SIZE-s$BENCH_SEED.img
build_image() {
	local tmp=$BENCH_DIR/image.tmp tree=$BENCH_DIR/tree.tmp n uuid=6361726e-6265-6e63-6800-000000000001
	rm -rf "$tmp" "$tree"
	log "building the volume image $IMAGE"
	go build -o "$BENCH_DIR/mkimage" ./contrib/bench/mkimage
	"$BENCH_DIR/mkimage" tree -dir "$tree" -size "$SIZE" -seed "$BENCH_SEED"
	truncate -s "$SIZE" "$tmp"
	export E2FSPROGS_FAKE_TIME=1767225600 # 2026-01-01: superblock and inode creation times
	mkfs.ext4 -q -F -b 4096 -L cairnbench -U "$uuid" \
		-E "hash_seed=6361726e-6265-6e63-6800-000000000002,root_owner=0:0,nodiscard" -d "$tree" "$tmp"
	# mkfs -d copies each source inode's ctime (which no program can set) and atime: pin them.
	n=$(find "$tree" -mindepth 1 | wc -l)
	{
		for ino in 2 $(seq 11 $((11 + n))); do
			for f in ctime atime; do
				echo "set_inode_field <$ino> $f 20260101000000"
				echo "set_inode_field <$ino> ${f}_extra 0"
			done
		done
	} >"$BENCH_DIR/times.cmds"
	debugfs -w -f "$BENCH_DIR/times.cmds" "$tmp" >/dev/null 2>&1
	debugfs -R "testi <$((11 + n))>" "$tmp" 2>/dev/null | grep -q "marked in use" &&
		debugfs -R "testi <$((12 + n))>" "$tmp" 2>/dev/null | grep -q "not in use" ||
		die "image recipe: inodes are not numbered 12..$((11 + n)); times were not all pinned"
	e2fsck -fn "$tmp" >/dev/null 2>&1 || die "image recipe: e2fsck finds errors in the new image"
	unset E2FSPROGS_FAKE_TIME
	rm -rf "$tree" "$BENCH_DIR/times.cmds"
	sha256sum <"$tmp" | cut -d' ' -f1 >"$IMAGE.sha256"
	mv "$tmp" "$IMAGE"
}
[ -f "$IMAGE" ] && [ -f "$IMAGE.sha256" ] || build_image
if [ "${BENCH_IMAGE_ONLY:-}" = 1 ]; then echo "$IMAGE"; exit 0; fi
go build -o "$BENCH_DIR/mkimage" ./contrib/bench/mkimage

# --- machine and versions --------------------------------------------------------------------
put machine.nproc "$(nproc)"
put machine.cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
put machine.kernel "$(uname -r)"
put machine.mem "$(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
put load.start "$(uptime | sed 's/.*load average: //')"
put cairn.rev "$(git describe --always --dirty 2>/dev/null || echo unknown)"
put restic.version "$(restic version | awk '{print $2}')"
put fio.version "$(fio --version)"
put image.sha256 "$(cat "$IMAGE.sha256")"
put image.used "$(du -B1 "$IMAGE" | cut -f1)"
log "volume $SIZE_MIB MiB ($(get image.used) bytes allocated), load $(get load.start)"

# --- 2..5: one measured run (fresh copies of the volume and fresh repositories) ---------------
# measure fills $RES; it runs BENCH_RUNS times into $WORK/run.N, and the report shows the
# median of the runs for every figure (merge_runs below), so no figure is one lucky sample.
measure() {
rm -rf "$WORK/cairn-repo" "$WORK/restic-repo" "$WORK/s3" "$WORK/cairn-s3-state" "$WORK/restic-restore"
mkdir -p "$RES"
cp --sparse=always "$IMAGE" "$VOL"

export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
S3_ACCESS=cairnbench S3_SECRET=cairnbenchsecret0123456789 S3_BUCKET=bench

# The four clients as small scripts, so /usr/bin/time can run them (and measures the tool
# itself: each execs it).
mkdir -p "$WORK/bin"
client() { # client NAME COMMAND...: writes $WORK/bin/NAME running COMMAND "$@"
	local name=$1
	shift
	{
		echo '#!/bin/sh'
		printf 'exec'
		printf ' %q' "$@"
		echo ' "$@"'
	} >"$WORK/bin/$name"
	chmod +x "$WORK/bin/$name"
}
client cairn-local "$CAIRN" --repo "$WORK/cairn-repo"
client restic-local restic -r "$WORK/restic-repo"
PATH=$WORK/bin:$PATH

# --- 5. the S3 server (started first: it serves the full, incremental and restore steps) ----
VERSITYGW=$(command -v versitygw || echo /usr/local/bin/versitygw)
S3=0
start_s3() {
	local port i
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + RANDOM % 20000)))
	S3_ENDPOINT=http://127.0.0.1:$port
	client cairn-s3 env AWS_ACCESS_KEY_ID="$S3_ACCESS" AWS_SECRET_ACCESS_KEY="$S3_SECRET" "$CAIRN" \
		--repo "s3://$S3_BUCKET/cairn" --endpoint "$S3_ENDPOINT" --path-style path --state-dir "$WORK/cairn-s3-state"
	client restic-s3 env AWS_ACCESS_KEY_ID="$S3_ACCESS" AWS_SECRET_ACCESS_KEY="$S3_SECRET" \
		restic -r "s3:$S3_ENDPOINT/$S3_BUCKET/restic"
	mkdir -p "$WORK/s3"
	"$VERSITYGW" --access "$S3_ACCESS" --secret "$S3_SECRET" --port "127.0.0.1:$port" --quiet \
		posix "$WORK/s3" >"$WORK/versitygw.log" 2>&1 &
	S3_PID=$!
	for i in $(seq 100); do
		curl -s -o /dev/null "$S3_ENDPOINT" && break
		kill -0 "$S3_PID" 2>/dev/null || return 1
		sleep 0.1
	done
	curl -sf -X PUT -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_ACCESS:$S3_SECRET" \
		"$S3_ENDPOINT/$S3_BUCKET" >/dev/null
}
if [ "$BENCH_S3" != 0 ]; then
	if [ -x "$VERSITYGW" ]; then
		if start_s3; then S3=1; else fail_note "S3 section skipped: versitygw did not start ($(tail -n 2 "$WORK/versitygw.log" | tr '\n' ' '))"; fi
	else
		fail_note "S3 section skipped: versitygw is not installed"
	fi
fi

# --- 2/3/5. full backups of the pristine volume -----------------------------------------------
cairn_full() { # cairn_full PREFIX CLI
	local p=$1 cli=$2
	"$cli" repo init -q --encryption "$BENCH_ENCRYPTION" --compression "$BENCH_COMPRESSION" >/dev/null
	"$cli" volume manage "$VOL" --name vol -q >/dev/null
	put "$p.du0" "$(du -sb "$3" | cut -f1)"
	timed "$p.full" "$cli" backup create "$VOL" --name full -q -f json
	put "$p.du1" "$(du -sb "$3" | cut -f1)"
}
restic_full() { # restic_full PREFIX CLI DIR
	local p=$1 cli=$2
	"$cli" init -q >/dev/null
	timed "$p.full" "$cli" backup --json --host bench "$VOL"
	put "$p.du1" "$(du -sb "$3" | cut -f1)"
}
step "cairn full backup (local)" cairn_full cairn cairn-local "$WORK/cairn-repo"
step "restic full backup (local)" restic_full restic restic-local "$WORK/restic-repo"
if [ $S3 = 1 ]; then
	step "cairn full backup (S3)" cairn_full cairn_s3 cairn-s3 "$WORK/s3/$S3_BUCKET/cairn"
	step "restic full backup (S3)" restic_full restic_s3 restic-s3 "$WORK/s3/$S3_BUCKET/restic"
fi

# --- the scattered writes ----------------------------------------------------------------------
log "scattered writes: $BENCH_FRACTION of the volume, 4-64 KiB at 4 KiB-aligned offsets"
"$BENCH_DIR/mkimage" scatter -image "$VOL" -seed $((BENCH_SEED + 1)) -fraction "$BENCH_FRACTION" \
	-min 4096 -max 65536 >"$RES/scatter.json"
put changed "$(jq .bytes_changed "$RES/scatter.json")"
put writes "$(jq .writes "$RES/scatter.json")"
sha256sum <"$VOL" | cut -d' ' -f1 >"$WORK/vol.sha256"

# --- incrementals ------------------------------------------------------------------------------
cairn_inc() { # cairn_inc PREFIX CLI DIR
	local p=$1 cli=$2 id
	timed "$p.inc" "$cli" backup create "$VOL" --incremental --name inc -q -f json
	put "$p.du2" "$(du -sb "$3" | cut -f1)"
	id=$(jq -r .id "$RES/$p.inc.out")
	"$cli" backup show "$id" -f json >"$RES/$p.inc.show"
	put "$p.inc.new_bytes" "$(jq .stats.new_bytes "$RES/$p.inc.show")"
	put "$p.full.new_bytes" "$(jq .stats.new_bytes "$RES/$p.full.out")"
}
restic_inc() { # restic_inc PREFIX CLI DIR
	local p=$1 cli=$2
	timed "$p.inc" "$cli" backup --json --host bench "$VOL"
	put "$p.du2" "$(du -sb "$3" | cut -f1)"
	put "$p.inc.new_bytes" "$(jq -s 'map(select(.message_type=="summary"))[0].data_added' "$RES/$p.inc.out")"
	put "$p.full.new_bytes" "$(jq -s 'map(select(.message_type=="summary"))[0].data_added' "$RES/$p.full.out")"
}
step "cairn incremental (local)" cairn_inc cairn cairn-local "$WORK/cairn-repo"
step "restic incremental (local)" restic_inc restic restic-local "$WORK/restic-repo"
if [ $S3 = 1 ]; then
	step "cairn incremental (S3)" cairn_inc cairn_s3 cairn-s3 "$WORK/s3/$S3_BUCKET/cairn"
	step "restic incremental (S3)" restic_inc restic_s3 restic-s3 "$WORK/s3/$S3_BUCKET/restic"
fi

# --- restores: of the incremental (the newest point in time), each onto a fresh loop device ---
dd_restore() {
	local dev
	dev=$(new_target)
	timed dd.restore dd if="$VOL" of="$dev" bs=4M oflag=direct status=none
	verify dd.restore "$dev"
	drop_target "$dev"
}
cairn_restore() { # cairn_restore PREFIX CLI
	local dev
	dev=$(new_target)
	timed "$1.restore" "$2" backup restore inc --to "$dev" --yes -q
	verify "$1.restore" "$dev"
	drop_target "$dev"
}
# restic cannot restore onto a device: its restore writes a file (the figure compared), and
# `restic dump` streamed onto the loop device is shown beside it.
restic_restore() { # restic_restore PREFIX CLI
	local dir=$WORK/restic-restore
	rm -rf "$dir"
	timed "$1.restore" "$2" restore latest --target "$dir"
	rm -rf "$dir"
}
restic_dump() {
	local dev
	dev=$(new_target)
	timed restic.dump sh -c 'restic -r "$1" dump latest "$2" >"$3"' _ "$WORK/restic-repo" "$VOL" "$dev"
	verify restic.dump "$dev"
	drop_target "$dev"
}
step "dd to the loop device (oflag=direct)" dd_restore
step "cairn restore (local)" cairn_restore cairn cairn-local
step "restic restore (local)" restic_restore restic restic-local
step "restic dump to the loop device (local)" restic_dump
if [ $S3 = 1 ]; then
	step "cairn restore (S3)" cairn_restore cairn_s3 cairn-s3
	step "restic restore (S3)" restic_restore restic_s3 restic-s3
fi

# --- 4. FUSE: cairn mount against restic mount --------------------------------------------------
FUSE=0
if [ "$BENCH_FUSE" != 0 ]; then
	if "$CAIRN" mount --help >/dev/null 2>&1; then FUSE=1; else
		fail_note "FUSE section skipped: this cairn has no 'mount' command yet"
	fi
fi

# start_mount TOOL DIR: mounts TOOL's repository at DIR in the background and prints the path
# of the incremental's image once it is there.
start_mount() {
	local tool=$1 dir=$2 pid img i
	mkdir -p "$dir"
	case $tool in
	cairn)
		cairn-local mount "$dir" >"$WORK/mount.$tool.log" 2>&1 &
		img=$dir/volumes/vol/latest/disk.img
		;;
	restic)
		restic-local mount "$dir" >"$WORK/mount.$tool.log" 2>&1 &
		img=$dir/snapshots/latest${VOL}
		;;
	esac
	pid=$!
	echo "$pid" >>"$WORK/pids"
	echo "$dir" >>"$WORK/mounts"
	echo "$pid" >"$WORK/mount.$tool.pid"
	for i in $(seq 600); do
		[ -e "$img" ] && { echo "$img"; return 0; }
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	log "$tool mount: $img did not appear: $(tail -n 3 "$WORK/mount.$tool.log" | tr '\n' ' ')"
	return 1
}
stop_mount() { # stop_mount TOOL DIR
	local pid
	pid=$(cat "$WORK/mount.$1.pid")
	awk '/^VmHWM/{print $2}' "/proc/$pid/status" >>"$RES/$1.fuse.hwm" 2>/dev/null || true
	umount "$2" 2>/dev/null || fusermount3 -u "$2" 2>/dev/null || umount -l "$2"
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
	kill "$pid" 2>/dev/null || true
}
fuse_bench() { # fuse_bench TOOL
	local tool=$1 dir=$WORK/mnt-$1 img t0 t1 dev fs jobs
	# time to first byte: a fresh mount on cold caches, then the first 4 KiB of the image
	drop_caches
	t0=$(date +%s%N)
	img=$(start_mount "$tool" "$dir")
	t1=$(date +%s%N)
	put "$tool.fuse.ready_ms" "$(((t1 - t0) / 1000000))"
	t0=$(date +%s%N)
	dd if="$img" of=/dev/null bs=4k count=1 iflag=direct status=none
	t1=$(date +%s%N)
	put "$tool.fuse.ttfb_ms" "$(awk -v n=$((t1 - t0)) 'BEGIN{printf "%.1f", n/1e6}')"
	stop_mount "$tool" "$dir"
	# sequential read, cold: a fresh mount after dropping caches
	img=$(start_mount "$tool" "$dir")
	timed "$tool.fuse.seq" dd if="$img" of=/dev/null bs=1M
	stop_mount "$tool" "$dir"
	# 4 KiB random reads with O_DIRECT (the daemon, not the page cache, answers every read)
	for jobs in 1 4; do
		img=$(start_mount "$tool" "$dir")
		drop_caches
		fio --name=rand --filename="$img" --rw=randread --bs=4k --ioengine=psync --direct=1 --readonly \
			--numjobs=$jobs --time_based --runtime="$BENCH_FIO_SECONDS" --group_reporting \
			--output-format=json >"$RES/$tool.fio$jobs.json"
		put "$tool.fuse.iops$jobs" "$(jq '.jobs[0].read.iops | floor' "$RES/$tool.fio$jobs.json")"
		stop_mount "$tool" "$dir"
	done
	# file-level recovery: the ext4 inside the image, through a read-only loop device
	img=$(start_mount "$tool" "$dir")
	dev=$(losetup -r -f --show "$img")
	echo "$dev" >>"$WORK/loops"
	fs=$WORK/fs-$tool
	mkdir -p "$fs"
	mount -o ro,noload "$dev" "$fs"
	echo "$fs" >>"$WORK/mounts"
	# tar -cf /dev/null reads no file data (GNU tar spots /dev/null): count the bytes instead
	timed "$tool.fuse.tar" sh -c 'tar -cf - -C "$1" . | wc -c' _ "$fs"
	put "$tool.fuse.tar_bytes" "$(cat "$RES/$tool.fuse.tar.out")"
	umount "$fs"
	losetup -d "$dev"
	stop_mount "$tool" "$dir"
}
if [ $FUSE = 1 ]; then
	step "cairn mount" fuse_bench cairn
	step "restic mount" fuse_bench restic
fi

# --- 4b. NBD: cairn nbd, read by fio's nbd engine (libnbd) and qemu-img ------------------------
NBD=0
if [ "$BENCH_NBD" != 0 ]; then
	if ! "$CAIRN" nbd --help >/dev/null 2>&1; then
		fail_note "NBD section skipped: this cairn has no 'nbd' command yet"
	elif ! command -v qemu-img >/dev/null || ! fio --enghelp 2>/dev/null | grep -qw nbd; then
		fail_note "NBD section skipped: it needs qemu-img (qemu-utils) and a fio built with libnbd (the nbd engine)"
	else
		NBD=1
	fi
fi
# start_nbd: 'cairn nbd' on a free loopback port; prints the incremental's URI once it listens.
start_nbd() {
	local port pid i
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + RANDOM % 20000)))
	cairn-local nbd --listen "127.0.0.1:$port" >"$WORK/nbd.log" 2>&1 &
	pid=$!
	echo "$pid" >>"$WORK/pids"
	echo "$pid" >"$WORK/nbd.pid"
	for i in $(seq 600); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { echo "nbd://127.0.0.1:$port/vol/latest"; return 0; }
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.05
	done
	log "cairn nbd did not listen: $(tail -n 3 "$WORK/nbd.log" | tr '\n' ' ')"
	return 1
}
stop_nbd() {
	local pid
	pid=$(cat "$WORK/nbd.pid")
	awk '/^VmHWM/{print $2}' "/proc/$pid/status" >>"$RES/cairn.nbd.hwm" 2>/dev/null || true
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
	kill -9 "$pid" 2>/dev/null || true
}
nbd_bench() {
	local uri jobs
	# sequential read of every byte through the wire, cold: fio's nbd engine, 1 MiB reads, 4 in
	# flight (the kernel's readahead keeps several in flight for dd on the FUSE tree too)
	drop_caches
	uri=$(start_nbd)
	timed cairn.nbd.seq fio --name=seq --ioengine=nbd --uri="$uri" --rw=read --bs=1M --iodepth=4 --size="$SIZE" \
		--readonly --output-format=json
	stop_nbd
	# a restore as a user runs it: qemu-img convert to a file (holes skipped by block status)
	drop_caches
	uri=$(start_nbd)
	rm -f "$WORK/nbd-copy.raw"
	timed cairn.nbd.convert qemu-img convert -f raw -O raw "$uri" "$WORK/nbd-copy.raw"
	if [ "$(sha256sum <"$WORK/nbd-copy.raw" | cut -d' ' -f1)" = "$(cat "$WORK/vol.sha256")" ]; then
		put cairn.nbd.convert.verified ok
	else
		put cairn.nbd.convert.verified MISMATCH
		fail_note "qemu-img convert of the NBD export differs from the volume"
	fi
	rm -f "$WORK/nbd-copy.raw"
	stop_nbd
	# 4 KiB random reads, one request in flight per job (as the FUSE figures), a connection each
	for jobs in 1 4; do
		drop_caches
		uri=$(start_nbd)
		fio --name=rand --ioengine=nbd --uri="$uri" --rw=randread --bs=4k --size="$SIZE" --readonly \
			--iodepth=1 --numjobs=$jobs --time_based --runtime="$BENCH_FIO_SECONDS" --group_reporting \
			--output-format=json --output="$RES/cairn.nbdfio$jobs.json" >/dev/null
		put "cairn.nbd.iops$jobs" "$(jq '.jobs[0].read.iops | floor' "$RES/cairn.nbdfio$jobs.json")"
		stop_nbd
	done
}
if [ $NBD = 1 ]; then
	step "cairn nbd" nbd_bench
fi

[ -n "${S3_PID:-}" ] && { kill "$S3_PID" 2>/dev/null; wait "$S3_PID" 2>/dev/null || true; S3_PID=; }
put load.end "$(uptime | sed 's/.*load average: //')"
}

# merge_runs: $RES gets, for every value the runs recorded, the median over the runs when it
# is a number (the mean of the middle two for an even count), else the last run's; the notes
# of every run, each marked with its run; and the spread (min–max) of each time in KEY.spread.
merge_runs() {
	local f key vals n r
	mkdir -p "$RES"
	for f in "$WORK"/run.1/*; do
		key=$(basename "$f")
		[ "$key" = notes ] && continue
		vals=$(for r in $(seq "$BENCH_RUNS"); do # a .hwm holds several samples: each run's peak
			if [ -s "$WORK/run.$r/$key" ]; then sort -n "$WORK/run.$r/$key" | tail -n 1; fi
		done)
		n=$(printf '%s\n' "$vals" | grep -c . || true)
		if [ "$n" -gt 0 ] && [ "$(printf '%s\n' "$vals" | grep -cE '^-?[0-9]+(\.[0-9]+)?$' || true)" = "$n" ]; then
			printf '%s\n' "$vals" | sort -g | awk '{v[NR]=$1} END{ if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2 }' >"$RES/$key"
			case $key in *.secs) printf '%s\n' "$vals" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END{printf "%s–%s (%d runs)\n", lo, hi, NR}' >"$RES/${key%.secs}.spread" ;; esac
		else
			cp "$WORK/run.$BENCH_RUNS/$key" "$RES/$key" 2>/dev/null || cp "$f" "$RES/$key"
		fi
	done
	for r in $(seq "$BENCH_RUNS"); do
		[ -s "$WORK/run.$r/notes" ] && sed "s/^- /- run $r: /" "$WORK/run.$r/notes" >>"$RES/notes"
	done
	return 0
}

BENCH_RUNS=${BENCH_RUNS:-3}
RESULTS=$RES
for run in $(seq "$BENCH_RUNS"); do
	log "run $run of $BENCH_RUNS"
	RES=$WORK/run.$run
	measure
done
RES=$RESULTS
merge_runs

# --- 6. the results table -----------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "-" || b == "-" || b <= 0) print "-"; else printf "%.2f", a/b }'; }
# verdict VALUE OP TARGET: PASS or MISS (- when there is no value)
verdict() { awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN{
	if (v == "-") { print "-"; exit }
	ok = (op == ">=") ? v >= t : (op == "<=") ? v <= t : v < t
	print ok ? "PASS" : "MISS" }'; }
kib2mib() { awk -v k="$1" 'BEGIN{ if (k == "-") print "-"; else printf "%.0f", k/1024 }'; }
secs() { get "$1.secs"; }
speed() { mibs "$SIZE" "$(secs "$1")"; }
mib() { awk -v b="$1" 'BEGIN{ if (b == "-" || b == "null") print "-"; else printf "%.2f", b/1048576 }'; }
delta() { awk -v a="$(get "$1")" -v b="$(get "$2")" 'BEGIN{ if (a == "-" || b == "-") print "-"; else print b-a }'; }

hwm() { if [ -s "$RES/$1.fuse.hwm" ]; then sort -n "$RES/$1.fuse.hwm" | tail -n 1; else echo -; fi; }

report() {
	local changed p rss maxrss=0 k
	changed=$(get changed)
	echo "# cairn benchmark results"
	echo
	echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); cairn $(get cairn.rev); restic $(get restic.version); $(get fio.version)"
	echo "- machine: $(get machine.nproc) cores, $(get machine.cpu), $(get machine.mem), kernel $(get machine.kernel)"
	echo "- load average at start: $(get load.start); at end: $(get load.end)"
	echo "- volume: ${SIZE_MIB} MiB ext4 image (recipe v$IMAGE_VERSION, seed $BENCH_SEED, sha256 $(get image.sha256 | cut -c1-16)…, $(mib "$(get image.used)") MiB allocated); incremental after $(get writes) writes of 4-64 KiB changing $(mib "$changed") MiB"
	echo "- cairn repository: block size 16 KiB, compression $BENCH_COMPRESSION, encryption $BENCH_ENCRYPTION; restic: repository v2 defaults (compression auto, always encrypted)"
	echo "- every figure is the median of $BENCH_RUNS runs (BENCH_RUNS), each on a fresh copy of the volume and fresh repositories; the spread of the times is listed at the end"
	echo "- every step starts with cold caches (sync; echo 3 > /proc/sys/vm/drop_caches); times include a final sync; MiB/s = volume size / wall time"
	echo "- stored bytes: cairn reports stats.new_bytes (compressed, sealed); restic reports data_added (before compression); du is the repository's growth on disk"
	echo
	echo "## Backup and restore (local repository on the same disk)"
	echo
	echo "| step | cairn | restic | cairn/restic | peak RSS cairn / restic (MiB) |"
	echo "|---|---|---|---|---|"
	for k in full inc; do
		echo "| $( [ $k = full ] && echo "full backup" || echo "incremental backup") MiB/s (s) | $(speed cairn.$k) ($(secs cairn.$k)) | $(speed restic.$k) ($(secs restic.$k)) | $(ratio "$(speed cairn.$k)" "$(speed restic.$k)") | $(kib2mib "$(get cairn.$k.rss)") / $(kib2mib "$(get restic.$k.rss)") |"
	done
	echo "| stored by full backup, MiB (reported / du) | $(mib "$(get cairn.full.new_bytes)") / $(mib "$(delta cairn.du0 cairn.du1)") | $(mib "$(get restic.full.new_bytes)") / $(mib "$(get restic.du1)") | | |"
	echo "| stored by incremental, MiB (reported / du) | $(mib "$(get cairn.inc.new_bytes)") / $(mib "$(delta cairn.du1 cairn.du2)") | $(mib "$(get restic.inc.new_bytes)") / $(mib "$(delta restic.du1 restic.du2)") | | |"
	echo "| restore MiB/s (s) | $(speed cairn.restore) ($(secs cairn.restore)), to loop device, $(get cairn.restore.verified) | $(speed restic.restore) ($(secs restic.restore)), to a file | $(ratio "$(speed cairn.restore)" "$(speed restic.restore)") | $(kib2mib "$(get cairn.restore.rss)") / $(kib2mib "$(get restic.restore.rss)") |"
	echo "| restic dump onto the loop device MiB/s (s) | | $(speed restic.dump) ($(secs restic.dump)), $(get restic.dump.verified) | | - / $(kib2mib "$(get restic.dump.rss)") |"
	echo "| dd oflag=direct onto the loop device MiB/s (s) | $(speed dd.restore) ($(secs dd.restore)) | | | |"
	echo
	if [ $S3 = 1 ]; then
		echo "## S3 (versitygw on 127.0.0.1, posix backend on the same disk)"
		echo
		echo "| step | cairn | restic | cairn/restic | peak RSS cairn / restic (MiB) |"
		echo "|---|---|---|---|---|"
		for k in full inc restore; do
			echo "| $k MiB/s (s) | $(speed cairn_s3.$k) ($(secs cairn_s3.$k)) | $(speed restic_s3.$k) ($(secs restic_s3.$k)) | $(ratio "$(speed cairn_s3.$k)" "$(speed restic_s3.$k)") | $(kib2mib "$(get cairn_s3.$k.rss)") / $(kib2mib "$(get restic_s3.$k.rss)") |"
		done
		echo "| stored by incremental, MiB (reported) | $(mib "$(get cairn_s3.inc.new_bytes)") | $(mib "$(get restic_s3.inc.new_bytes)") | | |"
		echo
	fi
	if [ $FUSE = 1 ]; then
		echo "## FUSE: cairn mount against restic mount"
		echo
		echo "| measure | cairn | restic | cairn/restic (speed) |"
		echo "|---|---|---|---|"
		echo "| sequential read of the image, dd bs=1M, MiB/s | $(speed cairn.fuse.seq) | $(speed restic.fuse.seq) | $(ratio "$(speed cairn.fuse.seq)" "$(speed restic.fuse.seq)") |"
		echo "| 4 KiB random read IOPS, 1 job | $(get cairn.fuse.iops1) | $(get restic.fuse.iops1) | $(ratio "$(get cairn.fuse.iops1)" "$(get restic.fuse.iops1)") |"
		echo "| 4 KiB random read IOPS, 4 jobs | $(get cairn.fuse.iops4) | $(get restic.fuse.iops4) | $(ratio "$(get cairn.fuse.iops4)" "$(get restic.fuse.iops4)") |"
		echo "| mount until the image is there, ms | $(get cairn.fuse.ready_ms) | $(get restic.fuse.ready_ms) | |"
		echo "| first 4 KiB after mount, ms | $(get cairn.fuse.ttfb_ms) | $(get restic.fuse.ttfb_ms) | |"
		echo "| peak RSS of the mount process, MiB | $(kib2mib "$(hwm cairn)") | $(kib2mib "$(hwm restic)") | |"
		echo "| tar of the ext4 inside the image (loop, ro), s | $(secs cairn.fuse.tar) | $(secs restic.fuse.tar) | $(ratio "$(secs restic.fuse.tar)" "$(secs cairn.fuse.tar)") |"
		echo
	fi
	if [ $NBD = 1 ]; then
		echo "## NBD: cairn nbd (read-only export of the incremental, vol/latest)"
		echo
		echo "| measure | cairn nbd | cairn mount (FUSE) |"
		echo "|---|---|---|"
		echo "| sequential read of every byte, MiB/s (fio nbd engine bs=1M iodepth=4 / dd bs=1M) | $(speed cairn.nbd.seq) | $(speed cairn.fuse.seq) |"
		echo "| qemu-img convert to a file, MiB/s (s), sha256 | $(speed cairn.nbd.convert) ($(secs cairn.nbd.convert)), $(get cairn.nbd.convert.verified) | |"
		echo "| 4 KiB random read IOPS, 1 job | $(get cairn.nbd.iops1) | $(get cairn.fuse.iops1) |"
		echo "| 4 KiB random read IOPS, 4 jobs | $(get cairn.nbd.iops4) | $(get cairn.fuse.iops4) |"
		echo "| peak RSS of the server, MiB | $( [ -s "$RES/cairn.nbd.hwm" ] && kib2mib "$(sort -n "$RES/cairn.nbd.hwm" | tail -n 1)" || echo -) | $(kib2mib "$(hwm cairn)") |"
		echo
	fi
	for p in cairn cairn_s3; do
		for k in full inc restore; do
			rss=$(get $p.$k.rss)
			[ "$rss" != - ] && [ "$rss" -gt "$maxrss" ] && maxrss=$rss
		done
	done
	rss=$(hwm cairn)
	[ "$rss" != - ] && [ "$rss" -gt "$maxrss" ] && maxrss=$rss
	local inc_ratio full_ratio rest_ratio s3r
	full_ratio=$(ratio "$(speed cairn.full)" "$(speed restic.full)")
	inc_ratio=$(ratio "$(speed cairn.inc)" "$(speed restic.inc)")
	rest_ratio=$(ratio "$(speed cairn.restore)" "$(speed dd.restore)")
	echo "## Targets"
	echo
	echo "| target | measured | |"
	echo "|---|---|---|"
	echo "| full backup ≥ 3× restic | ${full_ratio}× | $(verdict "$full_ratio" ">=" 3) |"
	echo "| incremental ≥ 10× restic | ${inc_ratio}× | $(verdict "$inc_ratio" ">=" 10) |"
	local stored
	stored=$(ratio "$(get cairn.inc.new_bytes)" "$changed")
	echo "| incremental stores ≤ 2× the bytes changed | ${stored}× ($(mib "$(get cairn.inc.new_bytes)") of $(mib "$changed") MiB) | $(verdict "$stored" "<=" 2) |"
	echo "| restore ≥ 90% of dd oflag=direct | $(awk -v r="$rest_ratio" 'BEGIN{ if (r == "-") print "-"; else printf "%.0f%%", r*100 }') | $(verdict "$rest_ratio" ">=" 0.9) |"
	echo "| peak RSS ≤ 256 MiB (every cairn command, mount included) | $(kib2mib "$maxrss") MiB | $( [ "$maxrss" = 0 ] && echo - || verdict "$(kib2mib "$maxrss")" "<=" 256) |"
	if [ $FUSE = 1 ]; then
		local seq r1 r4
		seq=$(ratio "$(speed cairn.fuse.seq)" "$(speed restic.fuse.seq)")
		r1=$(ratio "$(get cairn.fuse.iops1)" "$(get restic.fuse.iops1)")
		r4=$(ratio "$(get cairn.fuse.iops4)" "$(get restic.fuse.iops4)")
		echo "| FUSE sequential ≥ 5× restic mount | ${seq}× | $(verdict "$seq" ">=" 5) |"
		echo "| FUSE random 4 KiB IOPS ≥ 25× restic mount (1 / 4 jobs) | ${r1}× / ${r4}× | $(verdict "$r1" ">=" 25) / $(verdict "$r4" ">=" 25) |"
		echo "| FUSE first byte < 100 ms | $(get cairn.fuse.ttfb_ms) ms | $(verdict "$(get cairn.fuse.ttfb_ms)" "<" 100) |"
	else
		echo "| FUSE targets | not measured | - |"
	fi
	if [ $S3 = 1 ]; then
		for k in full inc restore; do
			s3r=$(ratio "$(speed cairn_s3.$k)" "$(speed restic_s3.$k)")
			echo "| S3 $k ≥ 3× restic on the same server | ${s3r}× | $(verdict "$s3r" ">=" 3) |"
		done
	else
		echo "| S3 targets | not measured | - |"
	fi
	echo
	echo "## Spread of the times over the runs (seconds, min–max)"
	echo
	echo "| step | spread |"
	echo "|---|---|"
	for k in "$RES"/*.spread; do
		[ -s "$k" ] && echo "| $(basename "$k" .spread) | $(cat "$k") |"
	done
	if [ -s "$RES/notes" ]; then
		echo
		echo "## Notes"
		echo
		cat "$RES/notes"
	fi
}
report | tee "$BENCH_DIR/results.md"

# --- 7. changed-block tracking: tracked incrementals against the untracked one and restic ------
if [ "${BENCH_CBT:-1}" != 0 ]; then
	cleanup
	trap - EXIT
	echo
	CAIRN_BIN=$CAIRN BENCH_DIR=$BENCH_DIR BENCH_FRACTION=$BENCH_FRACTION BENCH_ENCRYPTION=$BENCH_ENCRYPTION \
		BENCH_COMPRESSION=$BENCH_COMPRESSION ./contrib/bench/cbt.sh && cat "$BENCH_DIR/cbt-results.md" >>"$BENCH_DIR/results.md"
fi

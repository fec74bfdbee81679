#!/usr/bin/env bash
# make demo: a full and an incremental backup of a small sample volume image, both restored
# and checked by sha256, then the backup table. Runs in a scratch repository (DEMO_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
CAIRN="${CAIRN:-$PWD/bin/cairn}"   # make demo gives the binary it built
DIR="${DEMO_DIR:-$(mktemp -d /tmp/cairn-demo.XXXXXX)}"
export CAIRN_REPO="$DIR/repo"
say() { printf '\n== %s\n' "$*"; }
# Repositories are encrypted by default: the demo's passphrase is a random one in a file
# (mode 0600), given to every command with --password-file (CAIRN_PASSWORD works too).
PASSFILE="$DIR/passphrase"
(umask 077; head -c 18 /dev/urandom | base64 > "$PASSFILE")
cairn() { "$CAIRN" --password-file "$PASSFILE" "$@"; }

say "sample volume: 64 MiB image with text, random data, duplicates and holes ($DIR/vm1.img)"
truncate -s 64M "$DIR/vm1.img"
set +o pipefail
for i in $(seq 0 3); do yes "cairn demo line $i: the quick brown fox jumps over the lazy dog" | head -c 4M | dd of="$DIR/vm1.img" bs=1M seek=$((i*8)) conv=notrunc status=none; done
set -o pipefail
head -c 8M /dev/urandom | dd of="$DIR/vm1.img" bs=1M seek=40 conv=notrunc status=none
head -c 8M /dev/urandom > "$DIR/dup"; dd if="$DIR/dup" of="$DIR/vm1.img" bs=1M seek=50 conv=notrunc status=none; rm "$DIR/dup"

say "cairn repo init (aes-256-gcm, the default; passphrase in $PASSFILE)"
cairn repo init -q >/dev/null
cairn volume manage "$DIR/vm1.img" --name vm1 >/dev/null

say "full backup"
cairn backup create vm1 --name monday -q
sha_full=$(sha256sum < "$DIR/vm1.img" | cut -d' ' -f1)

say "change ~1% of the volume, then an incremental backup"
for off in 3 17 29 45 61; do head -c 96K /dev/urandom | dd of="$DIR/vm1.img" bs=4K seek=$((off*256)) conv=notrunc status=none; done
cairn backup create vm1 --incremental --name tuesday -q
sha_inc=$(sha256sum < "$DIR/vm1.img" | cut -d' ' -f1)

say "restore both and compare by sha256"
for pair in "monday:$sha_full" "tuesday:$sha_inc"; do
  name=${pair%%:*}; want=${pair#*:}
  cairn backup restore "$name" --to "$DIR/restored-$name.img" -q >/dev/null
  got=$(sha256sum < "$DIR/restored-$name.img" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then echo "MISMATCH: $name restored $got, want $want"; exit 1; fi
  echo "$name: restored image matches the volume at backup time ($got)"
done

say "cairn backup list"
cairn backup list
say "cairn repo stats"
cairn repo stats
echo; echo "demo repository: $CAIRN_REPO (remove $DIR when done)"

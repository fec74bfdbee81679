# The scenarios of tests/vm, run by the VM's /init (busybox sh). Every result is one line
# "@@ SCENARIO KEY VALUE" on the console; vm_test.go parses them and judges. Commands' own
# output goes to the console too, for the log of a failing run. busybox sh runs its own applets
# before PATH, so util-linux losetup is called by its path. vm.only=a,b on the kernel
# command line runs only those scenarios.
export CAIRN_REPO=/tmp/repo
SCEN=setup

r() { echo "@@ $SCEN $*"; }
# j KEY CMD...: runs a cairn command with --format json, prints its output as one line and its
# exit code as KEY.rc; the output stays in $out.
j() { k=$1; shift; out=$(cairn --format json --quiet --log-file /tmp/cairn.log "$@"); rc=$?; r "$k" "$(echo "$out" | tr -d '\n')"; r "$k.rc" $rc; }
# field NAME: a string field of the JSON object in $out.
field() { echo "$out" | grep -o "\"$1\": *\"[^\"]*\"" | head -1 | sed 's/.*"\([^"]*\)"$/\1/'; }
# writer_start FILE / writer_stop: the timestamped, fsynced appender; stop prints its longest pause.
writer_start() { CAIRN_VM_HELPER=writer vmhelper "$1" /tmp/writer.res & WPID=$!; sleep 1; }
writer_stop() { kill $WPID; wait $WPID; r writer "$(cat /tmp/writer.res)"; rm -f /tmp/writer.res; }
# leftovers: logical volumes and dm devices of cairn's that are still there, but for the thin
# snapshots kept for change tracking (cairn-cbt-*), which cbt ORIGIN lists and kept counts.
leftovers() { echo $(lvs --noheadings -o lv_name 2>/dev/null | grep cairn | grep -v cairn-cbt-) $(dmsetup ls 2>/dev/null | grep cairn | grep -v cairn-cbt- | cut -f1); }
cbt() { lvs --noheadings --separator '|' -o lv_name,origin 2>/dev/null | tr -d ' ' | awk -F'|' -v o="$1" '$1 ~ /^cairn-cbt-/ && $2 == o {print $1}'; }
kept() { cbt "$1" | wc -l; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

# force DEVICE NAME: an in-use volume (a mounted ext4 with a writer) backed up with --force
# through a snapshot cairn creates and removes; the restore must be fsck-clean.
force() {
	mkfs.ext4 -q "$1" && mkdir -p /mnt/$2 && mount "$1" /mnt/$2
	r setup $?
	dd if=/dev/urandom of=/mnt/$2/data bs=1M count=4 2>/dev/null
	writer_start /mnt/$2/log
	cairn --quiet volume manage "$1" --name $2 >/dev/null
	cairn --quiet backup create $2; r refused.rc $?
	j backup backup create $2 --force
	writer_stop
	r leftovers "$(leftovers)"
	r kept "$(kept $2)"
	cairn --quiet backup restore --yes "$(field id)" --to /tmp/restored-$2.img >/dev/null; r restore.rc $?
	e2fsck -fn /tmp/restored-$2.img; r fsck.rc $?
	rm -f /tmp/restored-$2.img
	umount /mnt/$2
}

# An in-use classic LV, through a classic (COW) LVM snapshot.
scen_classic() {
	lvcreate -q -y -L 48M -n classic vg0 && force /dev/vg0/classic classic
}

# An in-use thin LV, through a thin snapshot; then 'snapshot create' of it (a thin snapshot
# too) and a backup of that.
scen_thin() {
	lvcreate -q -y -L 128M -T vg0/pool && lvcreate -q -y -V 48M -T vg0/pool -n thin && force /dev/vg0/thin thin
	j snap snapshot create thin; S=$(field id); P=$(field path)
	r snap.segtype "$(lvs --noheadings -o segtype "$P" | tr -d ' ')"
	j snapbackup backup create --snapshot-id "$S"; B=$(field id)
	r snap.sha "$(sha "$P")"
	cairn --quiet backup restore --yes "$B" --to /tmp/r.img >/dev/null; r snaprestore.rc $?
	r snaprestore.sha "$(sha /tmp/r.img)"
	rm -f /tmp/r.img
	cairn --quiet snapshot delete "$S" >/dev/null; r snapdelete.rc $?
	r snapleft "$(leftovers)"
}

# 'snapshot create' of an LV and backups from the snapshots, full then incremental: each
# restore equals its snapshot; 'snapshot delete' removes the LVs.
scen_snap() {
	lvcreate -q -y -L 16M -n plain vg0 && dd if=/dev/urandom of=/dev/vg0/plain bs=1M count=16 2>/dev/null
	r setup $?
	cairn --quiet volume manage /dev/vg0/plain --name plain >/dev/null
	j snap1 snapshot create plain; S1=$(field id); P1=$(field path)
	j full backup create --snapshot-id "$S1"; B1=$(field id)
	dd if=/dev/urandom of=/dev/vg0/plain bs=64K count=8 seek=100 conv=notrunc 2>/dev/null
	j snap2 snapshot create plain; S2=$(field id); P2=$(field path)
	j inc backup create --snapshot-id "$S2" --incremental; B2=$(field id)
	r snap1.sha "$(sha "$P1")"
	r snap2.sha "$(sha "$P2")"
	r volume.sha "$(sha /dev/vg0/plain)"
	cairn --quiet backup restore --yes "$B1" --to /tmp/r1.img >/dev/null; r restore1.rc $?
	r full.sha "$(sha /tmp/r1.img)"
	cairn --quiet backup restore --yes "$B2" --to /tmp/r2.img >/dev/null; r restore2.rc $?
	r inc.sha "$(sha /tmp/r2.img)"
	rm -f /tmp/r1.img /tmp/r2.img
	cairn --quiet snapshot delete "$S1" >/dev/null && cairn --quiet snapshot delete "$S2" >/dev/null; r delete.rc $?
	r leftovers "$(leftovers)"
}

# A plain device-mapper device (linear over a loop device): --force takes a dm-snapshot of
# cairn's own and gives the device its table back; two kept snapshots share the origin.
scen_dm() {
	truncate -s 48M /tmp/dm-lin.img && L=$(/usr/sbin/losetup -f --show /tmp/dm-lin.img) && dmsetup create lin --table "0 98304 linear $L 0" && dmsetup mknodes lin
	force /dev/mapper/lin lin
	r table "$(dmsetup table lin | cut -d' ' -f3)"
	j s1 snapshot create lin; S1=$(field id); P1=$(field path)
	dd if=/dev/urandom of=/dev/mapper/lin bs=64K count=4 seek=40 conv=notrunc 2>/dev/null
	j s2 snapshot create lin; S2=$(field id); P2=$(field path)
	dd if=/dev/urandom of=/dev/mapper/lin bs=64K count=4 seek=80 conv=notrunc 2>/dev/null
	r origin.table "$(dmsetup table lin | cut -d' ' -f3)"
	r s1.sha "$(sha "$P1")"
	r s2.sha "$(sha "$P2")"
	j full backup create --snapshot-id "$S1"; B1=$(field id)
	j inc backup create --snapshot-id "$S2" --incremental; B2=$(field id)
	cairn --quiet backup restore --yes "$B1" --to /tmp/r1.img >/dev/null; r restore1.rc $?
	r full.sha "$(sha /tmp/r1.img)"
	cairn --quiet backup restore --yes "$B2" --to /tmp/r2.img >/dev/null; r restore2.rc $?
	r inc.sha "$(sha /tmp/r2.img)"
	rm -f /tmp/r1.img /tmp/r2.img
	cairn --quiet snapshot delete "$S1" >/dev/null; r delete1.rc $?
	r after1.table "$(dmsetup table lin | cut -d' ' -f3)"
	cairn --quiet snapshot delete "$S2" >/dev/null; r delete2.rc $?
	r after2.table "$(dmsetup table lin | cut -d' ' -f3)"
	r leftovers "$(leftovers)"
	r cow.loops "$(/usr/sbin/losetup -a | grep -c cairn-cow)"
}

# Thin-volume change tracking: each backup keeps its thin snapshot; an incremental reads only
# what thin_delta reports changed since the parent's, restores byte-exact, and reads in full
# (saying why) when the kept snapshot is gone.
scen_thincbt() {
	lvs vg0/pool >/dev/null 2>&1 || lvcreate -q -y -L 128M -T vg0/pool
	lvcreate -q -y -V 16M -T vg0/pool -n tv && dd if=/dev/urandom of=/dev/vg0/tv bs=1M count=16 2>/dev/null
	r setup $?
	j vol volume manage /dev/vg0/tv --name tv
	j full backup create tv; B1=$(field id)
	r kept.full "$(lvs --noheadings -o lv_name vg0 | grep -c "cairn-cbt-$B1")"
	# 5 x 64 KiB (the pool's chunk) at scattered places, and a 4 KiB write in another chunk.
	for s in 3 50 100 170 240; do dd if=/dev/urandom of=/dev/vg0/tv bs=64K count=1 seek=$s conv=notrunc 2>/dev/null; done
	dd if=/dev/urandom of=/dev/vg0/tv bs=4K count=1 seek=4000 conv=notrunc 2>/dev/null # chunk 250
	r changed $((6 * 65536))
	j inc backup create tv --incremental; B2=$(field id)
	r kept.inc "$(cbt tv)"
	r inc.id "$B2"
	r volume.sha "$(sha /dev/vg0/tv)"
	cairn --quiet backup restore --yes "$B2" --to /tmp/r.img >/dev/null; r restore.rc $?
	r inc.sha "$(sha /tmp/r.img)"
	# An unchanged volume: nothing to read.
	j same backup create tv --incremental; B3=$(field id)
	# The kept snapshot removed behind cairn's back: a full read that says why.
	lvremove -q -y "vg0/cairn-cbt-$B3"
	dd if=/dev/urandom of=/dev/vg0/tv bs=64K count=1 seek=100 conv=notrunc 2>/dev/null
	j gone backup create tv --incremental; B4=$(field id)
	r gone.volume.sha "$(sha /dev/vg0/tv)"
	cairn --quiet backup restore --yes "$B4" --to /tmp/r.img >/dev/null; r gone.restore.rc $?
	r gone.sha "$(sha /tmp/r.img)"
	rm -f /tmp/r.img
	# The pool's metadata snapshot held by something else (a dump, a cairn that died while it
	# read it): a full read that says so and how to release it.
	dmsetup message vg0-pool-tpool 0 reserve_metadata_snap; r held.reserve $?
	dd if=/dev/urandom of=/dev/vg0/tv bs=64K count=1 seek=120 conv=notrunc 2>/dev/null
	j held backup create tv --incremental
	dmsetup message vg0-pool-tpool 0 release_metadata_snap; r held.release $?
	r pool.metasnap "$(dmsetup status vg0-pool-tpool | cut -d' ' -f7)"
	# Tracking turned off later: the kept snapshot goes at once; the next incremental reads
	# in full and keeps none. Turned on again, the backup after it keeps one.
	r kept.before.untrack "$(kept tv)"
	cairn --quiet volume update tv --no-track-changes >/dev/null; r untrack.rc $?
	r kept.untracked "$(kept tv)"
	dd if=/dev/urandom of=/dev/vg0/tv bs=64K count=1 seek=60 conv=notrunc 2>/dev/null
	j untracked backup create tv --incremental
	r kept.untracked.after "$(kept tv)"
	cairn --quiet volume update tv --track-changes >/dev/null; r retrack.rc $?
	j retracked backup create tv --incremental
	r kept.retracked "$(kept tv)"
	cairn --quiet volume unmanage tv >/dev/null; r unmanage.rc $?
	r kept.after "$(kept tv)"
	r leftovers "$(leftovers)"
}

# A --force backup killed (SIGKILL) while it reads its temporary snapshot, of an LV and of a
# plain device-mapper device: the next cairn command's recovery removes the snapshots.
scen_crash() {
	lvcreate -q -y -L 48M -n crash vg0 && mkfs.ext4 -q /dev/vg0/crash && mkdir -p /mnt/crash && mount /dev/vg0/crash /mnt/crash &&
	truncate -s 48M /tmp/dm-crash.img && L=$(/usr/sbin/losetup -f --show /tmp/dm-crash.img) &&
	dmsetup create crashdm --table "0 98304 linear $L 0" && dmsetup mknodes crashdm && mkfs.ext4 -q /dev/mapper/crashdm &&
	mkdir -p /mnt/crashdm && mount /dev/mapper/crashdm /mnt/crashdm
	r setup $?
	for v in vg0-crash:/dev/vg0/crash crashdm:/dev/mapper/crashdm; do
		dm=${v%%:*}; v=${v#*:}; n=$(basename $v)
		dd if=/dev/urandom of=/mnt/$n/data bs=1M count=12 2>/dev/null; sync
		cairn --quiet volume manage $v --name $n >/dev/null
		cairn --quiet backup create $n --force >/dev/null 2>&1 & CP=$!
		i=0
		while [ $i -lt 600 ] && ! leftovers | grep -q cairn-snap-tmp-; do sleep 0.1; i=$((i+1)); done
		kill -9 $CP; wait $CP 2>/dev/null
		r $n.before "$(leftovers)"
		r $n.state "$(dmsetup info -c --noheadings -o suspended $dm)"
		cairn --quiet --log-file /tmp/cairn.log backup list >/dev/null; r $n.list.rc $?
		r $n.after "$(leftovers)"
		r $n.table "$(dmsetup table $dm | cut -d' ' -f3)"
		umount /mnt/$n
	done
}

cairn repo init --encryption none >/dev/null; r repo_init $?
truncate -s 400M /tmp/pv0.img
PV=$(losetup -f); losetup "$PV" /tmp/pv0.img
pvcreate -q "$PV" && vgcreate -q vg0 "$PV"; r vg $?

ONLY=$(sed -n 's/.*vm\.only=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
for s in ${ONLY:-classic thin snap dm thincbt crash}; do
	SCEN=$s; T0=$(uptime_s)
	echo "== scenario $s"
	scen_$s
	grep -E '"level":"(WARN|ERROR)"' /tmp/cairn.log 2>/dev/null | sed 's/^/cairn log: /'; rm -f /tmp/cairn.log
	r seconds "$(awk -v a=$T0 -v b=$(uptime_s) 'BEGIN{print b-a}')"
done

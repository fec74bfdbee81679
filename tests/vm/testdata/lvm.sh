# The scenarios of tests/vm, run by the VM's /init (busybox sh). Every result is one line
# "@@ SCENARIO KEY VALUE" on the console; vm_test.go parses them and judges. Commands' own
# output goes to the console too, for the log of a failing run.
export CAIRN_REPO=/tmp/repo
SCEN=setup

r() { echo "@@ $SCEN $*"; }
# j KEY CMD...: runs a cairn command with --format json and prints its output as one line.
j() { k=$1; shift; out=$(cairn --format json --quiet "$@"); rc=$?; r "$k" "$(echo "$out" | tr -d '\n')"; r "$k.rc" $rc; }
# jid JSON: the first "id" in a JSON object.
jid() { echo "$1" | grep -o '"id": *"[^"]*"' | head -1 | sed 's/.*"\([^"]*\)"$/\1/'; }
# writer_start FILE / writer_stop: the timestamped, fsynced appender; stop prints its longest pause.
writer_start() { CAIRN_VM_HELPER=writer vmhelper "$1" /tmp/writer.res & WPID=$!; sleep 1; }
writer_stop() { kill $WPID; wait $WPID; r writer "$(cat /tmp/writer.res)"; rm -f /tmp/writer.res; }
# cairn_lvs: logical volumes and dm devices cairn created and left behind.
leftovers() { echo $(lvs --noheadings -o lv_name 2>/dev/null | grep cairn) $(dmsetup ls 2>/dev/null | grep cairn | cut -f1); }
t0() { T0=$(cut -d' ' -f1 /proc/uptime); }
t1() { r seconds $(awk -v a=$T0 -v b=$(cut -d' ' -f1 /proc/uptime) 'BEGIN{print b-a}'); }

cairn repo init --encryption none >/dev/null; r repo_init $?
truncate -s 400M /tmp/pv0.img
PV=$(losetup -f); losetup "$PV" /tmp/pv0.img
pvcreate -q "$PV" && vgcreate -q vg0 "$PV"; r vg $?

# An in-use classic LV: a mounted ext4 with a writer, backed up with --force through an LVM
# snapshot that cairn creates and removes.
SCEN=classic; t0
lvcreate -q -y -L 48M -n classic vg0 && mkfs.ext4 -q /dev/vg0/classic && mkdir -p /mnt/classic && mount /dev/vg0/classic /mnt/classic
r setup $?
dd if=/dev/urandom of=/mnt/classic/data bs=1M count=8 2>/dev/null
writer_start /mnt/classic/log
cairn --quiet volume manage /dev/vg0/classic --name classic >/dev/null
cairn --quiet backup create classic; r refused.rc $?
j backup backup create classic --force
writer_stop
r leftovers "$(leftovers)"
cairn --quiet backup restore --yes "$(jid "$out")" --to /tmp/classic.img; r restore.rc $?
e2fsck -fn /tmp/classic.img; r fsck.rc $?
rm -f /tmp/classic.img
umount /mnt/classic
t1

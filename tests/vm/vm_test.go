//go:build linux && vmtest

package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// helperEnv makes the test binary, copied into the initramfs, act as a helper program there
// instead of running tests (busybox's date has no nanoseconds, so the writer is Go).
const helperEnv = "CAIRN_VM_HELPER"

// CAIRN_VM_ONLY=a,b runs only those scenarios of testdata/lvm.sh (while working on one).

// bootTimeout bounds one boot of the VM, scenarios included: under TCG the whole run takes a
// few minutes; a hang fails the test instead of eating go test's -timeout.
const bootTimeout = 12 * time.Minute

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "writer" {
		os.Exit(writer(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// writer appends a timestamped line to args[0] and fsyncs it, again and again, until SIGTERM;
// then it writes "MAXGAP_MS WRITES" to args[1]: the longest time one append and fsync took,
// which is how long the file system made its user wait.
func writer(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "writer: want FILE RESULT")
		return 2
	}
	f, err := os.OpenFile(args[0], os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "writer:", err)
		return 1
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	var maxGap time.Duration
	var n int
	last := time.Now()
	line := make([]byte, 512)
	for {
		select {
		case <-stop:
			res := fmt.Sprintf("%d %d\n", maxGap.Milliseconds(), n)
			if err := os.WriteFile(args[1], []byte(res), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, "writer:", err)
				return 1
			}
			return 0
		default:
		}
		copy(line, fmt.Sprintf("%d %d\n", time.Now().UnixNano(), n))
		if _, err := f.Write(line); err != nil {
			fmt.Fprintln(os.Stderr, "writer:", err)
			return 1
		}
		if err := f.Sync(); err != nil {
			fmt.Fprintln(os.Stderr, "writer:", err)
			return 1
		}
		n++
		now := time.Now()
		maxGap = max(maxGap, now.Sub(last))
		last = now
		time.Sleep(5 * time.Millisecond)
	}
}

// results is what the VM's script printed: for each scenario, its "@@ SCENARIO KEY VALUE"
// lines as a map from key to value.
type results map[string]map[string]string

// get returns the value of key in scenario, failing the test when the script did not print it.
func (r results) get(t *testing.T, scenario, key string) string {
	t.Helper()
	v, ok := r[scenario][key]
	if !ok {
		t.Fatalf("the VM printed no %s %s (see the console log above)", scenario, key)
	}
	return v
}

// int returns the value of key in scenario as an integer.
func (r results) int(t *testing.T, scenario, key string) int64 {
	t.Helper()
	v := r.get(t, scenario, key)
	n, err := strconv.ParseInt(strings.Fields(v + " x")[0], 10, 64)
	if err != nil {
		t.Fatalf("%s %s: %q is not a number", scenario, key, v)
	}
	return n
}

var (
	bootOnce sync.Once
	bootRes  results
	bootErr  error
	bootLog  string
	bootTime time.Duration
)

// scenario boots the VM (once) and returns its results, skipping the test when CAIRN_VM_ONLY
// leaves its scenario out.
func scenario(t *testing.T, name string) results {
	t.Helper()
	if only := os.Getenv("CAIRN_VM_ONLY"); only != "" && !slices.Contains(strings.Split(only, ","), name) {
		t.Skipf("CAIRN_VM_ONLY=%s leaves scenario %s out", only, name)
	}
	return boot(t)
}

// boot builds the initramfs and runs the VM's script once for every test of the package.
func boot(t *testing.T) results {
	t.Helper()
	testutil.RequireRoot(t)
	qemu := testutil.RequireCommand(t, "qemu-system-x86_64")
	for _, c := range []string{"lvm", "dmsetup", "thin_delta", "thin_check", "mkfs.ext4", "e2fsck", "cpio", "modprobe", "busybox"} {
		testutil.RequireCommand(t, c)
	}
	kernel, release := findKernel(t)
	bootOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cairn-vm-")
		if err != nil {
			bootErr = err
			return
		}
		defer os.RemoveAll(dir)
		initrd := filepath.Join(dir, "initrd.cpio")
		if bootErr = buildInitramfs(dir, release, initrd); bootErr != nil {
			return
		}
		start := time.Now()
		bootRes, bootLog, bootErr = runVM(qemu, kernel, initrd)
		bootTime = time.Since(start)
	})
	if bootErr != nil {
		t.Fatalf("VM: %v\nconsole:\n%s", bootErr, bootLog)
	}
	return bootRes
}

// findKernel returns Debian's newest kernel image and its release, whose modules must be
// installed too.
func findKernel(t *testing.T) (string, string) {
	t.Helper()
	images, _ := filepath.Glob("/boot/vmlinuz-*")
	sort.Strings(images)
	for i := len(images) - 1; i >= 0; i-- {
		release := strings.TrimPrefix(filepath.Base(images[i]), "vmlinuz-")
		if _, err := os.Stat(filepath.Join("/lib/modules", release, "kernel/drivers/md/dm-thin-pool.ko")); err == nil {
			return images[i], release
		}
	}
	testutil.Skip(t, "needs a Debian kernel with device-mapper modules (/boot/vmlinuz-* and /lib/modules/*/kernel/drivers/md/dm-thin-pool.ko): apt-get install linux-image-amd64")
	return "", ""
}

// runVM boots the kernel with the initramfs and collects the script's result lines until it
// says it is done and the VM powers off.
func runVM(qemu, kernel, initrd string) (results, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "1024",
		"-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", kernel, "-initrd", initrd,
		"-append", "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init vm.only="+os.Getenv("CAIRN_VM_ONLY"))
	cmd.Stdin = nil
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	cmd.Stderr = cmd.Stdout
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s: %w", qemu, err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	res := results{}
	var log strings.Builder
	done := false
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	verbose := testing.Verbose()
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		log.WriteString(line + "\n")
		if verbose {
			fmt.Println("vm| " + line)
		}
		if line == "@@ end" {
			done = true
			continue
		}
		if rest, ok := strings.CutPrefix(line, "@@ "); ok {
			f := strings.SplitN(rest, " ", 3)
			if len(f) < 2 {
				continue
			}
			if res[f[0]] == nil {
				res[f[0]] = map[string]string{}
			}
			if len(f) == 3 {
				res[f[0]][f[1]] = f[2]
			} else {
				res[f[0]][f[1]] = ""
			}
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
		return res, log.String(), err
	}
	werr := cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return res, log.String(), fmt.Errorf("the VM did not finish within %v", bootTimeout)
	case !done:
		return res, log.String(), fmt.Errorf("the VM's script did not finish (qemu: %v)", werr)
	}
	return res, log.String(), nil
}

// moduleNames are the kernel modules the VM loads, with what they depend on.
var moduleNames = []string{"loop", "crc32c_generic", "dm-mod", "dm-snapshot", "dm-thin-pool", "ext4"}

// hostBinaries are the programs copied into the initramfs at their own paths, with the
// libraries ldd names for them.
var hostBinaries = []string{"lvm", "dmsetup", "thin_delta", "thin_check", "thin_dump", "thin_repair", "thin_restore",
	"mkfs.ext4", "e2fsck", "losetup"}

// lvmCommands are lvm's command names, made links to lvm.
var lvmCommands = []string{"lvs", "vgs", "pvs", "lvcreate", "lvremove", "lvchange", "lvdisplay", "lvconvert", "lvextend",
	"pvcreate", "vgcreate", "vgchange", "vgremove", "vgmknodes", "vgscan"}

// buildInitramfs assembles the VM's root: busybox, the modules, the host's lvm2, thin tools and
// e2fsprogs with their libraries, a fresh static cairn, this test binary as the writer helper,
// the script, and /init.
func buildInitramfs(dir, release, out string) error {
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "usr/bin", "usr/sbin", "etc/lvm", "proc", "sys", "dev", "tmp", "run", "mnt", "lib64", "var/tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Symlink("usr/sbin", filepath.Join(root, "sbin")); err != nil {
		return err
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return err
	}
	if err := copyWithLibs(root, busybox, "/bin/busybox"); err != nil {
		return err
	}
	// cairn, built static for the VM.
	modRoot, err := moduleRoot()
	if err != nil {
		return err
	}
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(root, "bin/cairn"), "./cmd/cairn")
	build.Dir = modRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if o, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/cairn: %v\n%s", err, o)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := copyWithLibs(root, self, "/bin/vmhelper"); err != nil {
		return err
	}
	for _, b := range hostBinaries {
		p, err := exec.LookPath(b)
		if err != nil {
			return err
		}
		if err := copyWithLibs(root, p, "/usr/sbin/"+b); err != nil {
			return err
		}
	}
	for _, c := range lvmCommands {
		if err := os.Symlink("lvm", filepath.Join(root, "usr/sbin", c)); err != nil {
			return err
		}
	}
	for _, f := range []string{"/etc/mke2fs.conf"} {
		if err := copyFile(f, filepath.Join(root, f), 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(root, "etc/lvm/lvm.conf"), []byte(lvmConf), 0o644); err != nil {
		return err
	}
	mods, err := modules(release)
	if err != nil {
		return err
	}
	var list strings.Builder
	for _, m := range mods {
		if err := copyFile(m, filepath.Join(root, m), 0o644); err != nil {
			return err
		}
		list.WriteString(m + "\n")
	}
	if err := os.WriteFile(filepath.Join(root, "etc/modules.list"), []byte(list.String()), 0o644); err != nil {
		return err
	}
	script, err := os.ReadFile("testdata/lvm.sh")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "scenarios.sh"), script, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "init"), []byte(initScript), 0o755); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	find := exec.Command("sh", "-c", "find . -print0 | cpio --null --quiet -o -H newc -R 0:0")
	var stderr strings.Builder
	find.Dir, find.Stdout, find.Stderr = root, f, &stderr
	if err := find.Run(); err != nil {
		return fmt.Errorf("cpio: %v\n%s", err, stderr.String())
	}
	return f.Close()
}

// lvmConf is lvm2's configuration without udev: lvm makes the device nodes itself.
const lvmConf = `config { checks = 1 }
devices { use_devicesfile = 0 obtain_device_list_from_udev = 0 scan = [ "/dev" ] }
activation { udev_sync = 0 udev_rules = 0 verify_udev_operations = 0 monitoring = 0 }
global { use_lvmpolld = 0 locking_dir = "/run/lock/lvm" }
`

// initScript mounts what the tools need, loads the modules, runs the scenarios and powers off.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o size=900m tmp /tmp
mount -t tmpfs run /run
mount -t tmpfs vartmp /var/tmp
mkdir -p /run/lock/lvm /run/lvm
while read m; do insmod "$m" 2>/dev/null || echo "vm: insmod $m failed"; done < /etc/modules.list
echo "@@ vm ready $(cat /proc/uptime | cut -d' ' -f1)"
sh /scenarios.sh
echo "@@ vm done $(cat /proc/uptime | cut -d' ' -f1)"
echo "@@ end"
sync
poweroff -f
`

// modules resolves moduleNames with their dependencies (modprobe --show-depends), in load order.
func modules(release string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, name := range moduleNames {
		o, err := exec.Command("modprobe", "-S", release, "--show-depends", name).Output()
		if err != nil {
			return nil, fmt.Errorf("modprobe --show-depends %s: %w", name, err)
		}
		for _, line := range strings.Split(string(o), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "insmod" || seen[f[1]] {
				continue
			}
			seen[f[1]] = true
			out = append(out, f[1])
		}
	}
	return out, nil
}

var lddLine = regexp.MustCompile(`(/\S+) \(0x`)

// copyWithLibs copies the program src to dst under root, and every library ldd names for it
// to its own path.
func copyWithLibs(root, src, dst string) error {
	if err := copyFile(src, filepath.Join(root, dst), 0o755); err != nil {
		return err
	}
	o, err := exec.Command("ldd", src).Output()
	if err != nil {
		return nil // static: "not a dynamic executable" exits 1
	}
	for _, m := range lddLine.FindAllStringSubmatch(string(o), -1) {
		lib := m[1]
		if _, err := os.Stat(filepath.Join(root, lib)); err == nil {
			continue
		}
		if err := copyFile(lib, filepath.Join(root, lib), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// copyFile copies src (following links) to dst, making its directory.
func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}

// moduleRoot finds the directory holding go.mod, upwards from the package directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above tests/vm")
		}
		dir = parent
	}
}

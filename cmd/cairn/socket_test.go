package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestSocketNeverAppearsOpen: the CLI socket is an admin's door (it runs commands as the
// gateway's user), so it must never exist at its path with a mode looser than 0600, even for
// a moment and under a permissive umask. Each time the path appears in its directory
// (inotify: created or moved in), its mode is read at once.
func TestSocketNeverAppearsOpen(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	sock := filepath.Join(dir, "cairn.sock")
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		mode os.FileMode
		err  error
	}
	modes := make(chan seen, 1024)
	go func() {
		defer close(modes)
		buf := make([]byte, 64<<10)
		for {
			n, err := unix.Read(fd, buf)
			if err != nil || n <= 0 {
				return
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := string(buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)])
				off += unix.SizeofInotifyEvent + int(ev.Len)
				if trimNUL(name) == "end" {
					return
				}
				if filepath.Base(sock) == trimNUL(name) {
					fi, err := os.Lstat(sock)
					if err != nil {
						modes <- seen{err: err}
						continue
					}
					modes <- seen{mode: fi.Mode()}
				}
			}
		}
	}()
	const rounds = 100
	for range rounds {
		l, err := listenUnix(sock)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(sock)
		if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Fatalf("the socket after listenUnix: %v %v", fi.Mode(), err)
		}
		l.Close()
		os.Remove(sock)
	}
	if err := os.WriteFile(filepath.Join(dir, "end"), nil, 0o600); err != nil { // ends the reader
		t.Fatal(err)
	}
	n := 0
	for s := range modes {
		if s.err != nil {
			continue // gone again before it could be read
		}
		n++
		if s.mode.Perm()&0o077 != 0 {
			t.Fatalf("the socket appeared at its path with mode %v", s.mode)
		}
	}
	if n == 0 {
		t.Fatal("inotify saw the socket appear no time")
	}
	if left, _ := os.ReadDir(dir); len(left) != 1 {
		t.Errorf("listenUnix left %d entries beside the socket", len(left)-1)
	}
}

func trimNUL(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return s[:i]
		}
	}
	return s
}

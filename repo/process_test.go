package repo_test

import (
	"os/exec"
	"testing"

	"github.com/cairn-backup/cairn/repo"
)

// ProcessGone judges a process as a lock's holder is judged: one of this host, boot and pid
// namespace that no longer runs (or whose pid a process started at another time now has) is
// gone; this process, a live one, and one of another host or namespace (by age alone, as
// their pids mean nothing here) are not.
func TestProcessGone(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	me := f.r.ThisProcess()
	if me.PID <= 0 || me.Host == "" {
		t.Fatalf("this process: %+v", me)
	}
	child := exec.Command("sleep", "600")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	live := me
	live.PID, live.Start = child.Process.Pid, 0
	other, space := live, live
	other.Host, space.Space = me.Host+"-twin", "another-boot/pid:[4026531836]"
	earlier := me
	earlier.Start = me.Start + 1
	for _, c := range []struct {
		what string
		p    repo.Process
		gone bool
	}{
		{"this process", me, false},
		{"a live process", live, false},
		{"no pid", repo.Process{Host: me.Host, Space: me.Space}, false},
		{"an earlier process given this one's pid", earlier, me.Start != 0},
	} {
		if got := f.r.ProcessGone(c.p); got != c.gone {
			t.Errorf("%s: gone %v, want %v", c.what, got, c.gone)
		}
	}
	_ = child.Process.Kill()
	_ = child.Wait()
	for _, c := range []struct {
		what string
		p    repo.Process
		gone bool
	}{
		{"a process that ended", live, true},
		{"one of another host of its pid", other, false},
		{"one of another boot or namespace of its pid", space, false},
	} {
		if got := f.r.ProcessGone(c.p); got != c.gone {
			t.Errorf("%s: gone %v, want %v", c.what, got, c.gone)
		}
	}
}

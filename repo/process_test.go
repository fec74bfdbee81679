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
	type want struct {
		what string
		p    repo.Process
		gone bool
	}
	check := func(cases ...want) {
		t.Helper()
		for _, c := range cases {
			if got := f.r.ProcessGone(c.p); got != c.gone {
				t.Errorf("%s: gone %v, want %v", c.what, got, c.gone)
			}
		}
	}
	check(
		want{"this process", me, false},
		want{"a live process", live, false},
		want{"no pid", repo.Process{Host: me.Host, Space: me.Space}, false},
		want{"an earlier process given this one's pid", earlier, me.Start != 0},
	)
	_ = child.Process.Kill()
	_ = child.Wait()
	check(
		want{"a process that ended", live, true},
		want{"one of another host of its pid", other, false},
		want{"one of another boot or namespace of its pid", space, false},
	)
}

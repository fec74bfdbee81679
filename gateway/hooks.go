package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/index"
)

// Hooks are commands run around a backup's point in time, for application-consistent backups
// (docs/design.md, "Hooks"): Pre quiesces what uses the volume, Post resumes it as soon as the
// point in time is taken. Only admins may give them.
type Hooks struct {
	Pre     string   `json:"pre_hook,omitempty"`
	Post    string   `json:"post_hook,omitempty"`
	Timeout Duration `json:"hook_timeout,omitempty"` // each hook's; 0: DefaultHookTimeout
}

// DefaultHookTimeout bounds a hook that gives no timeout of its own.
const DefaultHookTimeout = 5 * time.Minute

// hookOutputTail is how much of a failed hook's output its error keeps.
const hookOutputTail = 2048

func (h Hooks) empty() bool { return h.Pre == "" && h.Post == "" }

func (h Hooks) timeout() time.Duration {
	if h.Timeout > 0 {
		return time.Duration(h.Timeout)
	}
	return DefaultHookTimeout
}

// validate refuses hooks from a caller who is not an admin (a hook runs as the gateway's
// user) and a negative timeout.
func (h Hooks) validate(c Caller) error {
	if h.empty() {
		if h.Timeout != 0 {
			return invalidf("--hook-timeout bounds --pre-hook and --post-hook: give one of them, or leave it out")
		}
		return nil
	}
	if !c.Admin {
		return wrapf(ErrDenied, "only an admin may give hooks: they run as the gateway's user")
	}
	if h.Timeout < 0 {
		return invalidf("--hook-timeout %v: give a duration above zero, like 2m", time.Duration(h.Timeout))
	}
	return nil
}

// hiddenHook stands for a hook command a member is not shown.
const hiddenHook = "(set by an admin)"

// shownTo is h as caller c may see it: an admin sees the commands, a member only that there
// are hooks (a command may name hosts, keys or credentials of the admin's).
func (h Hooks) shownTo(c Caller) Hooks {
	if c.Admin {
		return h
	}
	if h.Pre != "" {
		h.Pre = hiddenHook
	}
	if h.Post != "" {
		h.Post = hiddenHook
	}
	return h
}

// hookEnv is the environment a hook runs with: the gateway's, without its CAIRN_* and AWS_*
// variables (the passphrase and the S3 keys among them), and the backup's.
func hookEnv(which string, b hookSubject, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "CAIRN_") || strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "CAIRN_HOOK="+which, "CAIRN_VOLUME_ID="+b.volume.ID, "CAIRN_VOLUME_NAME="+b.volume.Name,
		"CAIRN_VOLUME_PATH="+b.volume.Path, "CAIRN_PROJECT="+b.project)
	if b.backupID != "" {
		env = append(env, "CAIRN_BACKUP_ID="+b.backupID)
	}
	if b.snapshotID != "" {
		env = append(env, "CAIRN_SNAPSHOT_ID="+b.snapshotID)
	}
	return append(env, extra...)
}

// hookSubject is what a hook is run for: a backup of volume, or a snapshot of it. dir is where
// the hook runs: the working directory of the CLI that gave it, or "" for the gateway's (a
// policy's hooks, which no one's shell gave).
type hookSubject struct {
	backupID, snapshotID, project string
	volume                        *index.Volume
	dir                           string
}

// id is the backup's or snapshot's id, for logs.
func (b hookSubject) id() string {
	if b.backupID != "" {
		return b.backupID
	}
	return b.snapshotID
}

// runHook runs one hook command under sh -c, bounded by timeout; its error names the hook
// (pre or post, never its command: the error reaches the job's log, the policy's last error
// and the backup's notes, which the project's members see, and the command may hold an
// admin's hosts or keys) and says how it ended, with the end of its output.
func runHook(ctx context.Context, which, command, dir string, timeout time.Duration, env []string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env, cmd.Dir = env, dir
	cmd.Stdin = nil
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// Its own process group, killed whole at the timeout: a hook's children (a virsh, an ssh)
	// would otherwise outlive it and hold its output open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err == nil {
		return nil
	}
	tail := out.Bytes()
	if len(tail) > hookOutputTail {
		tail = tail[len(tail)-hookOutputTail:]
	}
	how := err.Error()
	var exit *exec.ExitError
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		how = fmt.Sprintf("killed after %v (--hook-timeout)", timeout)
	case errors.As(err, &exit):
		how = fmt.Sprintf("exit status %d", exit.ExitCode())
	}
	msg := fmt.Sprintf("%s-hook failed: %s", which, how)
	if t := strings.TrimSpace(string(tail)); t != "" {
		msg += ": " + strings.ReplaceAll(t, "\n", " | ")
	}
	return errors.New(msg)
}

// aroundPointInTime runs take between the hooks' pre and post (docs/design.md, "Hooks"): post
// runs once whenever pre started, whatever pre and take did. A failed pre is the error, take
// not run; a failed post is logged (log) and not returned: the point in time was taken.
func (s *Service) aroundPointInTime(ctx context.Context, h Hooks, sub hookSubject, log func(string, ...any), take func() error) error {
	if h.empty() {
		return take()
	}
	var err error
	if h.Pre != "" {
		err = runHook(ctx, "pre", h.Pre, sub.dir, h.timeout(), hookEnv("pre", sub))
		if err != nil {
			what := "backed up"
			if sub.backupID == "" {
				what = "snapshotted"
			}
			s.log.Warn("pre-hook failed: nothing "+what, "id", sub.id(), "volume_id", sub.volume.ID, "error", err)
			err = wrapf(ErrInvalid, "volume %s not %s: %v", sub.volume.Name, what, err)
		}
	}
	if err == nil {
		err = take()
	}
	if h.Post != "" {
		result := "ok"
		if err != nil {
			result = err.Error()
		}
		if perr := runHook(ctx, "post", h.Post, sub.dir, h.timeout(), hookEnv("post", sub, "CAIRN_HOOK_RESULT="+result)); perr != nil {
			s.log.Error("post-hook failed: what the pre-hook quiesced may still be quiesced", "id", sub.id(), "volume_id", sub.volume.ID, "error", perr)
			log("%v: what the pre-hook quiesced may still be quiesced", perr)
		}
	}
	return err
}

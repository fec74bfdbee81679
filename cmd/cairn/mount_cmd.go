package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/fusefs"
	"github.com/cairn-backup/cairn/gateway"
)

// MountCmd mounts the backups as a read-only tree of volume images.
type MountCmd struct {
	Dir        string        `arg:"" help:"Empty directory to mount on." type:"path"`
	AllowOther bool          `help:"Let other users in (allow_other, with the kernel checking modes); default is root only."`
	CacheSize  string        `help:"Bound on decompressed blocks kept in memory." default:"64M"`
	Refresh    time.Duration `help:"How often new and deleted backups show up (0 = never; SIGHUP refreshes at once)." default:"30s"`
	Debug      bool          `help:"Log every FUSE request." hidden:""`
}

// Run mounts, serves until SIGINT/SIGTERM or an external unmount, and unmounts.
func (c *MountCmd) Run(ctx context.Context, g *Globals) error {
	cache, err := parseSize(c.CacheSize)
	if err != nil {
		return mountUsageError{fmt.Errorf("--cache-size: %w", err)}
	}
	cleared, err := fusefs.PrepareMountpoint(c.Dir)
	if cleared {
		fmt.Fprintf(g.stderr, "cairn: detached a stale mount at %s left by a cairn that stopped without unmounting\n", c.Dir)
	}
	if err != nil {
		return mountUsageError{err}
	}
	g.chunkCache, g.server = cache, true
	setMemoryLimit(mountMemoryLimit, cache)
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	log, err := g.mountLogger()
	if err != nil {
		return err
	}
	o := fusefs.Options{AllowOther: c.AllowOther, Logger: log, Debug: c.Debug}
	if g.Project != gateway.DefaultProject {
		o.Project = g.Project // the admin project sees every project's backups
	}
	fsys, err := fusefs.Mount(c.Dir, s.Repository(), s.Index(), o)
	if err != nil {
		return err
	}
	// The mount owns the index: it serves the other commands on the CLI socket, as a gateway
	// does, so 'cairn backup create' works beside it; new backups show at once.
	s.OnChange(func() { fsys.Refresh(context.Background()) })
	defer s.OnChange(nil)
	sock := g.socketPath()
	stopServing, serr := serveCommands(s, sock)
	if serr != nil {
		fmt.Fprintf(g.stderr, "cairn: other commands cannot use this repository while it is mounted: %v\n", serr)
	} else {
		defer stopServing()
	}
	if !g.Quiet {
		fmt.Fprintf(g.stderr, "cairn: backups of %s mounted on %s; Ctrl-C or 'fusermount3 -u %s' unmounts\n", s.Location(), c.Dir, c.Dir)
	}
	done := make(chan struct{})
	go func() { fsys.Wait(); close(done) }()
	hup := make(chan os.Signal, 1) // SIGHUP: refresh now
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var tick <-chan time.Time
	if c.Refresh > 0 {
		t := time.NewTicker(c.Refresh)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-done:
			return nil // unmounted from outside
		case <-tick:
			refreshMount(ctx, s, fsys, log)
		case <-hup:
			refreshMount(ctx, s, fsys, log)
		case <-ctx.Done():
			stopMount(g, fsys, c.Dir, done)
			return nil
		}
	}
}

// refreshMount shows what changed since the last refresh: what other processes on the
// repository stored, deleted or changed (the catch-up a gateway runs; a change it finds
// refreshes the tree through OnChange), then the index as it is now.
func refreshMount(ctx context.Context, s *gateway.Service, fsys *fusefs.FS, log *slog.Logger) {
	if err := s.CatchUp(ctx); err != nil && ctx.Err() == nil {
		log.Warn("cannot catch up with the repository", "error", err)
	}
	fsys.Refresh(ctx)
}

// stopMount unmounts on a signal; with files still open it detaches lazily, so the mount
// leaves now and the process ends when the last reader closes.
func stopMount(g *Globals, fsys *fusefs.FS, dir string, done <-chan struct{}) {
	var err error
	for range 10 {
		if err = fsys.Unmount(); err == nil {
			<-done
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(g.stderr, "cairn: %v; detaching lazily: it goes away when the last open file closes\n", err)
	if err := fusefs.Detach(dir); err != nil {
		fmt.Fprintf(g.stderr, "cairn: %v\n", err)
		return
	}
	<-done
}

// mountLogger logs to --log-file, else warnings and failed reads to stderr: a mount is a
// foreground process whose stderr an admin watches.
func (g *Globals) mountLogger() (*slog.Logger, error) {
	if g.LogFile != "" {
		return g.logger()
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), nil
}

// mountUsageError marks a usage error (exit code 2) without changing its message.
type mountUsageError struct{ err error }

func (e mountUsageError) Error() string        { return e.err.Error() }
func (e mountUsageError) Unwrap() error        { return e.err }
func (e mountUsageError) Is(target error) bool { return target == gateway.ErrInvalid }

// serveCommands runs the CLI's commands sent to sock against svc (see execHandler) until
// the returned stop is called.
func serveCommands(svc *gateway.Service, sock string) (stop func(), err error) {
	if sock == "" {
		return nil, errors.New("no socket path")
	}
	if socketAlive(sock) {
		return nil, fmt.Errorf("%w at %s", errGatewayRunning, sock)
	}
	l, err := listenUnix(sock)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(execPath, execHandler(svc))
	mux.Handle(repositoryPath, repositoryHandler(svc))
	// Commands still running when the mount stops are interrupted (a backup cleans itself
	// up as on Ctrl-C) before the service closes under them.
	base, interrupt := context.WithCancel(context.Background())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return base }}
	done := make(chan struct{})
	go func() { _ = srv.Serve(l); close(done) }()
	return func() {
		interrupt()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
		_ = os.Remove(sock)
	}, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/api"
	"golang.org/x/sync/errgroup"
)

// ServeCmd runs the gateway: one process owns the repository and runs backups and restores
// on background workers, serves the CLI on a unix socket and, when asked, the Block Storage
// v3 API on TCP and the FUSE tree.
type ServeCmd struct {
	Listen     string `help:"Serve the Block Storage v3 API on this TCP address too (opt-in), e.g. 127.0.0.1:8776." placeholder:"ADDR"`
	Auth       string `help:"API authentication: ${enum}; token checks --tokens, noauth trusts X-User-Id/X-Project-Id (tests and labs only)." enum:"token,noauth" default:"token"`
	Tokens     string `help:"Tokens file: one 'TOKEN USER PROJECT ROLE[,ROLE...]' per line; role admin makes an admin, role metrics alone a token that only reads /metrics." type:"existingfile" placeholder:"FILE"`
	Users      string `help:"Users file ('cairn user add'): its users sign in with a password at http://ADDR/identity/v3, as with Keystone (cinder --os-auth-url, an openrc); read again when it changes." env:"CAIRN_USERS" type:"existingfile" placeholder:"FILE"`
	JobWorkers int    `help:"Backups and restores run at once." default:"2"`
	Mount      string `help:"Mount the FUSE tree of backups here; new backups appear as they become available." placeholder:"DIR"`
	AllowOther bool   `help:"With --mount: let other users read the tree (default_permissions applies)."`
	CacheSize  string `help:"With --mount: decompressed block cache." default:"64M"`
	Policies   bool   `help:"Run the repository's policies (with several gateways on one repository, each run happens on one of them; --no-policies on a gateway that cannot reach the policies' volumes)." default:"true" negatable:""`
	NBD        string `help:"Serve every available backup read-only over NBD on this TCP address too, e.g. 127.0.0.1:10809; beyond loopback it needs --auth token and --tokens or --users (export names TOKEN@BACKUP_ID)." name:"nbd" placeholder:"ADDR"`
	UI         bool   `help:"Serve the web console at /ui/ on the --listen address (sign-in with a user of --users or a token of --tokens; never on the unix socket)." default:"true" negatable:""`
	PublicURL  string `help:"The console's address as browsers reach it through a TLS-terminating reverse proxy, e.g. https://backup.example.com: its forms must come from there, and https marks the session cookie Secure." name:"public-url" placeholder:"URL"`
}

// Run serves until SIGINT or SIGTERM.
func (c *ServeCmd) Run(ctx context.Context, g *Globals) error {
	g.serving, g.server = true, true
	if c.JobWorkers < 1 {
		return gateway.Errorf(gateway.ErrInvalid, "--job-workers %d: give at least 1 (backups and restores that run at once)", c.JobWorkers)
	}
	if err := checkListen("--listen", c.Listen, "127.0.0.1:8776"); err != nil {
		return err
	}
	if err := checkListen("--nbd", c.NBD, "127.0.0.1:10809"); err != nil {
		return err
	}
	if c.Auth == "token" && c.Tokens == "" && c.Users == "" && c.Listen != "" {
		return gateway.Errorf(gateway.ErrInvalid, "--auth token needs --tokens FILE or --users FILE (or use --auth noauth for a lab)")
	}
	var users *api.Users
	if c.Users != "" {
		if c.Auth != api.AuthToken {
			return gateway.Errorf(gateway.ErrInvalid, "--users needs --auth token: with --auth %s anyone may claim to be any user", c.Auth)
		}
		var err error
		if users, err = api.LoadUsers(c.Users); err != nil {
			return gateway.Errorf(gateway.ErrInvalid, "--users: %v", err)
		}
	}
	var tokens api.Tokens
	if c.Tokens != "" {
		var err error
		if tokens, err = api.LoadTokens(c.Tokens); err != nil {
			return gateway.Errorf(gateway.ErrInvalid, "--tokens: %v", err)
		}
	}
	nbdOpts, err := c.nbdOptions(tokens, users)
	if err != nil {
		return err
	}
	if c.Mount != "" {
		n, err := parseSize(c.CacheSize)
		if err != nil {
			return gateway.Errorf(gateway.ErrInvalid, "--cache-size: %v", err)
		}
		g.chunkCache = n
		setMemoryLimit(baseMemoryLimit, n)
	}
	sock := g.socketPath()
	if socketAlive(sock) {
		if other := socketRepository(sock); other != "" {
			if cfg, err := g.config(); err == nil && !gateway.SameRepository(cfg.Repo, other) {
				return gateway.Errorf(gateway.ErrConflict, "the cairn process on %s serves %s, another repository: give this repository a --state-dir of its own (it holds one repository's socket and index)", sock, other)
			}
		}
		return gateway.Errorf(gateway.ErrConflict, "%v at %s: stop it first; commands reach it through that socket", errGatewayRunning, sock)
	}
	svc, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer svc.Close()
	log := g.log
	svc.StartWorkers(c.JobWorkers)
	hbCtx, stopHB := context.WithCancel(context.WithoutCancel(ctx))
	// The catch-ups and policy runs end before svc.Close (deferred above, so run after this):
	// one that outlived it read and wrote an index closed under it.
	var background sync.WaitGroup
	defer func() { stopHB(); background.Wait() }()
	background.Go(func() { svc.RunHeartbeats(hbCtx) })
	if c.Policies {
		background.Go(func() { svc.RunPolicies(hbCtx) })
	}

	if users != nil {
		users.UseKey(svc.TokenKey()) // tokens hold on every gateway of the repository
	}
	apiHandler, tcpHandler, console, err := newAPI(svc, c, tokens, users, log)
	if err != nil {
		return err
	}
	ul, err := listenUnix(sock)
	if err != nil {
		return err
	}
	defer os.Remove(sock)
	sockMux := http.NewServeMux()
	sockMux.Handle(execPath, execHandler(svc))
	sockMux.Handle(repositoryPath, repositoryHandler(svc))
	sockMux.Handle("/", apiHandler)
	servers := []*http.Server{{Handler: sockMux, ReadHeaderTimeout: 10 * time.Second}}
	listeners := []net.Listener{ul}
	if c.Listen != "" {
		tl, err := net.Listen("tcp", c.Listen)
		if err != nil {
			ul.Close()
			return fmt.Errorf("listen on %s: %w", c.Listen, err)
		}
		servers = append(servers, &http.Server{Handler: tcpHandler, ReadHeaderTimeout: 10 * time.Second})
		listeners = append(listeners, tl)
	}
	var nl net.Listener
	if c.NBD != "" {
		if nl, err = net.Listen("tcp", c.NBD); err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return fmt.Errorf("listen on %s: %w", c.NBD, err)
		}
	}
	unmount, err := c.mount(svc, g)
	if err != nil {
		for _, l := range listeners {
			l.Close()
		}
		if nl != nil {
			nl.Close()
		}
		return err
	}
	defer unmount()
	log.Info("gateway serving", "repository", svc.Location(), "socket", sock, "listen", c.Listen, "auth", c.Auth,
		"workers", c.JobWorkers, "mount", c.Mount, "nbd", c.NBD)
	if !g.Quiet {
		fmt.Fprintf(g.stderr, "cairn: serving %s on %s", svc.Location(), sock)
		if c.Listen != "" {
			fmt.Fprintf(g.stderr, " and http://%s/v3", c.Listen)
			if console {
				fmt.Fprintf(g.stderr, " (console: http://%s/ui/)", c.Listen)
			}
			if users != nil {
				fmt.Fprintf(g.stderr, " (sign-in: --os-auth-url http://%s/identity/v3)", c.Listen)
			}
		}
		if nl != nil {
			fmt.Fprintf(g.stderr, " and nbd://%s", nl.Addr())
		}
		fmt.Fprintln(g.stderr, " (Ctrl-C stops)")
	}

	eg, egCtx := errgroup.WithContext(ctx)
	for i, srv := range servers {
		l := listeners[i]
		eg.Go(func() error {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	if nl != nil {
		eg.Go(func() error { return svc.ServeNBD(egCtx, nl, nbdOpts) })
	}
	eg.Go(func() error {
		<-egCtx.Done()
		log.Info("gateway stopping: cancelling running jobs")
		stopHB() // no policy run starts a job from now on
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The jobs are cancelled while the servers shut down, not after: a command that
		// follows a job (--wait) keeps its request open until the job ends, and Shutdown
		// waits for that request [TestGatewayStopEndsJobsAWaitingCommandFollows].
		var shut sync.WaitGroup
		for _, srv := range servers {
			shut.Go(func() { _ = srv.Shutdown(sctx) })
		}
		err := svc.StopWorkers(sctx)
		shut.Wait()
		if err == nil {
			// A job a command submitted while the first stop ran has ended too.
			err = svc.StopWorkers(sctx)
		}
		return err
	})
	err = eg.Wait()
	log.Info("gateway stopped")
	return err
}

// nbdOptions: with --auth token and a tokens or users file, every NBD export name carries a
// token (TOKEN@BACKUP_ID: one of the tokens file, or one issued to a user), as every API
// request does; without, the NBD server may only listen on loopback, and serves every
// project's backups there.
func (c *ServeCmd) nbdOptions(tokens api.Tokens, users *api.Users) (gateway.NBDOptions, error) {
	var o gateway.NBDOptions
	if c.NBD == "" {
		return o, nil
	}
	if c.Auth == api.AuthToken && (tokens != nil || users != nil) {
		o.Tokens = api.Lookup(tokens, users)
	}
	if _, _, err := net.SplitHostPort(c.NBD); err != nil {
		return o, gateway.CheckNBDListen(c.NBD, o) // says what a good address is
	}
	if err := gateway.CheckNBDListen(c.NBD, o); err != nil {
		return o, usageError(fmt.Sprintf("--nbd %s reaches beyond loopback, and NBD has no authentication of its own: give --auth token and --tokens FILE or --users FILE (export names are then TOKEN@BACKUP_ID)", c.NBD))
	}
	return o, nil
}

// checkListen refuses a TCP address the listener could never take (no port, a port out of
// range), before the repository opens and the workers start; empty is no address. A host that
// does not resolve, or a port in use, is only found by listening.
func checkListen(flag, addr, example string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		_, err = net.LookupPort("tcp", port)
	}
	if err != nil {
		return usageError(fmt.Sprintf("%s %q: %v: give HOST:PORT, e.g. %s", flag, addr, err, example))
	}
	return nil
}

// serveLogger is the gateway's log: JSON lines to --log-file, else text to stderr, at info.
func (g *Globals) serveLogger() (*slog.Logger, error) {
	if g.LogFile != "" {
		f, err := os.OpenFile(g.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("log file: %w", err)
		}
		return slog.New(slog.NewJSONHandler(f, nil)), nil
	}
	return slog.New(slog.NewTextHandler(g.stderr, nil)), nil
}

// listenUnix listens on the CLI socket, only for its owner (mode 0600), replacing a stale
// socket of a dead gateway or mount (the caller checked that nobody answers). The socket runs
// commands as the gateway's user, so it must never be open to others, not even for a moment
// under a loose umask: it is bound in a new directory of mode 0700 beside it, made 0600 there,
// then renamed into place (which also replaces a stale one at once)
// [TestSocketNeverAppearsOpen].
func listenUnix(sock string) (net.Listener, error) {
	dir := filepath.Dir(sock)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	private, err := os.MkdirTemp(dir, ".s") // mode 0700; a short name, as socket paths are short
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", sock, err)
	}
	defer os.RemoveAll(private)
	bound := filepath.Join(private, "s")
	ul, err := net.Listen("unix", bound)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", sock, err)
	}
	ul.(*net.UnixListener).SetUnlinkOnClose(false) // the callers remove sock
	if err := os.Chmod(bound, 0o600); err != nil {
		ul.Close()
		return nil, err
	}
	if err := os.Rename(bound, sock); err != nil {
		ul.Close()
		return nil, fmt.Errorf("listen on %s: %w", sock, err)
	}
	return ul, nil
}

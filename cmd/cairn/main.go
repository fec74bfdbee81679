package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // --timezone and policy calendars name zones on hosts without zoneinfo

	"github.com/alecthomas/kong"
	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/limit"
	"github.com/cairn-backup/cairn/repo/backend/stack"
	"golang.org/x/term"
)

var version = "dev"

// Globals are the flags every command takes.
type Globals struct {
	Repo           string           `help:"Repository: a directory or s3://BUCKET/PREFIX." env:"CAIRN_REPO" placeholder:"DIR|URL" group:"global"`
	StateDir       string           `help:"Where the index of a remote repository lives." env:"CAIRN_STATE_DIR" placeholder:"DIR" group:"global"`
	Format         string           `help:"Output format: ${enum}." enum:"table,json" default:"table" short:"f" group:"global"`
	Quiet          bool             `help:"No progress output." short:"q" group:"global"`
	Project        string           `help:"Project to act in (the embedded CLI acts as its admin)." env:"CAIRN_PROJECT" default:"admin" group:"global"`
	PasswordFile   string           `help:"File holding the repository passphrase (else CAIRN_PASSWORD, else a prompt)." type:"existingfile" placeholder:"FILE" group:"global"`
	Endpoint       string           `help:"S3 endpoint (else AWS_ENDPOINT_URL); http:// means no TLS." placeholder:"URL" group:"s3"`
	Region         string           `help:"S3 region (else AWS_REGION)." group:"s3"`
	PathStyle      string           `help:"S3 addressing: ${enum}." enum:"auto,path,virtual-host" default:"auto" group:"s3"`
	AccessKey      string           `help:"S3 access key (else AWS_ACCESS_KEY_ID)." placeholder:"KEY" group:"s3"`
	SecretKey      string           `help:"S3 secret key (else AWS_SECRET_ACCESS_KEY); prefer the variable, flags show in ps." placeholder:"KEY" group:"s3"`
	Workers        int              `help:"Fingerprint/compress workers (0 = one per core)." default:"0" group:"global"`
	Concurrency    int              `help:"Backend requests at once, also pack uploads and restore reads (0 = 8 for S3)." default:"0" group:"global"`
	LogFile        string           `help:"Write structured logs here (else serve and mount log to stderr, other commands nowhere)." placeholder:"FILE" group:"global"`
	QuotaBackups   int64            `name:"default-quota-backups" help:"Backups a project may have unless its quota says otherwise (-1: unlimited)." default:"-1" group:"global"`
	QuotaGigabytes int64            `name:"default-quota-backup-gigabytes" help:"GiB of backups a project may have unless its quota says otherwise (-1: unlimited)." default:"-1" group:"global"`
	Socket         string           `help:"A running gateway's socket (default: in the repository's state dir)." env:"CAIRN_SOCKET" placeholder:"PATH" group:"global"`
	Version        kong.VersionFlag `group:"global" help:"Print the version and exit."`

	// Bandwidth: backups beside production I/O and other traffic on the link.
	LimitUpload   string `help:"Bytes a second stored in the repository at most, like 20M (20 MiB/s; 0 = no limit); in a gateway, every job shares it." placeholder:"RATE" default:"0" env:"CAIRN_LIMIT_UPLOAD" group:"global"`
	LimitDownload string `help:"Bytes a second read from the repository at most (restores, check, mount), like 50M (0 = no limit)." placeholder:"RATE" default:"0" env:"CAIRN_LIMIT_DOWNLOAD" group:"global"`
	LimitRead     string `help:"Bytes a second backups read from volumes at most, like 100M (0 = no limit): room for the volumes' own I/O." placeholder:"RATE" default:"0" env:"CAIRN_LIMIT_READ" group:"global"`

	// Bounds on S3 requests: a dead server fails a backup in seconds, not minutes.
	Retries int           `help:"Retries of a failed S3 request (0: 4, and a backup or restore waits out an outage of up to 5m; -1: none)." default:"0" group:"s3"`
	Timeout time.Duration `help:"Bound on one S3 request attempt (0 = 2m)." default:"0" group:"s3"`

	// Repository locks shared by every process and host that uses the repository.
	LockStale time.Duration `help:"A repository lock not refreshed for this long is stale and may be broken (a lock records its holder's value, and others judge it by the larger of theirs and it)." env:"CAIRN_LOCK_STALE" default:"10m" group:"global"`
	LockWait  time.Duration `help:"How long gc waits for running backups and restores anywhere to finish, and a command for another one on this host that has the index open (0 = 1m)." env:"CAIRN_LOCK_WAIT" default:"1m" group:"global"`
	ReadOnly  bool          `help:"Open the repository without writing to it: list, show, restore, export, check and mount work (automatic on read-only media)." env:"CAIRN_READ_ONLY" group:"global"`

	stdout, stderr io.Writer
	stdin          *os.File // where confirm asks (os.Stdin when nil)
	client         *client  // the far end of a command forwarded to this gateway, or nil
	password       string
	noPrompt       bool             // never ask for a passphrase (shell completion)
	chunkCache     int64            // decompressed-chunk cache for commands that read images (mount)
	rates          limit.Rates      // --limit-upload, --limit-download
	volumeReadRate int64            // --limit-read
	shared         *gateway.Service // set when a gateway runs this command for a client
	serving        bool             // cairn serve: log at info
	server         bool             // serve, mount, nbd: fail at once on an index another process holds
	log            *slog.Logger
}

// CLI is cairn's command tree.
type CLI struct {
	Globals

	Status     StatusCmd     `cmd:"" help:"What needs attention now: failed, damaged, unprotected and overdue volumes and backups, quotas near their limit, maintenance, locks, services."`
	Repository RepoCmd       `cmd:"" name:"repo" help:"Create, check and maintain the repository."`
	Volume     VolumeCmd     `cmd:"" help:"Register, create and list volumes."`
	Backup     BackupCmd     `cmd:"" help:"Create, list, restore, export and import backups."`
	Snapshot   SnapshotCmd   `cmd:"" help:"Take, list and delete point-in-time snapshots of volumes."`
	Quota      QuotaCmd      `cmd:"" help:"Show and change per-project backup quotas."`
	Policy     PolicyCmd     `cmd:"" help:"Scheduled backups with retention and verification, run by 'cairn serve'."`
	Service    ServiceCmd    `cmd:"" help:"Show the state of cairn's services."`
	Serve      ServeCmd      `cmd:"" help:"Run the gateway: job workers, the Block Storage v3 API, the CLI socket."`
	User       UserCmd       `cmd:"" help:"Keep the users who sign in to the API with a password (serve --users)."`
	Completion CompletionCmd `cmd:"" help:"Print a bash or zsh completion script."`
	Mount      MountCmd      `cmd:"" help:"Mount backups read-only as volume images (FUSE), until Ctrl-C."`
	NBD        NBDCmd        `cmd:"" name:"nbd" help:"Serve backups read-only over NBD (qemu-img, qemu, nbd-client), until Ctrl-C."`
	Complete   CompleteCmd   `cmd:"" name:"__complete" hidden:"" help:"Print volume or backup ids and names for shell completion."`

	// Cinder's verbs, for hands that know them.
	BackupCreate   BackupCreateCmd   `cmd:"" name:"backup-create" help:"Same as 'backup create'." group:"cinder"`
	BackupList     BackupListCmd     `cmd:"" name:"backup-list" help:"Same as 'backup list'." group:"cinder"`
	BackupShow     BackupShowCmd     `cmd:"" name:"backup-show" help:"Same as 'backup show'." group:"cinder"`
	BackupDelete   BackupDeleteCmd   `cmd:"" name:"backup-delete" help:"Same as 'backup delete'." group:"cinder"`
	BackupRestore  BackupRestoreCmd  `cmd:"" name:"backup-restore" help:"Same as 'backup restore'." group:"cinder"`
	BackupExport   BackupExportCmd   `cmd:"" name:"backup-export" help:"Same as 'backup export'." group:"cinder"`
	BackupImport   BackupImportCmd   `cmd:"" name:"backup-import" help:"Same as 'backup import'." group:"cinder"`
	QuotaShow      QuotaShowCmd      `cmd:"" name:"quota-show" help:"Same as 'quota show'." group:"cinder"`
	QuotaUpdate    QuotaUpdateCmd    `cmd:"" name:"quota-update" help:"Same as 'quota update'." group:"cinder"`
	QuotaUsage     QuotaUsageCmd     `cmd:"" name:"quota-usage" help:"Same as 'quota usage'." group:"cinder"`
	SnapshotList   SnapshotListCmd   `cmd:"" name:"snapshot-list" help:"Same as 'snapshot list'." group:"cinder"`
	SnapshotCreate SnapshotCreateCmd `cmd:"" name:"snapshot-create" help:"Same as 'snapshot create'." group:"cinder"`
	SnapshotShow   SnapshotShowCmd   `cmd:"" name:"snapshot-show" help:"Same as 'snapshot show'." group:"cinder"`
	SnapshotDelete SnapshotDeleteCmd `cmd:"" name:"snapshot-delete" help:"Same as 'snapshot delete'." group:"cinder"`
	BackupUpdate   BackupUpdateCmd   `cmd:"" name:"backup-update" help:"Same as 'backup update'." group:"cinder"`
	BackupReset    BackupResetCmd    `cmd:"" name:"backup-reset-state" help:"Same as 'backup reset-state'." group:"cinder"`
	ServiceList    ServiceListCmd    `cmd:"" name:"service-list" help:"Same as 'service list'." group:"cinder"`
	Rename         VolumeRenameCmd   `cmd:"" name:"rename" help:"Same as 'volume update --name' (cinder rename VOLUME NAME)." group:"cinder"`
}

func main() {
	// Volumes are terabytes; memory must not follow. A soft limit makes the collector work
	// harder before the heap grows past what a backup needs (GOMEMLIMIT overrides it).
	setMemoryLimit(baseMemoryLimit, 0)
	stopProfile := startProfile("CAIRN_CPUPROFILE", pprof.StartCPUProfile, pprof.StopCPUProfile)
	stopTrace := startProfile("CAIRN_TRACE", trace.Start, trace.Stop)
	code := run(os.Args[1:], os.Stdout, os.Stderr)
	stopTrace()
	stopProfile()
	writeAllocProfile(os.Getenv("CAIRN_MEMPROFILE"))
	os.Exit(code)
}

// startProfile records the whole command into the file the environment variable env names:
// a CPU profile (CAIRN_CPUPROFILE, for 'go tool pprof') or an execution trace (CAIRN_TRACE,
// for 'go tool trace': where goroutines wait, which a CPU profile cannot show). With env
// unset it does nothing; a recording that cannot start is reported and the command runs
// without it.
func startProfile(env string, start func(io.Writer) error, stop func()) func() {
	path := os.Getenv(env)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = start(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cairn: %s: %v; running without it\n", env, err)
		if f != nil {
			f.Close()
		}
		return func() {}
	}
	return func() {
		stop()
		f.Close()
	}
}

// writeAllocProfile writes the command's allocation profile to path (CAIRN_MEMPROFILE, for
// 'go tool pprof -sample_index=alloc_space'); with no path it does nothing.
func writeAllocProfile(path string) {
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "cairn: CAIRN_MEMPROFILE: %v\n", err)
	}
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runCLI(ctx, args, stdout, stderr, nil, nil)
}

// runCLI parses and runs one command line. With shared set it runs inside a gateway for a
// forwarded command, against the gateway's open service, for cl. Without, a command goes to a
// running gateway if one listens on the repository's socket, else it runs embedded.
func runCLI(ctx context.Context, args []string, stdout, stderr io.Writer, shared *gateway.Service, cl *client) int {
	configs, err := loadConfigs(configPaths())
	if err != nil {
		fmt.Fprintln(stderr, message(err))
		return exitCode(err)
	}
	var cli CLI
	options := []kong.Option{
		kong.Name("cairn"),
		kong.Description("Block-volume backups: deduplicated, incremental, restorable to the byte."),
		kong.UsageOnError(),
		kong.Vars{"version": version},
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exitPanic(code)) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.ExplicitGroups([]kong.Group{{Key: "cinder", Title: "Cinder-style aliases:"},
			{Key: "global", Title: "Global flags:"}, {Key: "s3", Title: "S3 flags (s3:// repositories):"}}),
		kong.Resolvers(configs...),
		kong.KindMapper(reflect.Int, negativeInt(strconv.IntSize)),
		kong.KindMapper(reflect.Int64, negativeInt(64)),
	}
	if cl != nil {
		options = append(options, kong.NamedMapper("existingfile", kong.MapperFunc(cl.existingFile)))
	}
	parser, err := kong.New(&cli, options...)
	if err != nil {
		fmt.Fprintln(stderr, "cairn:", err)
		return exitFailure
	}
	code := exitOK
	func() {
		defer func() {
			if p := recover(); p != nil {
				e, ok := p.(exitPanic)
				if !ok {
					panic(p)
				}
				code = int(e)
			}
		}()
		kctx, perr := parser.Parse(args)
		if perr != nil {
			if cfgErr := usageError(""); errors.As(perr, &cfgErr) { // a config file's: help would not help
				fmt.Fprintln(stderr, message(perr))
			} else {
				fmt.Fprintf(stderr, "cairn: %v (see 'cairn --help')\n", perr)
			}
			code = exitInvalid
			return
		}
		cli.stdout, cli.stderr, cli.shared, cli.client = stdout, stderr, shared, cl
		if shared != nil {
			if given := gatewaySettings(args); len(given) > 0 {
				fmt.Fprintf(stderr, "cairn: %s: the gateway's own settings apply to a command it runs (give them to 'cairn serve')\n", strings.Join(given, ", "))
			}
		}
		if shared == nil && forwardable(kctx.Command()) {
			if c, ok := forward(ctx, &cli.Globals, args, stdout, stderr); ok {
				code = c
				return
			}
		}
		if shared == nil {
			ctx = gateway.WithCaller(ctx, gateway.Caller{User: "admin", Project: cli.Project, Admin: true})
		}
		kctx.BindTo(ctx, (*context.Context)(nil))
		kctx.Bind(parser)
		if err := kctx.Run(&cli.Globals); err != nil {
			if errors.Is(err, errAskClient) {
				code = exitInvalid // the gateway sends the question instead (see execHandler)
				return
			}
			fmt.Fprintln(stderr, message(err))
			code = exitCode(err)
		}
	}()
	return code
}

type exitPanic int

// serviceFlags are the global flags that set up a service rather than a command: in a
// command a gateway runs for a client they do nothing, since the gateway's service is open.
var serviceFlags = []string{"--workers", "--concurrency", "--limit-upload", "--limit-download", "--limit-read",
	"--retries", "--timeout", "--lock-stale", "--lock-wait", "--log-file", "--default-quota-backups",
	"--default-quota-backup-gigabytes"}

// gatewaySettings returns the service flags args gives (each once, in serviceFlags' order).
func gatewaySettings(args []string) []string {
	var given []string
	for _, f := range serviceFlags {
		for _, a := range args {
			if a == "--" {
				break
			}
			if a == f || strings.HasPrefix(a, f+"=") {
				given = append(given, f)
				break
			}
		}
	}
	return given
}

// baseMemoryLimit is the soft heap limit of a command, before any block cache it keeps.
const baseMemoryLimit = 160 << 20

// mountMemoryLimit is baseMemoryLimit for 'cairn mount'. Its decoded blocks are reused once
// out of the cache (repo's chunkCache), so the heap holds the index, the cache and little
// else: reading make bench's 1 GiB image with the default 64 MiB cache, a 128 MiB total gave
// 537-583 MB/s and 131-133 MiB peak RSS, 160 + 64 MiB 539-567 MB/s and 155 MiB, and 112 MiB
// thrashed (391-405 MB/s). The peak follows the limit, about 7 MiB above it (the binary's
// mapped pages): 120 MiB in all (56 + 64) gave 126-127 MiB at the bench's FUSE phases, within
// the target of the cache plus 64 MiB, with sequential reads, random reads and tar as at 128
// (docs/benchmarks.md, 2026-12-04).
const mountMemoryLimit = 56 << 20

// setMemoryLimit sets the soft heap limit to base (baseMemoryLimit, or backupMemoryLimit and
// restoreMemoryLimit for an embedded backup and restore) plus a
// cache the command keeps, so the collector neither lets a backup's heap grow with the
// volume nor fights a full cache (GOMEMLIMIT overrides it).
func setMemoryLimit(base, cache int64) {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(base + cache)
	}
}

// backupMemoryLimit is the soft heap limit of an embedded 'backup create'. Its big buffers
// (leaves, arenas, and packs unless spooled to files) live outside the heap (repo/slab), so the
// heap holds the index and small objects; a tighter limit makes the collector reuse heap
// memory instead of faulting in more. On make bench's 1 GiB image: 64 MiB gave 2.6-2.9 s
// and 164 MiB peak RSS, 160 MiB 3.1-3.4 s and 225 MiB, 32 MiB thrashed (4.7-5.3 s).
const backupMemoryLimit = 64 << 20

// restoreMemoryLimit is the soft heap limit of an embedded 'backup restore'. Its block buffers
// and merged pack reads are off the heap (repo/slab); the heap holds the index (Badger's memtable and caches, about 50 MiB).
// On make bench's 1 GiB image onto a loop device, cold caches: with the pack reads on the
// heap, 80 MiB gave 2.7-4.3 s and 70-79 MiB peak RSS (96 MiB the same time, 87-89 MiB; 64
// MiB thrashed, 5.0-5.9 s); with them in slab buffers, 64 MiB gave 1.9-3.0 s and 77-81 MiB
// (56 MiB: 3.2-3.3 s). The leaf buffers were still heap buffers then (16 MiB of it); off the
// heap too, 64 MiB gives 1.64-1.78 s and 85 MiB, and 48 MiB thrashed in two runs of three
// (2.5-2.65 s). From S3 (whose ranged reads also go into the workers' off-heap buffers since
// the S3 backend is a backend.RangeReader), on the same image through versitygw: 3.9-4.2 s and
// 102-112 MiB, against 3.9-4.3 s and 131-137 MiB with the 96 MiB it had before.
const restoreMemoryLimit = 64 << 20

// configPaths are the configuration files, in order (later ones win over earlier ones; flags
// and environment variables win over both): /etc/cairn/config.json, then
// $XDG_CONFIG_HOME/cairn/config.json, then CAIRN_CONFIG. Keys are flag names in snake_case
// (repo, endpoint, access_key, ...); see contrib/config.example.json.
func configPaths() []string {
	paths := []string{"/etc/cairn/config.json"}
	if d, err := os.UserConfigDir(); err == nil {
		paths = append(paths, filepath.Join(d, "cairn", "config.json"))
	}
	if p := os.Getenv("CAIRN_CONFIG"); p != "" {
		paths = append(paths, p)
	}
	return paths
}

// Validate refuses numbers out of range in the global flags (and their variables and config
// file entries) before any command runs, rather than taking a default in their place.
func (g *Globals) Validate() error {
	switch {
	case g.Workers < 0:
		return usageError(fmt.Sprintf("--workers %d: give 0 (one per core) or more", g.Workers))
	case g.Concurrency < 0:
		return usageError(fmt.Sprintf("--concurrency %d: give 0 (the default: 8 for S3) or more", g.Concurrency))
	case g.Retries < -1:
		return usageError(fmt.Sprintf("--retries %d: give -1 (none), 0 (the default: 4) or more", g.Retries))
	case g.Timeout < 0:
		return usageError(fmt.Sprintf("--timeout %v: give a duration like 30s, or 0 for the default (2m)", g.Timeout))
	case g.LockStale <= 0:
		return usageError(fmt.Sprintf("--lock-stale %v: give a duration like 10m (how long a lock no one refreshes lives)", g.LockStale))
	case g.LockWait < 0:
		return usageError(fmt.Sprintf("--lock-wait %v: give a duration like 1m, or 0 for the default (1m)", g.LockWait))
	case g.QuotaBackups < -1:
		return usageError(fmt.Sprintf("--default-quota-backups %d: give -1 (unlimited), 0 or more", g.QuotaBackups))
	case g.QuotaGigabytes < -1:
		return usageError(fmt.Sprintf("--default-quota-backup-gigabytes %d: give -1 (unlimited), 0 or more", g.QuotaGigabytes))
	}
	for _, r := range []struct {
		flag, value string
		into        *int64
	}{{"--limit-upload", g.LimitUpload, &g.rates.Up}, {"--limit-download", g.LimitDownload, &g.rates.Down}, {"--limit-read", g.LimitRead, &g.volumeReadRate}} {
		n, err := parseSize(r.value)
		if err != nil {
			return usageError(fmt.Sprintf("%s %q: give bytes a second like 20M (20 MiB/s), or 0 for no limit", r.flag, r.value))
		}
		if n > 0 && n < limit.MinRate {
			return usageError(fmt.Sprintf("%s %s: give at least 64K (64 KiB/s), or 0 for no limit", r.flag, r.value))
		}
		*r.into = n
	}
	return nil
}

func (g *Globals) config() (gateway.Config, error) {
	c := gateway.Config{Repo: g.Repo, StateDir: g.StateDir, Endpoint: g.Endpoint, Region: g.Region,
		PathStyle: g.PathStyle, AccessKey: g.AccessKey, SecretKey: g.SecretKey, Workers: g.Workers,
		Concurrency: g.Concurrency, Retries: g.Retries, Timeout: g.Timeout, Password: g.password,
		Lock: repo.LockOptions{StaleAfter: g.LockStale, Wait: g.LockWait}, ReadOnly: g.ReadOnly,
		Rates: g.rates, VolumeReadRate: g.volumeReadRate}
	c.ChunkCacheBytes = g.chunkCache
	if c.Repo == "" {
		c.Repo = gateway.DefaultRepo()
	}
	// A directory given relative is the working directory's, made absolute here: the volume
	// directory beneath the state directory goes into the records of the volumes made there,
	// which commands started elsewhere and gateways read [TestRelativeRepoVolumesWorkFromElsewhere].
	if u, err := stack.ParseURL(c.Repo); err == nil && u.Kind == stack.Local {
		if abs, err := filepath.Abs(u.Path); err == nil {
			c.Repo = abs
		}
	}
	if c.StateDir != "" {
		if abs, err := filepath.Abs(c.StateDir); err == nil {
			c.StateDir = abs
		}
	}
	logger, err := g.logger()
	if g.serving {
		logger, err = g.serveLogger()
	}
	if err != nil {
		return c, err
	}
	c.Logger, g.log = logger, logger
	if !g.serving && !g.Quiet {
		// The embedded CLI's log goes nowhere without --log-file.
		c.Notice = func(msg string) { fmt.Fprintln(g.stderr, "cairn: "+msg) }
	}
	if g.QuotaBackups != -1 || g.QuotaGigabytes != -1 {
		c.DefaultQuota = &gateway.Quota{Backups: g.QuotaBackups, BackupGigabytes: g.QuotaGigabytes}
	}
	return c, nil
}

func (g *Globals) logger() (*slog.Logger, error) {
	if g.LogFile == "" {
		return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelError + 4})), nil
	}
	f, err := os.OpenFile(g.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	return slog.New(slog.NewJSONHandler(f, nil)), nil
}

// readPassword finds the passphrase: --password-file, CAIRN_PASSWORD, or a prompt.
func (g *Globals) readPassword(prompt string, confirm bool) (string, error) {
	if g.PasswordFile != "" {
		b, err := os.ReadFile(g.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("password file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	if p := os.Getenv("CAIRN_PASSWORD"); p != "" {
		return p, nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return "", repo.ErrPasswordRequired
	}
	return g.promptSecret(prompt, confirm, "passphrases")
}

// promptSecret reads a secret on the terminal without echo; with confirm, twice, and the two
// must be the same (what names them in the error).
func (g *Globals) promptSecret(prompt string, confirm bool, what string) (string, error) {
	fmt.Fprint(g.stderr, prompt)
	b, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(g.stderr)
	if err != nil {
		return "", err
	}
	if confirm {
		fmt.Fprint(g.stderr, "enter it again: ")
		b2, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(g.stderr)
		if err != nil {
			return "", err
		}
		if string(b) != string(b2) {
			return "", gateway.Errorf(gateway.ErrInvalid, "the %s differ", what)
		}
	}
	return string(b), nil
}

// open opens the repository, asking for the passphrase when it is encrypted. Inside a
// gateway it returns the gateway's service.
func (g *Globals) open(ctx context.Context) (*gateway.Service, error) {
	if g.shared != nil {
		return g.shared, nil
	}
	if g.password == "" && (g.PasswordFile != "" || os.Getenv("CAIRN_PASSWORD") != "") {
		p, err := g.readPassword("", false)
		if err != nil {
			return nil, err
		}
		g.password = p
	}
	c, err := g.config()
	if err != nil {
		return nil, err
	}
	s, err := g.openWaiting(ctx, c)
	if errors.Is(err, repo.ErrPasswordRequired) && g.password == "" && g.PasswordFile != "" {
		// Told "set CAIRN_PASSWORD or use --password-file", an admin who did would be lost.
		return nil, gateway.Errorf(gateway.ErrInvalid, "password file %s is empty: put the repository's passphrase in it", g.PasswordFile)
	}
	if errors.Is(err, repo.ErrPasswordRequired) && g.password == "" && !g.noPrompt {
		p, perr := g.readPassword("repository passphrase: ", false)
		if perr != nil {
			return nil, perr
		}
		g.password = p
		c.Password = p
		s, err = gateway.Open(ctx, c)
	}
	return s, err
}

// openWaiting opens the service. While another cairn command on this host has the index
// open (two cron jobs at the same minute), it waits for it up to --lock-wait, as gc waits for
// running backups, and says so once. A server (serve, mount, nbd) does not wait: the holder
// is most likely another server, which does not end.
func (g *Globals) openWaiting(ctx context.Context, c gateway.Config) (*gateway.Service, error) {
	if g.server {
		s, err := gateway.Open(ctx, c)
		if errors.Is(err, index.ErrLocked) && !g.serving {
			// Most likely that server is cairn serve, which mounts and serves NBD itself.
			err = fmt.Errorf("%w; a running 'cairn serve' mounts backups and serves them over NBD itself: give it --mount DIR or --nbd ADDR", err)
		}
		return s, err
	}
	wait := g.LockWait
	if wait == 0 {
		wait = repo.DefaultLockWait
	}
	deadline := time.Now().Add(wait)
	s, err := gateway.Open(ctx, c)
	for told := false; errors.Is(err, index.ErrLocked) && time.Now().Before(deadline); told = true {
		if !told && !g.Quiet {
			fmt.Fprintf(g.stderr, "cairn: waiting up to %v (--lock-wait) for another command: %v\n", wait, err)
		}
		if werr := gateway.WaitIndex(ctx, c, time.Until(deadline)); werr != nil {
			return nil, werr
		}
		s, err = gateway.Open(ctx, c)
	}
	return s, err
}

// closeService closes a service this command opened (not a gateway's).
func (g *Globals) closeService(s *gateway.Service) {
	if s != g.shared {
		_ = s.Close()
	}
}

func (g *Globals) json() bool { return g.Format == "json" }

// socketPath is where a gateway for this repository would listen.
func (g *Globals) socketPath() string {
	if g.Socket != "" {
		return g.Socket
	}
	c, err := g.config()
	if err != nil {
		return ""
	}
	return c.SocketPath()
}

package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-backup/cairn/blockio"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/limit"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/repo/backend/s3"
	"github.com/cairn-backup/cairn/repo/backend/stack"
	"golang.org/x/sys/unix"
)

// Config says where the repository is and how to reach it.
type Config struct {
	// Repo is a directory or s3://bucket/prefix.
	Repo string
	// StateDir holds the index and volume directory of a remote repository; default
	// $XDG_STATE_HOME/cairn/<bucket-prefix> (as root /var/lib/cairn/state/<bucket-prefix>).
	StateDir string
	Password string
	// S3 settings; empty ones come from AWS_* variables.
	Endpoint, Region, AccessKey, SecretKey string
	PathStyle                              string // "auto", "path" or "virtual-host"
	Workers                                int
	ChunkCacheBytes                        int64
	Logger                                 *slog.Logger
	// Notice, when set, is told what a user at a terminal should know while a command runs
	// and the log does not reach them (the embedded CLI): the store not answering.
	Notice func(msg string)

	// Concurrency bounds backend requests at once, and is also how many packs a backup
	// uploads and how many ranges a restore reads at once; 0 means stack.DefaultConcurrency
	// for S3 and the engine's defaults for a directory.
	Concurrency int
	// Retries and Timeout bound each S3 request (see stack.Config); 0 means the defaults.
	Retries int
	Timeout time.Duration
	// Rates bound the bytes a second the service stores in and reads from the repository,
	// and VolumeReadRate those its backups read from volumes; zero is no bound. Every job of
	// the service shares them.
	Rates          limit.Rates
	VolumeReadRate int64
	// sharedMeters, when set, are another service's meters this one charges instead of its
	// own: a copy's destination, opened by OpenDestination, shares its source gateway's
	// limits, which its flag promises every job shares.
	sharedMeters *limit.Meters

	// Lock times the repository's locks (see repo.LockOptions).
	Lock repo.LockOptions
	// ReadOnly opens the repository without writing to it (list, show, restore, export, check
	// and the FUSE tree work); a local repository on read-only media is opened so by itself.
	// Where the index cannot be written either, it is built in a temporary directory.
	ReadOnly bool

	// DefaultQuota limits each project without limits of its own; nil means unlimited
	// (CinderQuota is Cinder's 10 backups and 1000 GiB).
	DefaultQuota *Quota
}

// Service is cairn's operations over one open repository. Safe for concurrent use.
type Service struct {
	cfg Config
	// lost holds the backups whose manifests a catch-up found lost (keepsLost), and missing
	// the records (kind/id) it found missing while their second copies are left
	// (missingRecord): the overview names each while it stays so.
	lost, missing missingSince
	be            backend.Backend
	idx           *index.Index
	repo          *repo.Repository
	log           *slog.Logger
	volDir        string
	// meters hold the service's transfers to their rates (Config.Rates: the repository's
	// meters; Config.VolumeReadRate: what backups read from volumes); nil ones: no bound.
	meters      limit.Meters
	volumeReads *limit.Meter
	// Driver is the backup_service name exports carry.
	driver string

	mu      sync.Mutex
	cancels map[string]*tracked // running jobs by backup id; guarded by mu
	pool    *pool               // background workers (cairn serve); guarded by mu
	// restoring: the targets of restores accepted and not ended (targetKey), with their
	// backup ids; guarded by mu.
	restoring map[string]string
	// roomTaken: by file system (device number), the bytes of data that restores accepted
	// onto images cairn made and not ended may still write there (roomForImage); guarded by
	// roomMu.
	roomTaken map[uint64]int64
	roomMu    sync.Mutex

	metrics *metrics
	jobs    *jobTable // queued, running and recently finished jobs (the console)
	history *history  // stored bytes over time and the last gc and check (the console)
	health  health
	syncMu  sync.Mutex // one catch-up at a time; guards the four below
	// lastFull and lastLook: when the last full catch-up, and the last catch-up of either
	// kind, started listing; logSeen: the backup log's keys examined since, with their times;
	// lastRescan (maintenance.go).
	lastFull, lastLook time.Time
	logSeen            map[string]time.Time
	lastRescan         time.Time            // the last Rescan of every pack index object (SyncBackups)
	volumeSeen         map[string]time.Time // followVolumes: when each volume record it read was written
	pruneMu            sync.Mutex           // one prune at a time: each decides from the chains the last left
	tempIndex          string               // a temporary index of a read-only repository, removed on Close
	// quotaMu serialises quota checks with the creation of the backup record they admit.
	quotaMu sync.Mutex
	// limitsMu serialises a change of quota limits (index, then repository) with the catch-up
	// that makes the index's limits the repository's.
	limitsMu sync.Mutex
	// resvCommitted: when this gateway first counted another gateway's reservation whose
	// backup its index knows committed (quota.go); guarded by quotaMu.
	resvCommitted map[string]time.Time
	// elsewhere: the backups other gateways are creating that the index does not hold, by
	// id (creating.go); guarded by elsewhereMu.
	elsewhere        map[string]*elsewhereBackup
	restoringAt      map[string]*restoringElsewhere // restores other gateways run, by backup id (restoring.go)
	name             string                         // gatewayName, set once (nameOnce)
	nameOnce         sync.Once
	procForTest      atomic.Pointer[repo.Process] // what process() names instead, in tests
	storeOffset      atomic.Int64                 // the store's clock minus this gateway's, in ns (storeNow)
	storeOffsetKnown atomic.Bool                  // storeOffset was measured (a gateway that shares its services)
	elsewhereMu      sync.Mutex
	// manifestMu serialises what writes or removes a manifest after its backup was accepted
	// (a backup's commit, backup-update's rewrite, a delete), so the descriptive fields of a
	// record and its manifest agree and no rewrite brings back a deleted manifest.
	manifestMu sync.Mutex
	// volumeRecMu: a forget of a volume holds it from the index's delete of the record to the
	// repository's, and every learn of a volume (learnVolume, learnLostVolume) and every write
	// of its record (saveVolume and its kin) holds it, so neither brings back a volume being
	// forgotten here.
	volumeRecMu sync.Mutex
	// policyRecMu: a create, an update and a delete of a policy hold it from their read of the
	// policy to their store or removal, so an update never stores again a policy deleted here
	// meanwhile (docs/design.md, "An update never brings back a deleted policy"); a store of a
	// run's or a verification's state holds it from its read of the policy to its store
	// (ownState), so it never lands after a delete or a create here.
	policyRecMu sync.Mutex
	// stopping is set when the gateway shuts down: the jobs it cancels then end as error
	// (interrupted), not as cancelled by their starter.
	stopping atomic.Bool
	// changed is called after a backup becomes available or goes (the FUSE tree refreshes).
	changed func()

	policyMu   sync.Mutex      // guards the three fields below and the index's copy of a policy's state
	policyRuns map[string]bool // policies (and "verify <name>") running now
	// policyRetry: when the scheduler may next try to claim a policy's run (or "verify <name>")
	// that another gateway held.
	policyRetry map[string]time.Time
	policyWake  chan struct{} // tells RunPolicies to read the policies again
	// policyAhead: the times a policy counts from that this gateway found dated ahead of its
	// clock, and since when (clockahead.go).
	policyAhead aheadTimes
	// policyWork counts the policy runs and verifications RunPolicies started: it returns
	// only once they ended, so none touches the service after its owner closes it.
	policyWork sync.WaitGroup
}

// DefaultRepo is the embedded default repository: /var/lib/cairn as root, else
// $XDG_DATA_HOME/cairn.
func DefaultRepo() string {
	if os.Geteuid() == 0 {
		return "/var/lib/cairn"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "cairn")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".local", "share", "cairn")
}

func (c Config) backendConfig() stack.Config {
	bc := stack.Config{URL: c.Repo, Endpoint: c.Endpoint, Region: c.Region, AccessKey: c.AccessKey,
		SecretKey: c.SecretKey, Concurrency: c.Concurrency, Retries: c.Retries, Timeout: c.Timeout, ReadOnly: c.ReadOnly}
	if a, err := s3.ParseAddressing(c.PathStyle); err == nil {
		bc.PathStyle = a
	}
	return bc
}

// transfers is how many packs a backup uploads, and how many leaves a restore reads, at
// once: an S3 round trip is slow, so it takes --concurrency requests to fill the link; 0
// leaves a local repository to the engine's defaults.
func (c Config) transfers() int {
	if c.Concurrency > 0 {
		return c.Concurrency
	}
	if c.remote() {
		return stack.DefaultConcurrency
	}
	return 0
}

// remote reports whether the repository is in object storage (S3), not a local directory.
func (c Config) remote() bool { return stack.IsRemote(c.Repo) }

// stateDir is where the index and the volume directory live.
func (c Config) stateDir() string {
	if c.StateDir != "" {
		return c.StateDir
	}
	if !c.remote() {
		return strings.TrimPrefix(c.Repo, "file://")
	}
	name := strings.NewReplacer("s3://", "", "/", "-", ":", "-").Replace(strings.TrimSuffix(c.Repo, "/"))
	if os.Geteuid() == 0 {
		return filepath.Join("/var/lib/cairn/state", name)
	}
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(base, "cairn", name)
}

// SocketPath is where a running gateway listens for the CLI.
func (c Config) SocketPath() string { return filepath.Join(c.stateDir(), socketName) }

// The names of the gateway's state in its state directory (a local repository's own
// directory): the CLI socket, the index (and index.holder, index.damaged-*, ... beside it) and
// the volumes it creates.
const (
	socketName  = "cairn.sock"
	indexName   = "index"
	volumesName = "volumes"
)

// IndexDir is where the repository's index lives.
func (c Config) IndexDir() string { return filepath.Join(c.stateDir(), indexName) }

// Init creates a new repository.
func Init(ctx context.Context, c Config, o repo.InitOptions) (repo.Config, error) {
	if o.ObjectLock != nil && !c.remote() {
		return repo.Config{}, invalidf("%s: object lock needs an S3 repository (s3://bucket/prefix) in a bucket created with object lock enabled: a directory cannot lock objects", c.Repo)
	}
	if u, err := stack.ParseURL(c.Repo); err == nil && u.Kind == stack.Local {
		if err := ownDirectory(u.Path); err != nil {
			return repo.Config{}, err
		}
	}
	be, err := openBackend(ctx, c)
	if err != nil {
		return repo.Config{}, err
	}
	defer be.Close()
	if err := freeStateDir(ctx, c, be); err != nil {
		return repo.Config{}, err
	}
	rc, err := repo.Init(ctx, be, o)
	if errors.Is(err, repo.ErrExists) {
		return rc, wrapf(ErrExists, "%v", err)
	}
	if errors.Is(err, repo.ErrNoObjectLock) {
		return rc, invalidf("%v", err)
	}
	if errors.Is(err, repo.ErrInvalidOption) {
		return rc, invalidf("%s", strings.TrimPrefix(err.Error(), repo.ErrInvalidOption.Error()+": "))
	}
	return rc, err
}

// freeStateDir refuses to make a repository whose state directory (given by --state-dir, or a
// remote repository's default) already holds an index: a new repository has a new id, so that
// index is another repository's, and the repository would be made and then fail to open ("the
// index belongs to repository ..."), or fail because the process serving the other one holds
// it. A repository that is there already is left to repo.Init to say so.
func freeStateDir(ctx context.Context, c Config, be backend.Backend) error {
	if u, err := stack.ParseURL(c.Repo); err == nil && u.Kind == stack.Local && sameDir(u.Path, c.stateDir()) {
		return nil // a local repository's own directory: repo.Init judges what is there
	}
	if err := repo.StatConfig(ctx, be); !errors.Is(err, backend.ErrNotFound) {
		return nil
	}
	entries, err := os.ReadDir(c.IndexDir())
	if err != nil || len(entries) == 0 {
		return nil
	}
	return wrapf(ErrExists, "state directory %s already holds the index of another repository: give this repository a --state-dir of its own (a state directory holds one repository's index and socket), or move %s away if that repository is gone", c.stateDir(), c.IndexDir())
}

// sameDir reports whether a and b name one directory (symbolic links followed where they
// exist).
func sameDir(a, b string) bool {
	return canonicalPath(a) == canonicalPath(b)
}

// canonicalPath is p absolute, clean and with its symbolic links followed as far as it exists
// (the rest, not there yet, is appended as it is).
func canonicalPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	p = filepath.Clean(p)
	rest := ""
	for dir := p; ; dir = filepath.Dir(dir) {
		if real, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(real, rest)
		}
		if filepath.Dir(dir) == dir {
			return p
		}
		rest = filepath.Join(filepath.Base(dir), rest)
	}
}

// ownDirectory refuses to make a local repository in a directory that holds files that are
// not cairn's (`--repo ~` by mistake): the repository's objects and the gateway's state would
// sit among them, and gc's sweep of interrupted writes walks the whole directory. The
// repository's own names (an interrupted init, or a repository that is there already: Init
// says which), the gateway's state (index, volumes, socket: a local repository's directory is
// its state directory unless --state-dir says otherwise) and a new file system's lost+found
// are not in the way. borg and kopia refuse the same; restic does not.
func ownDirectory(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return fmt.Errorf("read repository directory %s: %w", dir, err)
	}
	var foreign []string
	for _, e := range entries {
		name := e.Name()
		if name == "lost+found" || repo.OwnsName(name) || local.IsTemp(name) ||
			name == volumesName || name == socketName ||
			name == indexName || strings.HasPrefix(name, indexName+".") {
			continue
		}
		foreign = append(foreign, name)
	}
	switch len(foreign) {
	case 0:
		return nil
	case 1, 2, 3:
	default:
		foreign = append(foreign[:3], "...")
	}
	return invalidf("%s is not empty (it holds %s) and a repository needs a directory of its own: give an empty or a new directory, such as %s", dir, strings.Join(foreign, ", "), filepath.Join(dir, "cairn"))
}

// openBackend opens the repository's backend. A missing bucket is the user's not-found (the
// repository is not there), not a missing object inside it.
func openBackend(ctx context.Context, c Config) (backend.Backend, error) {
	return openBackendWith(ctx, c.backendConfig())
}

func openBackendWith(ctx context.Context, bc stack.Config) (backend.Backend, error) {
	if _, err := stack.ParseURL(bc.URL); err != nil {
		return nil, invalidf("%v", err)
	}
	be, err := stack.Open(ctx, bc)
	if errors.Is(err, backend.ErrNotFound) {
		return nil, wrapf(ErrNotFound, "%v", err)
	}
	return be, err
}

// wrapOpened, when set (by tests), wraps the backend Open opens: a fault-injecting backend
// beside the real one, from the first request on.
var wrapOpened func(backend.Backend) backend.Backend

// Open opens the repository and its index, and repairs what a crash left: backups that were
// running are marked error, volumes leave backing-up and restoring-backup.
func Open(ctx context.Context, c Config) (*Service, error) {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	// The local backend creates its directory; a mistyped --repo must not leave one behind.
	if u, err := stack.ParseURL(c.Repo); err == nil && u.Kind == stack.Local {
		fi, err := os.Stat(u.Path)
		if errors.Is(err, os.ErrNotExist) {
			return nil, wrapf(ErrNotFound, "%s: %v", u.Path, repo.ErrNoRepository)
		}
		if errors.Is(err, unix.ENOTDIR) || err == nil && !fi.IsDir() {
			return nil, wrapf(ErrInvalid, "%s: not a directory: --repo names the directory 'cairn repo init' made, or s3://BUCKET/PREFIX", u.Path)
		}
		if !writable(u.Path) {
			c.ReadOnly = true // read-only media, a read-only mount or snapshot
		}
	}
	indexDir, tempIndex := c.IndexDir(), ""
	if c.ReadOnly && !writable(c.stateDir()) {
		d, err := os.MkdirTemp("", "cairn-index-")
		if err != nil {
			return nil, fmt.Errorf("temporary index for a read-only repository: %w", err)
		}
		indexDir, tempIndex = d, d
	}
	defer func() { // until the service holds it (and removes it on Close)
		if tempIndex != "" {
			os.RemoveAll(tempIndex)
		}
	}()
	// The backend's counters exist before the backend, which reports into them.
	beRetries, beErrors := backendCounters()
	bc := c.backendConfig()
	var lastOutageWarning atomic.Int64 // unix nanoseconds
	bc.Hooks = &stack.Hooks{OnRetry: func(op string) { beRetries.WithLabelValues(op).Inc() },
		OnGiveUp: func(op string) { beErrors.WithLabelValues(op).Inc() },
		OnOutage: func(op string, failing time.Duration, err error) {
			// One line a minute, not one per pack upload waiting.
			now, last := time.Now().UnixNano(), lastOutageWarning.Load()
			if now-last >= int64(time.Minute) && lastOutageWarning.CompareAndSwap(last, now) {
				c.Logger.Warn("the repository's store does not answer: running backups and restores wait for it",
					"op", op, "failing_for", failing.Round(time.Second).String(), "up_to", stack.DefaultOutage.String(), "error", err)
				if c.Notice != nil {
					c.Notice(fmt.Sprintf("the repository's store does not answer (%v): waiting for it up to %s", err, stack.DefaultOutage))
				}
			}
		}}
	bc.Meters = c.Rates.Meters()
	if c.sharedMeters != nil {
		bc.Meters = *c.sharedMeters
	}
	be, err := openBackendWith(ctx, bc)
	if err != nil {
		return nil, err
	}
	if wrapOpened != nil {
		be = wrapOpened(be)
	}
	s := &Service{cfg: c, be: be, log: c.Logger, cancels: map[string]*tracked{}, restoring: map[string]string{}, roomTaken: map[uint64]int64{},
		health: health{beats: map[string]beat{}, started: time.Now()}, jobs: newJobTable(),
		meters: bc.Meters, volumeReads: limit.NewMeter(c.VolumeReadRate)}
	s.driver = "cairn.backup.drivers.local"
	if c.remote() {
		s.driver = "cairn.backup.drivers.s3"
	}
	s.volDir = filepath.Join(c.stateDir(), volumesName)
	if err := repo.StatConfig(ctx, be); errors.Is(err, backend.ErrNotFound) {
		be.Close()
		return nil, wrapf(ErrNotFound, "%s: %v", be.Location(), repo.ErrNoRepository)
	}
	// The index opens while the passphrase's key is derived (repo.Unlock: scrypt, one core).
	type opened struct {
		idx *index.Index
		err error
	}
	ic := make(chan opened, 1)
	go func() {
		idx, err := openIndex(indexDir, c.Logger)
		ic <- opened{idx, err}
	}()
	u, uerr := repo.Unlock(ctx, be, c.Password)
	o := <-ic
	if o.err == nil && uerr != nil {
		o.idx.Close()
		o.err = uerr
	}
	if o.err != nil {
		be.Close()
		return nil, o.err
	}
	idx := o.idx
	r, err := repo.OpenUnlocked(ctx, be, idx, u, repo.Options{ChunkCacheBytes: c.ChunkCacheBytes, Lock: c.Lock, ReadOnly: c.ReadOnly,
		Log: func(format string, args ...any) { c.Logger.Warn(fmt.Sprintf(format, args...)) }})
	if err != nil {
		idx.Close()
		be.Close()
		return nil, err
	}
	s.tempIndex, tempIndex = tempIndex, ""
	s.idx, s.repo = idx, r
	s.metrics = newMetrics(s, beRetries, beErrors)
	s.loadHistory()
	fresh, err := s.bindIndex()
	if err != nil {
		s.Close()
		return nil, err
	}
	if fresh {
		// A new index (a new state dir, or one moved aside): bring back what only the
		// repository's metadata objects say (volumes without backups, snapshots, quotas).
		// Only then is it bound: one whose catch-up failed is new again at the next open
		// [TestNewIndexWhoseFirstCatchUpFailedCatchesUpAtTheNextOpen].
		if _, _, _, err := s.restoreMeta(ctx, func(f string, a ...any) { s.log.Warn(fmt.Sprintf(f, a...)) }); err != nil {
			s.Close()
			return nil, fmt.Errorf("catch up with the repository: %w", err)
		}
		// Its first catch-up also adopts the backups whose manifests are lost, from their
		// copies (adoptLost): deleting an index must not hide one.
		if err := s.idx.SetMeta(adoptLostKey, "1"); err != nil {
			s.Close()
			return nil, err
		}
		if err := s.idx.SetMeta(keyIDKey, s.repo.KeyID()); err != nil {
			s.Close()
			return nil, err
		}
		if err := s.idx.SetMeta("repository", s.repo.Config().ID); err != nil {
			s.Close()
			return nil, err
		}
	}
	if err := s.recover(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("recover after a crash: %w", err)
	}
	// Learn what other gateways on this repository did since this index last looked: the
	// backups stored and deleted (the full catch-up), and the changes to backups it knows
	// (catchUpSinceClosed).
	began := time.Now()
	if err := s.SyncBackups(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("catch up with the repository: %w", err)
	}
	if fresh {
		s.saveLook(began) // every manifest was just read
	} else if err := s.catchUpSinceClosed(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("catch up with the repository: %w", err)
	}
	return s, nil
}

// bindIndex says whether the index is new (Open binds it to this repository once it caught
// up) and refuses an index of another repository.
func (s *Service) bindIndex() (bool, error) {
	id, err := s.idx.Meta("repository")
	if err != nil {
		return false, err
	}
	want := s.repo.Config().ID
	switch id {
	case "":
		return true, nil
	case want:
		return false, s.sameKey()
	}
	return false, fmt.Errorf("the index in %s belongs to repository %s, not %s: use another --state-dir, or move it away and run 'cairn repo rebuild-index'", s.idx.Dir(), id, want)
}

// keyIDKey holds, in the index, the repository's repo.KeyID when the index was made.
const keyIDKey = "repository-key"

// sameKey refuses a repository whose config names another master key than the one this index
// was made with: someone who can write to the bucket replaced the config (its id copied, the
// key objects removed) with one that turns encryption off or holds a key of their choosing,
// and every backup after would have been written under it, readable or forgeable by them
// (found by review, 2026-12-08) [TestAReplacedConfigIsRefused]. An index from before the key
// was recorded learns it now.
func (s *Service) sameKey() error {
	have, err := s.idx.Meta(keyIDKey)
	if err != nil {
		return err
	}
	now := s.repo.KeyID()
	switch have {
	case now:
		return nil
	case "":
		return s.idx.SetMeta(keyIDKey, now)
	}
	mode, _, _ := strings.Cut(now, ":")
	return fmt.Errorf("%w: the config of repository %s names another master key (encryption %s) than the one the index in %s was made with: the config was replaced, so nothing is read or written; put back the config you trust ('cairn repo check' says whether config-copy matches), or, if the repository was made again on purpose, move the index away and run 'cairn repo rebuild-index'",
		repo.ErrCorrupt, s.be.Location(), mode, s.idx.Dir())
}

// WaitIndex waits, up to d, until no other process on this host has the repository's index
// open (another command run embedded, such as a second cron job's backup), polling by opening
// and closing it. It returns nil once the index was free, or the last index.ErrLocked error
// when d passes or ctx ends. The caller then opens the service; another process may take
// the index first, and Open then fails with index.ErrLocked again.
func WaitIndex(ctx context.Context, c Config, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		idx, err := index.Open(c.IndexDir())
		if err == nil {
			return idx.Close()
		}
		if !errors.Is(err, index.ErrLocked) || !time.Now().Before(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(indexPoll):
		}
	}
}

// indexPoll is how often WaitIndex tries the index.
const indexPoll = 200 * time.Millisecond

// openIndex opens the index in dir. An index that cannot be opened because it is damaged
// or of another schema (written by an older or newer cairn) is a cache, not a dead end: it is
// moved aside to dir.damaged-<time> or dir.schema<N>-<time> and a new one is made, which
// catches up from the repository.
func openIndex(dir string, log *slog.Logger) (*index.Index, error) {
	idx, err := index.Open(dir)
	if err == nil {
		if err = readRecords(idx); err == nil {
			return idx, nil
		}
		idx.Close()
	} else if errors.Is(err, index.ErrLocked) || errors.Is(err, os.ErrPermission) {
		return nil, err
	} else if errors.Is(err, index.ErrNoResources) {
		// Not damage: moved aside, the index would have to be built again, on the same full
		// file system, and every retry moved another copy aside [TestFullDiskLeavesTheIndex].
		return nil, fmt.Errorf("%w: %s, and try again (the index is kept)", err, resourceHint(err, dir))
	}
	now := time.Now().UTC().Format("20060102T150405")
	aside := fmt.Sprintf("%s.damaged-%s", dir, now)
	var se *index.SchemaError
	if errors.As(err, &se) {
		aside = fmt.Sprintf("%s.schema%s-%s", dir, se.Found, now)
	}
	if rerr := os.Rename(dir, aside); rerr != nil {
		return nil, fmt.Errorf("%w; moving it aside failed too (%v): move or remove %s by hand, and cairn builds a new one from the repository", err, rerr, dir)
	}
	if se != nil {
		log.Warn(fmt.Sprintf("the index has schema %s and this cairn uses %s: moved aside, a new one is built from the repository (the old one can be deleted)", se.Found, se.Want),
			"moved_to", aside)
	} else {
		log.Warn("the index could not be opened: moved aside, a new one catches up from the repository", "error", err, "moved_to", aside)
	}
	return index.Open(dir)
}

// resourceHint says what frees the resource an index open lacked.
func resourceHint(err error, dir string) string {
	switch {
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EDQUOT):
		return "free space on the file system that holds " + dir
	case errors.Is(err, unix.EROFS):
		return dir + " is on a read-only file system: give --state-dir on a writable one"
	case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE):
		return "raise the open-file limit (ulimit -n, or LimitNOFILE= in the unit)"
	}
	return "free memory"
}

// readRecords reads every backup, volume and snapshot record, as recovery is about to. Badger
// opens an index whose value log a crash cut short and fails only when a value is read: such
// an index refused every start (recover read a truncated record), where it is a cache to move
// aside [TestOpenMovesAsideAnIndexWithATruncatedValueLog]. The backup records stay decoded in
// memory for the gateway (index.Backups), so this costs recovery nothing more.
func readRecords(idx *index.Index) error {
	if _, err := idx.Backups(); err != nil {
		return fmt.Errorf("index %s: backup records: %w", idx.Dir(), err)
	}
	if _, err := idx.Volumes(); err != nil {
		return fmt.Errorf("index %s: volume records: %w", idx.Dir(), err)
	}
	if _, err := idx.Snapshots(); err != nil {
		return fmt.Errorf("index %s: snapshot records: %w", idx.Dir(), err)
	}
	return nil
}

// OnChange registers fn to be called whenever the set of available backups or of volumes
// changes (the FUSE tree lists both).
func (s *Service) OnChange(fn func()) {
	s.mu.Lock()
	s.changed = fn
	s.mu.Unlock()
}

func (s *Service) notifyChange() {
	s.mu.Lock()
	fn := s.changed
	s.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// Close releases the index and the backend.
func (s *Service) Close() error {
	if s.idx == nil {
		return s.be.Close()
	}
	s.saveLogSeen()
	err := s.idx.Close()
	if cerr := s.be.Close(); err == nil {
		err = cerr
	}
	if s.tempIndex != "" {
		os.RemoveAll(s.tempIndex)
	}
	return err
}

// writable reports whether this process may create files in dir (false on read-only media).
func writable(dir string) bool {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			return unix.Access(d, unix.W_OK) == nil
		}
		if d == filepath.Dir(d) {
			return false
		}
	}
}

// Repository returns the open repository (for the FUSE tree).
func (s *Service) Repository() *repo.Repository { return s.repo }

// Index returns the open index (for the FUSE tree).
func (s *Service) Index() *index.Index { return s.idx }

// Location names the repository for messages, without credentials.
func (s *Service) Location() string { return s.be.Location() }

// Serves reports whether location (a directory or URL, as --repo takes it) names the repository
// this service has open. A CLI sends its commands to the process listening on its state
// directory's socket; a state directory that two repositories share (one CAIRN_STATE_DIR for
// all) must not let a command meant for one act on the other.
func (s *Service) Serves(location string) bool { return SameRepository(location, s.be.Location()) }

// SameRepository reports whether two locations (directories or URLs, as --repo takes them)
// name one repository: the same directory after symbolic links, or the same bucket and prefix.
func SameRepository(a, b string) bool {
	ua, err := stack.ParseURL(a)
	if err != nil {
		return false
	}
	ub, err := stack.ParseURL(b)
	if err != nil || ua.Kind != ub.Kind {
		return false
	}
	if ua.Kind == stack.Local {
		return sameDir(ua.Path, ub.Path)
	}
	return ua.Bucket == ub.Bucket && ua.Prefix == ub.Prefix
}

// TokenKey is the repository's key for the API tokens issued to signed-in users: the same on
// every gateway of the repository.
func (s *Service) TokenKey() []byte { return s.repo.TokenKey() }

// Driver is the backup_service name of this repository's backend.
func (s *Service) Driver() string { return s.driver }

// recover repairs records left by a process that died mid-operation. Only one process has
// the index open, so anything "running" in it was running in a dead process.
func (s *Service) recover(ctx context.Context) error {
	backups, err := s.idx.Backups()
	if err != nil {
		return err
	}
	for _, b := range backups {
		switch b.Status {
		case index.BackupCreating:
			// A stored manifest is the commit point: the backup is complete (the crash came
			// between storing it and recording it), unless its delete began (a commit that
			// failed after its Put was withdrawing it): that delete is finished below.
			// Without one, what it stored is garbage for gc.
			m, err := s.repo.GetManifest(ctx, b.ID)
			if err == nil {
				if deleted, derr := s.repo.Deleted(ctx, b.ID); derr != nil {
					return derr
				} else if deleted {
					if err := s.repo.DeleteManifest(ctx, b.ID); err != nil {
						return err
					}
					err = backend.ErrNotFound
				}
			}
			if err == nil {
				if _, err := s.idx.UpdateBackup(b.ID, func(rec *index.Backup) error {
					takeManifest(rec, m)
					return nil
				}); err != nil {
					return err
				}
				s.log.Warn("backup committed just before a crash recorded available", "backup_id", b.ID)
				s.removeCreating(b.ID)
				continue
			} else if errors.Is(err, repo.ErrCorrupt) {
				// Failing the start for one damaged manifest failed every start, and with it
				// every command, repair too [TestRecoveryOfABackupWithADamagedManifest].
				reason := "interrupted: cairn stopped while the backup ran, and its stored manifest is damaged: run 'cairn repo check'"
				if _, err := s.idx.UpdateBackup(b.ID, func(b *index.Backup) error {
					b.Status, b.FailReason = index.BackupError, reason
					return nil
				}); err != nil {
					return err
				}
				s.log.Warn("backup interrupted by a crash marked error: its manifest is damaged", "backup_id", b.ID, "error", err)
				continue
			} else if !errors.Is(err, backend.ErrNotFound) {
				return err
			}
			if s.cancelPending(ctx, b.ID) {
				// Force-deleted through another gateway while this one was down: removed, as
				// the cancel would have ("Backups being created, on every gateway").
				if err := s.idx.DeleteBackup(b.ID); err != nil && !errors.Is(err, index.ErrNotFound) {
					return err
				}
				if err := s.repo.DeleteMeta(ctx, metaReservations, b.ID); err != nil && !errors.Is(err, backend.ErrNotFound) {
					s.log.Warn("cannot remove a cancelled backup's quota reservation; it ends by itself after a day", "backup_id", b.ID, "error", err)
				}
				s.removeCreating(b.ID)
				s.log.Warn("backup interrupted by a crash and cancelled through another gateway meanwhile removed", "backup_id", b.ID)
				continue
			}
			if _, err := s.idx.UpdateBackup(b.ID, func(b *index.Backup) error {
				b.Status, b.FailReason = index.BackupError, "interrupted: cairn stopped while the backup ran"
				return nil
			}); err != nil {
				return err
			}
			// Its quota reservation, if its project has a quota, ends with it.
			if err := s.repo.DeleteMeta(ctx, metaReservations, b.ID); err != nil && !errors.Is(err, backend.ErrNotFound) {
				s.log.Warn("cannot remove an interrupted backup's quota reservation; it ends by itself after a day", "backup_id", b.ID, "error", err)
			}
			s.log.Warn("backup interrupted by a crash marked error", "backup_id", b.ID)
		case index.BackupDeleting:
			if why, err := s.unfinishedDeleteStays(ctx, b.ID); err != nil {
				s.log.Warn("cannot tell whether an unfinished delete began; it stays deleting, and the next start tries again", "backup_id", b.ID, "error", err)
				continue
			} else if why != "" {
				s.log.Warn("an unfinished delete is not finished: "+why, "backup_id", b.ID)
				continue
			}
			// Finish the delete (not on a read-only repository: the next writer does). One the
			// backend still refuses (a key that may not delete, an immutable file) stays
			// deleting for the next start: failing the start for it, every start failed, and
			// with it every command [TestOpenWhileADeleteCannotFinish].
			// It may have been a failed one: the record of its failure goes too.
			if err := s.deleteStored(ctx, b.ID, true); errors.Is(err, backend.ErrReadOnly) {
				continue
			} else if err != nil {
				s.log.Warn("cannot finish the delete of a backup; it stays deleting, and the next start tries again", "backup_id", b.ID, "error", err)
				continue
			}
			if err := s.idx.DeleteBackup(b.ID); err != nil {
				return err
			}
		case index.BackupRestoring:
			// Its restore ended with the process: the target is incomplete, and the record
			// says so (a restore that still read "running" looked like one that succeeded
			// to a command that waited for it), and so does the manifest, for the other
			// gateways and a rebuilt index, as for a restore that ended
			// [TestRecoveryEndsARestoreACrashInterrupted]. The crash's time is not known:
			// the outcome is dated when the restore started, so a restore another gateway
			// ended after that start stays the newest.
			var ended *index.RestoreOutcome
			if _, err := s.idx.UpdateBackup(b.ID, func(b *index.Backup) error {
				if lr := b.LastRestore; lr.Running() {
					ended = interruptedRestore(lr, "cairn stopped while the restore ran")
					b.LastRestore = ended
				}
				b.Status, b.RestoreTarget = index.BackupAvailable, ""
				return nil
			}); err != nil {
				return err
			}
			if ended != nil {
				s.recordRestore(ctx, b.ID, ended)
			}
			s.removeRestoring(b.ID) // the others show the end (the volume's record says error already)
		}
	}
	snaps, err := s.idx.Snapshots()
	if err != nil {
		return err
	}
	for _, sn := range snaps {
		if sn.Status == index.SnapshotDeleting {
			// Its delete was interrupted (DeleteSnapshot): after the snapshot's removal it is
			// finished; before, the snapshot stays, and so does its record in the repository,
			// which the delete may already have removed.
			if _, err := os.Lstat(sn.Path); errors.Is(err, os.ErrNotExist) {
				if err := s.repo.DeleteMeta(ctx, metaSnapshots, sn.ID); err != nil && !errors.Is(err, backend.ErrNotFound) {
					s.log.Warn("cannot finish the delete of a snapshot; it stays deleting, and the next start tries again", "snapshot_id", sn.ID, "error", err)
					continue
				}
				if err := s.idx.DeleteSnapshot(sn.ID); err != nil {
					return err
				}
				continue
			}
			if err := s.saveSnapshot(ctx, sn); err != nil {
				s.log.Warn("cannot store again the record of a snapshot whose delete was interrupted", "snapshot_id", sn.ID, "error", err)
			}
		}
		if sn.Status != index.SnapshotAvailable {
			s.setSnapshotStatus(sn.ID, index.SnapshotAvailable)
		}
	}
	vols, err := s.idx.Volumes()
	if err != nil {
		return err
	}
	// A --force backup snapshots the volume before it marks it backing-up: look for its
	// snapshots when sysfs shows one, and then ask LVM or device-mapper whose it is.
	leftSnapshots := blockio.AnyDeviceSnapshots(tempSnapshotPrefix)
	for _, v := range vols {
		if v.Kind == KindFile {
			s.removeTempSnapshots(v.Path)
		} else if v.Kind == KindDevice && (v.Status == index.VolumeBackingUp || leftSnapshots) {
			removed, err := blockio.RemoveDeviceSnapshots(v.Path, tempSnapshotPrefix)
			for _, p := range removed {
				s.log.Warn("removed a snapshot left by an interrupted backup", "path", p)
			}
			if err != nil {
				s.log.Error("cannot remove the snapshots an interrupted backup left", "volume_id", v.ID, "error", err)
			}
		}
		switch v.Status {
		case index.VolumeBackingUp:
			// A backup's claim keeps the reason of a volume an unfinished restore left error:
			// such a volume is error again, not intact
			// [TestRecoveryKeepsAnErrorVolumeWhoseBackupACrashInterrupted].
			_, err = s.idx.UpdateVolume(v.ID, func(v *index.Volume) error {
				v.Status = index.VolumeAvailable
				if v.FailReason != "" {
					v.Status = index.VolumeError
				}
				return nil
			})
		case index.VolumeRestoringBackup, index.VolumeCreating:
			_, err = s.idx.UpdateVolume(v.ID, func(v *index.Volume) error {
				v.Status, v.FailReason = index.VolumeError, "restore interrupted: cairn stopped while it ran; the contents are incomplete"
				return nil
			})
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func now() time.Time {
	return time.Now().Add(time.Duration(clockSkewForTest.Load())).UTC().Truncate(time.Microsecond)
}

// clockSkewForTest moves now() (SetClockSkewForTest): a host whose clock is off the store's.
var clockSkewForTest atomic.Int64

// storeNow is the store's time now as this gateway best knows it: its clock plus the offset it
// last measured on its own services object (docs/design.md, "Ages by the store's clock"). The
// ages of the objects other gateways write are judged against it.
func (s *Service) storeNow() time.Time { return now().Add(time.Duration(s.storeOffset.Load())) }

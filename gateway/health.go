package gateway

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/repo"
)

// ServiceStatus is one row of 'service list' (seed 3.6.1).
type ServiceStatus struct {
	Binary         string    `json:"binary"`
	Host           string    `json:"host"`
	Zone           string    `json:"zone"`
	Status         string    `json:"status"` // enabled, disabled
	State          string    `json:"state"`  // up, down
	UpdatedAt      time.Time `json:"updated_at"`
	DisabledReason string    `json:"disabled_reason,omitempty"`
	// Here marks this gateway's own services (the others' come from the repository:
	// peers.go).
	Here bool `json:"-"`
}

// HeartbeatInterval is how often services report.
const HeartbeatInterval = 5 * time.Second

// health holds the latest heartbeat of each service; guarded by mu.
type health struct {
	mu      sync.Mutex
	beats   map[string]beat
	started time.Time
	// peers: the other gateways on the repository as last read (peers.go), at peersRead.
	peers     map[string]*peer
	peersRead time.Time
}

type beat struct {
	at  time.Time
	err error
}

// heartbeat checks each service once and records the result.
func (s *Service) heartbeat(ctx context.Context, api bool) {
	now := time.Now().UTC()
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	berr := repo.StatConfig(cctx, s.be)
	cancel()
	if berr == nil {
		// Backups are refused meanwhile. Read by admins only (os-services) and the log.
		berr = s.roomForIndex(Caller{Admin: true})
	}
	verr := os.MkdirAll(s.volDir, 0o700)
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	s.health.beats["cairn-backup"] = beat{at: now, err: berr}
	s.health.beats["cairn-volume"] = beat{at: now, err: verr}
	if api {
		s.health.beats["cairn-api"] = beat{at: now}
	}
}

// RunHeartbeats reports every HeartbeatInterval until ctx ends (cairn serve).
func (s *Service) RunHeartbeats(ctx context.Context) {
	t := time.NewTicker(HeartbeatInterval)
	defer t.Stop()
	defer s.removeShared()
	every := max(1, int(peerShareEvery/HeartbeatInterval))
	for n := 0; ; n++ {
		s.heartbeat(ctx, true)
		s.sampleIfStale()
		if n%every == 0 {
			s.shareServices(ctx) // and look at the others'
		}
		if n%2 == 1 {
			// Follow what other gateways on the repository stored and deleted.
			if err := s.CatchUp(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("cannot catch up with the repository", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// noGateway is why the API service is down where no gateway runs (the embedded CLI).
const noGateway = "no gateway running ('cairn serve')"

// Services lists cairn's services with their state: this gateway's, then every other
// gateway's on the repository (peers.go). A service is down when its last check failed (the
// reason says why) or its heartbeat is older than three intervals.
func (s *Service) Services(ctx context.Context) []ServiceStatus {
	return append(s.ownServices(ctx), s.peerServices(ctx)...)
}

// ownServices is Services of this gateway alone.
func (s *Service) ownServices(ctx context.Context) []ServiceStatus {
	s.health.mu.Lock()
	fresh := len(s.health.beats) > 0
	s.health.mu.Unlock()
	if !fresh {
		s.heartbeat(ctx, false) // embedded CLI: check now
	}
	host := hostName()
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	var out []ServiceStatus
	for _, name := range []string{"cairn-api", "cairn-backup", "cairn-volume"} {
		st := ServiceStatus{Binary: name, Host: host, Zone: "nova", Status: "enabled", State: "down", Here: true}
		b, ok := s.health.beats[name]
		switch {
		case !ok && name == "cairn-api":
			st.DisabledReason = noGateway
		case !ok:
		case b.err != nil:
			st.UpdatedAt = b.at
			st.DisabledReason = b.err.Error()
		case time.Since(b.at) > 3*HeartbeatInterval:
			st.UpdatedAt = b.at
			st.DisabledReason = "no heartbeat since " + b.at.Format(time.RFC3339)
		default:
			st.UpdatedAt, st.State = b.at, "up"
		}
		out = append(out, st)
	}
	return out
}

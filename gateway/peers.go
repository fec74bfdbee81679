package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// Every gateway's services, on every gateway (docs/design.md): each cairn serve stores its
// services' rows as meta/gateways/<hex HOST:ID> while it runs; Services shows the others'.
const metaGateways = repo.MetaGateways

// peerShareEvery: how often a gateway stores its rows (and reads the others'); peerDownAfter:
// how old another gateway's object may be before its services show down. Variables for tests.
var (
	peerShareEvery = 20 * time.Second
	peerDownAfter  = time.Minute
)

// peerObject is meta/gateways/<name>: a gateway's services as its heartbeat judged them.
type peerObject struct {
	Name     string          `json:"name"`
	Host     string          `json:"host"`
	Services []ServiceStatus `json:"services"`
	At       time.Time       `json:"at"`
	// Process is the gateway's process: one of this host found gone shows its services down
	// at once (docs/design.md, "A gateway process of the same host that is gone").
	Process repo.Process `json:"process,omitzero"`
}

// peer is another gateway as this one last read it: written is its object's last write by
// the store's clock.
type peer struct {
	obj     peerObject
	written time.Time
}

// gatewayName names this gateway in the repository: its host, and 8 hex digits of a hash of
// its index's directory, so two gateways on one host are two.
func (s *Service) gatewayName() string {
	s.nameOnce.Do(func() {
		sum := sha256.Sum256([]byte(canonicalPath(s.idx.Dir())))
		s.name = hostName() + ":" + hex.EncodeToString(sum[:4])
	})
	return s.name
}

// shareServices stores this gateway's rows, then reads the others'. A failure is logged: the
// others show this gateway down until it stores them again.
func (s *Service) shareServices(ctx context.Context) {
	var stored time.Time // this gateway's clock once its object was stored
	if !s.cfg.ReadOnly && !s.repo.ReadOnly() {
		o := peerObject{Name: s.gatewayName(), Host: hostName(), Services: s.ownServices(ctx), At: now(), Process: s.process()}
		if err := s.repo.PutMeta(ctx, metaGateways, o.Name, &o); err != nil && ctx.Err() == nil {
			s.log.Warn("cannot store this gateway's services in the repository; the other gateways show it down", "error", err)
		} else if err == nil {
			stored = now()
		}
	}
	s.readPeers(ctx, stored)
}

// removeShared removes this gateway's object when it stops: a gateway stopped on purpose is
// gone, not down.
func (s *Service) removeShared() {
	if s.cfg.ReadOnly || s.repo.ReadOnly() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.repo.DeleteMeta(ctx, metaGateways, s.gatewayName()); err != nil && !errors.Is(err, backend.ErrNotFound) {
		s.log.Warn("cannot remove this gateway's services from the repository; the others show it down", "error", err)
	}
}

// readPeers reads the other gateways' objects written since the last read, and removes those
// not written for reservationTTL (gateways that never came back). stored, when not zero, is
// this gateway's clock just after it stored its own object: with that write's time in the
// listing it gives the store's clock's offset from this one (storeNow).
func (s *Service) readPeers(ctx context.Context, stored time.Time) {
	written := map[string]time.Time{}
	if err := s.repo.ListMetaTimes(ctx, metaGateways, func(name string, at time.Time) error { written[name] = at; return nil }); err != nil {
		if ctx.Err() == nil {
			s.log.Warn("cannot list the other gateways' services", "error", err)
		}
		return
	}
	own := s.gatewayName()
	if at, ok := written[own]; ok && !stored.IsZero() {
		s.storeOffset.Store(int64(at.Sub(stored)))
		s.storeOffsetKnown.Store(true)
	}
	s.health.mu.Lock()
	old := s.health.peers
	s.health.mu.Unlock()
	peers := map[string]*peer{}
	for name, at := range written {
		if name == own {
			continue
		}
		if s.storeNow().Sub(at) > reservationTTL {
			if !s.cfg.ReadOnly && !s.repo.ReadOnly() {
				s.repo.DeleteMeta(ctx, metaGateways, name) // best effort
			}
			continue
		}
		if p := old[name]; p != nil && p.written.Equal(at) {
			peers[name] = p
			continue
		}
		var o peerObject
		if err := s.repo.GetMeta(ctx, metaGateways, name, &o); err != nil || o.Name != name {
			if err != nil && !errors.Is(err, backend.ErrNotFound) {
				s.log.Warn("another gateway's services unreadable", "gateway", name, "error", err)
			}
			continue
		}
		peers[name] = &peer{obj: o, written: at}
	}
	s.health.mu.Lock()
	s.health.peers, s.health.peersRead = peers, time.Now()
	s.health.mu.Unlock()
}

// peerServices returns the other gateways' rows: as each said while its object is fresh,
// down after. Read again when the heartbeat has not (the embedded CLI).
func (s *Service) peerServices(ctx context.Context) []ServiceStatus {
	s.health.mu.Lock()
	stale := time.Since(s.health.peersRead) > 2*peerShareEvery
	s.health.mu.Unlock()
	if stale {
		s.readPeers(ctx, time.Time{})
	}
	storeNow := s.storeNow()
	host := hostName()
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	names := make([]string, 0, len(s.health.peers))
	for name := range s.health.peers {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []ServiceStatus
	for _, name := range names {
		p := s.health.peers[name]
		shown := p.obj.Host
		if i := strings.LastIndexByte(name, ':'); i >= 0 && (shown == host || shown == "") {
			shown = name[:i] + "@" + name[i+1:] // this host's other gateway: HOST@ID
		}
		down := "" // why its services are down
		switch {
		case s.repo.ProcessGone(p.obj.Process):
			down = fmt.Sprintf("process %d is gone", p.obj.Process.PID)
		case storeNow.Sub(p.written) > peerDownAfter:
			down = "no heartbeat since " + p.written.UTC().Format(time.RFC3339)
		}
		for _, st := range p.obj.Services {
			st.Host, st.Here = shown, false
			if down != "" {
				st.State, st.UpdatedAt, st.DisabledReason = "down", p.written, down
			}
			out = append(out, st)
		}
	}
	return out
}

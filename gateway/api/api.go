package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Auth modes.
const (
	// AuthToken takes the caller from X-Auth-Token, looked up in Options.Tokens.
	AuthToken = "token"
	// AuthNoAuth trusts the x-user-id and x-project-id headers (the user admin, or a role
	// admin in x-roles, is an admin). For tests and labs only.
	AuthNoAuth = "noauth"
)

// Options configure the API.
type Options struct {
	// Auth is AuthToken (the default when empty) or AuthNoAuth.
	Auth string
	// Tokens maps a token to its caller (see LoadTokens); used in AuthToken mode.
	Tokens Tokens
	// Users sign in at the identity endpoint with a password and get tokens; nil: none.
	Users *Users
	// Logger receives a line per refused or failed request; nil discards.
	Logger *slog.Logger
	// SocketOnly: the handler is served on the gateway's unix socket alone (serve without
	// --listen), where the CLI needs no token: no warning that there are none.
	SocketOnly bool
}

// server is the API's handler. It holds no mutable state of its own: the gateway owns it.
type server struct {
	svc    *gateway.Service
	auth   string
	tokens Tokens
	users  *Users
	log    *slog.Logger
	routes *http.ServeMux // /v3 routes, without the optional project segment
}

// New returns the HTTP handler for svc: the Block Storage v3 API under /v3, the version
// document at /, Prometheus metrics at /metrics and a liveness check at /healthz.
func New(svc *gateway.Service, opts Options) http.Handler {
	s := &server{svc: svc, auth: opts.Auth, tokens: opts.Tokens, users: opts.Users, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.auth == "" {
		s.auth = AuthToken
	}
	switch s.auth {
	case AuthNoAuth:
		s.log.Warn("the API runs without authentication (noauth): anyone who reaches it can act as any user, admin included; use it for tests and labs only")
	case AuthToken:
		if len(s.tokens) == 0 && s.users == nil && !opts.SocketOnly {
			s.log.Warn("the API has no tokens: every request will be refused (401); give a tokens file")
		}
	}
	s.routes = s.newRoutes()
	top := http.NewServeMux()
	top.Handle("GET /metrics", s.metricsGuard(promhttp.HandlerFor(svc.Metrics(), promhttp.HandlerOpts{})))
	top.HandleFunc("GET /healthz", s.healthz)
	top.HandleFunc("GET /{$}", s.versionsRoot)
	top.HandleFunc(identityPrefix, s.identity)
	top.HandleFunc(identityPrefix+"/", s.identity)
	top.HandleFunc("/v3", s.v3)
	top.HandleFunc("/v3/", s.v3)
	top.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeFault(w, r, notFound("the resource could not be found"))
	})
	return s.middleware(top)
}

// middleware gives every response a request id and turns a panic into a 500 fault.
func (s *server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Openstack-Request-Id", "req-"+uuid.NewString())
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", p)
				s.writeFault(w, r, &httpError{http.StatusInternalServerError, "internal error"})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// collections are the first path segments after /v3 that name a resource; any other first
// segment is a project id (/v3/{project}/backups, as before microversion 3.67).
var collections = map[string]bool{
	"volumes": true, "backups": true, "snapshots": true, "os-quota-sets": true, "os-services": true,
	"limits": true,
}

// v3 serves /v3/...: version document, then authentication, microversion and the route.
func (s *server) v3(w http.ResponseWriter, r *http.Request) {
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, "/v3"), "/")
	if rest == "" {
		if r.Method != http.MethodGet {
			s.writeFault(w, r, &httpError{http.StatusMethodNotAllowed, "method not allowed"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"versions": []any{versionDoc(r)}})
		return
	}
	ver, err := negotiate(r.Header.Get(versionHeader))
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	w.Header().Set(versionHeader, "volume "+ver.String())
	w.Header().Add("Vary", versionHeader)
	caller, err := s.authenticate(r)
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	segs := strings.Split(rest, "/")
	if !collections[segs[0]] {
		project := segs[0]
		segs = segs[1:]
		if project != caller.Project {
			// An admin acts in the project the URL names (Cinder: an admin's token scoped to
			// that project); anyone else asked for a project that is not theirs.
			if !caller.Admin {
				s.writeFault(w, r, badRequest("malformed request url: project "+project+" is not the project of your credentials"))
				return
			}
			caller.Project = project
		}
	}
	ctx := gateway.WithCaller(r.Context(), caller)
	ctx = context.WithValue(ctx, versionKey{}, ver)
	r2 := r.Clone(ctx)
	r2.URL.Path = "/" + strings.Join(segs, "/")
	r2.URL.RawPath = ""
	s.routes.ServeHTTP(w, r2)
}

func (s *server) newRoutes() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /volumes", s.listVolumes(false))
	m.HandleFunc("GET /volumes/detail", s.listVolumes(true))
	m.HandleFunc("GET /volumes/{id}", s.showVolume)
	m.HandleFunc("POST /volumes", s.createVolume)
	m.HandleFunc("PUT /volumes/{id}", s.updateVolume)
	m.HandleFunc("DELETE /volumes/{id}", s.deleteVolume)

	m.HandleFunc("GET /snapshots", s.listSnapshots)
	m.HandleFunc("GET /snapshots/detail", s.listSnapshots)
	m.HandleFunc("GET /snapshots/{id}", s.showSnapshot)
	m.HandleFunc("POST /snapshots", s.createSnapshot)
	m.HandleFunc("DELETE /snapshots/{id}", s.deleteSnapshot)

	m.HandleFunc("GET /backups", s.listBackups(false))
	m.HandleFunc("GET /backups/detail", s.listBackups(true))
	m.HandleFunc("POST /backups", s.createBackup)
	m.HandleFunc("GET /backups/{id}", s.showBackup)
	m.HandleFunc("PUT /backups/{id}", s.updateBackup)
	m.HandleFunc("DELETE /backups/{id}", s.deleteBackup)
	m.HandleFunc("POST /backups/{id}/action", s.backupAction)
	m.HandleFunc("POST /backups/{id}/restore", s.restoreBackup)
	m.HandleFunc("GET /backups/{id}/export_record", s.exportBackup)
	m.HandleFunc("POST /backups/import_record", s.importBackup)

	m.HandleFunc("GET /os-quota-sets/{project}", s.showQuota)
	m.HandleFunc("PUT /os-quota-sets/{project}", s.updateQuota)
	m.HandleFunc("DELETE /os-quota-sets/{project}", s.deleteQuota)
	m.HandleFunc("GET /os-quota-sets/{project}/defaults", s.defaultQuota)

	m.HandleFunc("GET /os-services", s.listServices)
	m.HandleFunc("GET /limits", s.showLimits)

	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			s.writeFault(w, r, notFound("the resource could not be found"))
			return
		}
		// cinder extend, attach, retype and the like: say what is missing rather than that
		// the volume is.
		s.writeFault(w, r, &httpError{http.StatusMethodNotAllowed, fmt.Sprintf("cairn does not serve %s %s: its Block Storage API covers volumes (list, show, create, update, delete), snapshots, backups, quotas, services and limits", r.Method, r.URL.Path)})
	})
	return m
}

// metricsGuard serves /metrics only to a token of an admin or of role metrics (X-Auth-Token,
// or Authorization: Bearer as Prometheus sends it): its series name every project's policies,
// which a member of another project must not learn. In noauth mode, where any caller may
// claim to be an admin, it stays open.
func (s *server) metricsGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch known, allowed := s.operator(r); {
		case !known:
			s.writeFault(w, r, &httpError{http.StatusUnauthorized, "/metrics needs a token of role admin or metrics: give X-Auth-Token or Authorization: Bearer"})
		case !allowed:
			s.writeFault(w, r, &httpError{http.StatusForbidden, "/metrics is for admins and tokens of role metrics: it names every project's policies"})
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// operator says whether the request carries a known token (X-Auth-Token, or Authorization:
// Bearer; of the tokens file, or one a user's sign-in issued) and whether it is an admin's or
// one of role metrics. In noauth mode every request is allowed.
func (s *server) operator(r *http.Request) (known, allowed bool) {
	if s.auth == AuthNoAuth {
		return true, true
	}
	token := r.Header.Get("X-Auth-Token")
	if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && token == "" {
		token = strings.TrimSpace(bearer)
	}
	if known, allowed = s.tokens.readsMetrics(token); known {
		return known, allowed
	}
	if c, roles, ok := s.users.lookup(token); ok {
		return true, c.Admin || slices.Contains(roles, RoleMetrics)
	}
	return false, false
}

// healthz answers 200 while the backup service is up, else 503. The reason (the backend's
// error: its endpoint, bucket or path) goes only to those who may read os-services or
// /metrics; a load balancer needs the status alone.
func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	for _, st := range s.svc.Services(r.Context()) {
		if st.Here && st.Binary == "cairn-backup" && st.State != "up" {
			body := map[string]string{"status": "down"}
			if _, allowed := s.operator(r); allowed {
				body["reason"] = st.DisabledReason
			}
			writeJSON(w, http.StatusServiceUnavailable, body)
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v) // the client went away; nothing to tell it
}

// maxBody bounds a request body: every request of this API is a small JSON document.
const maxBody = 1 << 20

// decode reads the JSON body into v, naming Cinder's complaints.
func decode(r *http.Request, v any) error { return decodeBody(r, v, false) }

// decodeStrict is decode for a body whose schema Cinder closes (additionalProperties false):
// a field v does not have is refused, not dropped (a misspelt "incremental" would otherwise
// make a full backup).
func decodeStrict(r *http.Request, v any) error { return decodeBody(r, v, true) }

func decodeBody(r *http.Request, v any, strict bool) error {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return badRequest("cannot read the request body: " + err.Error())
	}
	if len(data) > maxBody {
		return &httpError{http.StatusRequestEntityTooLarge, "request body too large"}
	}
	if !strict {
		err = json.Unmarshal(data, v)
	} else if err = json.Unmarshal(data, v); err == nil {
		// Unmarshal checked the syntax and types; the decoder names an unknown field.
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err = dec.Decode(v); err != nil {
			err = fmt.Errorf("%w: remove it", err)
		}
	}
	if err != nil {
		return badRequest("malformed request body: " + err.Error())
	}
	return nil
}

// callerOf is the request's caller, set by v3 after authentication. Without one it is the
// zero Caller, an admin of nothing; the gateway refuses such a request itself.
func callerOf(r *http.Request) gateway.Caller {
	c, _ := gateway.CallerFrom(r.Context())
	return c
}

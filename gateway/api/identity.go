package api

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The identity endpoint: as much of Keystone's v3 API as the stock clients need to sign in
// with a name and a password (cinder --os-auth-url URL --os-username U --os-password P
// --os-project-name P, or an openrc's OS_* variables): version discovery and POST
// /identity/v3/auth/tokens, which answers a token and a catalog whose block-storage
// endpoint is this gateway. Users come from the users file (Users); without one the
// endpoint says how to give it.

// identityPrefix is where the identity endpoint lives: its auth URL is
// http://HOST:PORT/identity/v3 (or /identity, which discovery resolves).
const identityPrefix = "/identity"

// regionName is the catalog's region: devstack's, which clients assume when none is set.
const regionName = "RegionOne"

// identityError is Keystone's error body.
func (s *server) identityError(w http.ResponseWriter, status int, title, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": status, "title": title, "message": msg}})
}

// identity serves /identity/...: discovery on GET, tokens on POST.
func (s *server) identity(w http.ResponseWriter, r *http.Request) {
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, identityPrefix), "/")
	switch {
	case r.Method == http.MethodGet && rest == "v3":
		writeJSON(w, http.StatusOK, map[string]any{"version": identityVersion(r)})
	case r.Method == http.MethodGet && (rest == "" || rest == "v2.0" || rest == "v2"):
		// Unversioned, or the v2 URL of an old openrc: discovery finds v3 here.
		writeJSON(w, http.StatusMultipleChoices, map[string]any{"versions": map[string]any{"values": []any{identityVersion(r)}}})
	case r.Method == http.MethodPost && rest == "v3/auth/tokens":
		s.issueToken(w, r)
	case rest == "v3/auth/tokens":
		s.identityError(w, http.StatusMethodNotAllowed, "Method Not Allowed", "cairn's identity endpoint only issues tokens here (POST)")
	default:
		s.identityError(w, http.StatusNotFound, "Not Found", "cairn's identity endpoint serves version discovery and POST /identity/v3/auth/tokens only")
	}
}

func identityVersion(r *http.Request) map[string]any {
	return map[string]any{
		"id":      "v3.14",
		"status":  "stable",
		"updated": "2020-04-07T00:00:00Z",
		"links":   []any{map[string]string{"rel": "self", "href": baseURL(r) + identityPrefix + "/v3/"}},
		"media-types": []any{map[string]string{"base": "application/json",
			"type": "application/vnd.openstack.identity-v3+json"}},
	}
}

// tokenRequest is the part of Keystone's v3 sign-in body cairn reads.
type tokenRequest struct {
	Auth struct {
		Identity struct {
			Methods  []string `json:"methods"`
			Password struct {
				User struct {
					ID       string `json:"id"`
					Name     string `json:"name"`
					Password string `json:"password"`
				} `json:"user"`
			} `json:"password"`
		} `json:"identity"`
		Scope json.RawMessage `json:"scope"`
	} `json:"auth"`
}

type projectScope struct {
	Project *struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"project"`
}

// issueToken signs a user in (POST /identity/v3/auth/tokens): 201 with the token in
// X-Subject-Token and its user, project, roles and catalog in the body.
func (s *server) issueToken(w http.ResponseWriter, r *http.Request) {
	if s.users == nil {
		s.identityError(w, http.StatusUnauthorized, "Unauthorized", "this gateway signs in no users: start it with --users FILE (lines from 'cairn user add'), or use a token of --tokens (--os-auth-type admin_token)")
		return
	}
	var req tokenRequest
	if err := decode(r, &req); err != nil {
		s.identityError(w, http.StatusBadRequest, "Bad Request", err.Error())
		return
	}
	id := req.Auth.Identity
	if len(id.Methods) != 1 || id.Methods[0] != "password" {
		s.identityError(w, http.StatusUnauthorized, "Unauthorized", fmt.Sprintf("sign-in method %v: cairn signs in with a password only", id.Methods))
		return
	}
	user := id.Password.User.Name
	if user == "" {
		user = id.Password.User.ID // a user's id is its name
	}
	var scope projectScope
	if len(req.Auth.Scope) > 0 && string(req.Auth.Scope) != "null" {
		if err := json.Unmarshal(req.Auth.Scope, &scope); err != nil || scope.Project == nil {
			s.identityError(w, http.StatusUnauthorized, "Unauthorized", "cairn scopes a token to a project only: give --os-project-name")
			return
		}
	}
	project := ""
	if scope.Project != nil {
		project = scope.Project.Name
		if project == "" {
			project = scope.Project.ID // a project's id is its name
		}
	}
	sess, err := s.users.SignIn(RemoteHost(r), user, id.Password.User.Password, project)
	if err != nil {
		s.log.Warn("sign-in refused", "user", user, "project", project, "remote", r.RemoteAddr, "error", err)
		if err == errThrottled {
			w.Header().Set("Retry-After", "60")
			s.identityError(w, http.StatusTooManyRequests, "Too Many Requests", err.Error())
		} else if IsRefused(err) {
			s.identityError(w, http.StatusUnauthorized, "Unauthorized", "the request you have made requires authentication: "+err.Error())
		} else {
			s.identityError(w, http.StatusServiceUnavailable, "Service Unavailable", "cannot sign in: "+err.Error())
		}
		return
	}
	s.log.Info("signed in", "user", user, "project", sess.Caller.Project, "remote", r.RemoteAddr)
	domain := map[string]string{"id": "default", "name": "Default"}
	roles := make([]any, 0, len(sess.Roles))
	for _, role := range sess.Roles {
		roles = append(roles, map[string]string{"id": role, "name": role})
	}
	w.Header().Set("X-Subject-Token", sess.Token)
	writeJSON(w, http.StatusCreated, map[string]any{"token": map[string]any{
		"methods":    []string{"password"},
		"issued_at":  keystoneTime(sess.Issued),
		"expires_at": keystoneTime(sess.Expires),
		"audit_ids":  []string{},
		"user":       map[string]any{"id": user, "name": user, "domain": domain, "password_expires_at": nil},
		"project":    map[string]any{"id": sess.Caller.Project, "name": sess.Caller.Project, "domain": domain},
		"is_domain":  false,
		"roles":      roles,
		"catalog":    catalog(r, sess.Caller.Project),
	}})
}

func keystoneTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z") }

// catalog names this gateway as the project's block-storage endpoint, under the service type
// clients look for (volumev3, cinderclient's) and its official name (block-storage).
func catalog(r *http.Request, project string) []any {
	u := baseURL(r) + "/v3/" + url.PathEscape(project)
	var endpoints []any
	for _, iface := range []string{"public", "internal", "admin"} {
		endpoints = append(endpoints, map[string]string{"id": "cairn-" + iface, "interface": iface,
			"region": regionName, "region_id": regionName, "url": u})
	}
	var services []any
	for _, t := range []string{"volumev3", "block-storage"} {
		services = append(services, map[string]any{"id": "cairn-" + t, "type": t, "name": "cinderv3", "endpoints": endpoints})
	}
	return services
}

// RemoteHost is the address a request came from, without its port: what sign-in failures are
// counted by.
func RemoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

package ui

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/gateway"
)

// cookieName is the session cookie; its value is the session's random id, nothing else.
const cookieName = "cairn_console"

// maxSessions bounds the sessions kept; past it the least recently used one goes. One caller
// (a token's user and project) keeps at most maxSessionsEach: past it the caller's own least
// recently used one goes, so signing in again and again never signs others out.
const (
	maxSessions     = 1000
	maxSessionsEach = 32
)

// session is one signed-in browser. Only the store's goroutines touch it, under its lock.
type session struct {
	id      string
	caller  gateway.Caller // as the token says
	issued  string         // signed in with a password: the token it was issued, checked on each request
	project string         // admins: the project they act in (caller.Project at first)
	all     bool           // admins: lists show every project
	csrf    string
	flash   string // a one-shot message for the next page
	created time.Time
	seen    time.Time
}

// sessions is the server-side session store. Sessions end when idle for idle, at most max
// after sign-in, at sign-out, and when the gateway restarts.
type sessions struct {
	mu        sync.Mutex
	byID      map[string]*session
	idle, max time.Duration
	now       func() time.Time
}

func newSessions(idle, max time.Duration, now func() time.Time) *sessions {
	return &sessions{byID: map[string]*session{}, idle: idle, max: max, now: now}
}

// randomID returns 32 random bytes, base64url: session ids and CSRF tokens.
func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand panics itself if it cannot read)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session for c.
func (st *sessions) create(c gateway.Caller, issued string) *session {
	st.mu.Lock()
	defer st.mu.Unlock()
	t := st.now()
	st.expireLocked(t)
	var oldest, oldestOwn *session
	own := 0
	for _, s := range st.byID {
		if oldest == nil || s.seen.Before(oldest.seen) {
			oldest = s
		}
		if s.caller == c {
			own++
			if oldestOwn == nil || s.seen.Before(oldestOwn.seen) {
				oldestOwn = s
			}
		}
	}
	switch {
	case own >= maxSessionsEach:
		delete(st.byID, oldestOwn.id)
	case len(st.byID) >= maxSessions:
		delete(st.byID, oldest.id)
	}
	s := &session{id: randomID(), caller: c, issued: issued, project: c.Project, csrf: randomID(), created: t, seen: t}
	st.byID[s.id] = s
	return s
}

// get returns a copy of the live session id names, and marks it used; nil if there is none.
func (st *sessions) get(id string) *session {
	st.mu.Lock()
	defer st.mu.Unlock()
	t := st.now()
	s := st.byID[id]
	if s == nil {
		return nil
	}
	if st.expired(s, t) {
		delete(st.byID, id)
		return nil
	}
	s.seen = t
	c := *s
	return &c
}

// update changes the session id names with fn, if it is still there.
func (st *sessions) update(id string, fn func(*session)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if s := st.byID[id]; s != nil {
		fn(s)
	}
}

// takeFlash returns the session's one-shot message and clears it.
func (st *sessions) takeFlash(id string) string {
	var msg string
	st.update(id, func(s *session) { msg, s.flash = s.flash, "" })
	return msg
}

func (st *sessions) remove(id string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.byID, id)
}

func (st *sessions) expired(s *session, t time.Time) bool {
	return t.Sub(s.seen) > st.idle || t.Sub(s.created) > st.max
}

func (st *sessions) expireLocked(t time.Time) {
	for id, s := range st.byID {
		if st.expired(s, t) {
			delete(st.byID, id)
		}
	}
}

// setCookie gives the browser the session's id: HttpOnly (no script reads it),
// SameSite=Strict (no other site's page sends it), Secure over TLS (the proxy's, when the
// public URL is https), scoped to /ui/.
func (s *server) setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: value, Path: prefix, MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.origin(r).Scheme == "https"})
}

// origin is where the console's pages are served from as browsers see it: the public URL
// (a TLS-terminating proxy in front, which the gateway cannot tell from a request), else the
// request's own host and scheme.
func (s *server) origin(r *http.Request) *url.URL {
	if s.public != nil {
		return s.public
	}
	u := &url.URL{Scheme: "http", Host: r.Host}
	if r.TLS != nil {
		u.Scheme = "https"
	}
	return u
}

// validCSRF reports whether the form's token is the session's.
func validCSRF(s *session, r *http.Request) bool {
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) == 1
}

// sameOrigin reports whether a POST comes from a page of this console: its Origin (or, when
// a browser sends none, its Referer) must name the host the request was sent to. A request
// with neither is let through to the CSRF token check, which it cannot pass without a page
// of this session.
//
// Behind a TLS-terminating proxy the browser says https and the proxy's host: without
// --public-url every sign-in and action was refused there, and the cookie was never Secure
// [TestConsoleBehindATLSProxy].
func (s *server) sameOrigin(r *http.Request) bool {
	src := r.Header.Get("Origin")
	if src == "" {
		src = r.Header.Get("Referer")
	}
	if src == "" {
		return true
	}
	u, err := url.Parse(src)
	if err != nil || u.Host == "" {
		return false
	}
	o := s.origin(r)
	return u.Scheme == o.Scheme && u.Host == o.Host
}

package ui

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/api"
	"github.com/google/uuid"
)

// prefix is where the console is mounted.
const prefix = "/ui/"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Defaults of the session lifetime.
const (
	DefaultIdle     = 30 * time.Minute
	DefaultLifetime = 12 * time.Hour
)

// Options configure the console.
type Options struct {
	// Tokens are the API's tokens: a token signs in as its caller.
	Tokens api.Tokens
	// Users sign in with a name and a password (nil: none). Such a session lasts while the
	// token it was issued is good: at most an hour, and not past a change of the user's line.
	Users *api.Users
	// Idle ends a session unused this long; Lifetime ends one this long after sign-in.
	// Zero means DefaultIdle and DefaultLifetime.
	Idle, Lifetime time.Duration
	// Logger receives sign-ins, sign-outs, refused requests and failures; nil discards.
	Logger *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
	// PublicURL is the console's address as browsers reach it, when a reverse proxy that
	// ends TLS serves it (ParsePublicURL); nil: the address each request was sent to.
	PublicURL *url.URL
}

// ParsePublicURL checks a console address given by an admin (--public-url): http or https,
// a host, and no path, query or user. "" is none.
func ParsePublicURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return nil, err
	case u.Scheme != "http" && u.Scheme != "https", u.Hostname() == "":
		return nil, fmt.Errorf("%q: give the scheme and host browsers use, e.g. https://backup.example.com", s)
	case strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil || u.Fragment != "":
		return nil, fmt.Errorf("%q: give only the scheme and host (the console is at /ui/ there)", s)
	}
	// As a browser's Origin says it: the host in lower case, no port when it is the scheme's.
	host := strings.ToLower(u.Host)
	if p := u.Port(); u.Scheme == "https" && p == "443" || u.Scheme == "http" && p == "80" {
		host = strings.TrimSuffix(host, ":"+p)
	}
	return &url.URL{Scheme: u.Scheme, Host: host}, nil
}

// server is the console's handler. Its only state is the session store.
type server struct {
	svc      *gateway.Service
	tokens   api.Tokens
	users    *api.Users
	sessions *sessions
	log      *slog.Logger
	now      func() time.Time
	pages    map[string]*template.Template
	public   *url.URL // Options.PublicURL
}

// New returns the console's handler, to be mounted at /ui/ (it serves /ui/ and below).
func New(svc *gateway.Service, opts Options) (http.Handler, error) {
	if opts.Idle <= 0 {
		opts.Idle = DefaultIdle
	}
	if opts.Lifetime <= 0 {
		opts.Lifetime = DefaultLifetime
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	s := &server{svc: svc, tokens: opts.Tokens, users: opts.Users, sessions: newSessions(opts.Idle, opts.Lifetime, opts.Now),
		log: opts.Logger, now: opts.Now, pages: pages, public: opts.PublicURL}
	static, _ := fs.Sub(staticFS, "static")
	m := http.NewServeMux()
	m.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /ui/{$}", s.home)
	m.HandleFunc("POST /ui/signin", s.signIn)
	m.HandleFunc("POST /ui/signout", s.signOut)

	m.Handle("GET /ui/volumes", s.page(s.volumesPage))
	m.Handle("GET /ui/volumes/{id}", s.page(s.volumePage))
	m.Handle("GET /ui/backups/{id}", s.page(s.backupPage))
	m.Handle("GET /ui/jobs", s.page(s.jobsPage))
	m.Handle("GET /ui/jobs/{kind}/{subject}", s.page(s.jobPage))
	m.Handle("GET /ui/policies", s.page(s.policiesPage))
	m.Handle("GET /ui/repository", s.page(s.repositoryPage))
	m.Handle("GET /ui/services", s.page(s.servicesPage))

	m.Handle("POST /ui/project", s.action(s.switchProject))
	m.Handle("POST /ui/volumes/{id}/backup", s.action(s.backupNow))
	m.Handle("POST /ui/volumes/{id}/prune", s.action(s.prune))
	m.Handle("POST /ui/volumes/{id}/rename", s.action(s.rename))
	m.Handle("POST /ui/backups/{id}/restore", s.action(s.restore))
	m.Handle("POST /ui/backups/{id}/cancel", s.action(s.cancel))
	m.Handle("POST /ui/backups/{id}/protect", s.action(s.protect))
	m.Handle("POST /ui/backups/{id}/export", s.action(s.export))
	m.Handle("POST /ui/backups/{id}/verify", s.action(s.verify))
	m.Handle("POST /ui/repository/check", s.action(s.check))
	m.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, nil, &statusError{http.StatusNotFound, "there is no such page"})
	})
	return s.secure(m), nil
}

// secure sets the headers every response carries and turns a panic into a 500 page.
func (s *server) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/ui/static/") {
			h.Set("Cache-Control", "no-store")
		}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("console handler panic", "method", r.Method, "path", r.URL.Path, "panic", p)
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// request is what a handler gets: the session and a context that carries its caller.
type request struct {
	*http.Request
	sess *session
	ctx  context.Context
	all  bool // an admin who lists every project
}

// statusError is an error of the console itself (no such page, a bad form) with its status.
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return e.msg }

func badForm(format string, args ...any) error {
	return &statusError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// statusOf is the status of err: the console's own, else the API's mapping of gateway errors.
func statusOf(err error) int {
	var se *statusError
	if errors.As(err, &se) {
		return se.status
	}
	return api.StatusOf(err)
}

// session returns the request's live session, or nil.
func (s *server) session(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return nil
	}
	sess := s.sessions.get(c.Value)
	if sess != nil && sess.issued != "" {
		// The users file is read again on every lookup: a session whose user's line changed
		// (a role taken away, another project) ends, as the API's next request with the
		// token would be another caller's. It kept the caller of its sign-in, an admin's
		// rights among them, for the token's hour [TestASessionEndsWhenItsUsersRolesChange].
		if c, ok := s.users.Lookup(sess.issued); !ok || c != sess.caller {
			s.sessions.remove(sess.id)
			return nil
		}
	}
	return sess
}

// bind makes the request of a signed-in session: its context carries the session's caller,
// acting in the project an admin chose.
func (s *server) bind(r *http.Request, sess *session) *request {
	c := sess.caller
	if c.Admin {
		c.Project = sess.project
	}
	return &request{Request: r, sess: sess, ctx: gateway.WithCaller(r.Context(), c), all: c.Admin && sess.all}
}

// page serves a GET page to a signed-in session; others go to the sign-in form.
func (s *server) page(fn func(w http.ResponseWriter, r *request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess := s.session(r)
		if sess == nil {
			http.Redirect(w, r, prefix, http.StatusSeeOther)
			return
		}
		rq := s.bind(r, sess)
		if err := fn(w, rq); err != nil {
			s.fail(w, r, sess, err)
		}
	})
}

// action serves a POST of a signed-in session after checking its origin and CSRF token.
func (s *server) action(fn func(w http.ResponseWriter, r *request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		sess := s.session(r)
		if sess == nil {
			s.fail(w, r, nil, &statusError{http.StatusUnauthorized, "your session has ended: sign in again"})
			return
		}
		if !s.sameOrigin(r) {
			s.log.Warn("console: cross-origin POST refused", "path", r.URL.Path, "origin", r.Header.Get("Origin"), "user", sess.caller.User)
			s.fail(w, r, sess, &statusError{http.StatusForbidden, "cross-origin request refused"})
			return
		}
		if !validCSRF(sess, r) {
			s.log.Warn("console: POST without a valid CSRF token refused", "path", r.URL.Path, "user", sess.caller.User)
			s.fail(w, r, sess, &statusError{http.StatusForbidden, "the form's security token is missing or stale: reload the page and try again"})
			return
		}
		if err := fn(w, s.bind(r, sess)); err != nil {
			s.fail(w, r, sess, err)
		}
	})
}

// flash leaves a message for the session's next page.
func (s *server) flash(r *request, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.sessions.update(r.sess.id, func(ss *session) { ss.flash = msg })
}

// view is what every page template gets.
type view struct {
	Title   string
	Nav     string
	User    string
	Project string
	Admin   bool
	All     bool
	CSRF    string
	Flash   string
	Live    bool // the page refreshes its live parts while something runs
	Now     time.Time
	Data    any
	Status  int
}

func (s *server) render(w http.ResponseWriter, r *http.Request, sess *session, status int, name string, v view) {
	t := s.pages[name]
	if t == nil {
		panic("no template " + name)
	}
	v.Now = s.now()
	v.Status = status
	if sess != nil {
		v.User, v.Project, v.Admin, v.All, v.CSRF = sess.caller.User, sess.project, sess.caller.Admin, sess.all, sess.csrf
		if !sess.caller.Admin {
			v.Project = sess.caller.Project
		}
		v.Flash = s.sessions.takeFlash(sess.id)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", v); err != nil {
		s.log.Error("console: render failed", "page", name, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// fail shows err as an error page with its status, in the words the API's faults use
// (api.FaultMessage): a server-side failure's detail names paths, an admin's to read. Its
// request id ties the page to the log, which keeps the detail for everyone.
func (s *server) fail(w http.ResponseWriter, r *http.Request, sess *session, err error) {
	status := statusOf(err)
	var c gateway.Caller // nobody signed in: a member's words
	if sess != nil {
		c = sess.caller
	}
	msg := api.FaultMessage(s.svc, c, status, err)
	if status >= 500 {
		id := "req-" + uuid.NewString()
		s.log.Error("console request failed", "method", r.Method, "path", r.URL.Path, "request_id", id, "error", err)
		msg += " (request " + id + ")"
	}
	s.render(w, r, sess, status, "error", view{Title: http.StatusText(status), Data: msg})
}

// home is the sign-in form, or the volumes for a signed-in session.
func (s *server) home(w http.ResponseWriter, r *http.Request) {
	if s.session(r) != nil {
		http.Redirect(w, r, prefix+"volumes", http.StatusSeeOther)
		return
	}
	s.render(w, r, nil, http.StatusOK, "signin", view{Title: "Sign in", Data: s.signinForm("")})
}

// signinForm is the sign-in page's data: which ways in the gateway has, and an error.
type signinForm struct {
	Error         string
	Users, Tokens bool
}

func (s *server) signinForm(msg string) signinForm {
	return signinForm{Error: msg, Users: s.users != nil, Tokens: len(s.tokens) > 0}
}

func (s *server) signIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if !s.sameOrigin(r) {
		s.fail(w, r, nil, &statusError{http.StatusForbidden, "cross-origin request refused"})
		return
	}
	var c gateway.Caller
	var issued string
	ok, msg := false, "that token is not valid"
	if user := strings.TrimSpace(r.PostFormValue("user")); user != "" && s.users != nil {
		sess, err := s.users.SignIn(api.RemoteHost(r), user, r.PostFormValue("password"), strings.TrimSpace(r.PostFormValue("project")))
		switch {
		case err == nil:
			c, issued, ok = sess.Caller, sess.Token, true
		case api.IsRefused(err):
			msg = err.Error()
		default:
			s.log.Error("console: sign-in failed", "user", user, "error", err)
			msg = "cannot sign in now: the users file cannot be read (see the gateway's log)"
		}
	} else {
		c, ok = s.tokens.Lookup(r.PostFormValue("token"))
	}
	if !ok {
		s.log.Warn("console: sign-in refused", "remote", r.RemoteAddr)
		s.render(w, r, nil, http.StatusUnauthorized, "signin", view{Title: "Sign in", Data: s.signinForm(msg)})
		return
	}
	sess := s.sessions.create(c, issued)
	s.setCookie(w, r, sess.id, 0)
	s.log.Info("console: signed in", "user", c.User, "project", c.Project, "admin", c.Admin, "remote", r.RemoteAddr)
	http.Redirect(w, r, prefix+"volumes", http.StatusSeeOther)
}

func (s *server) signOut(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if sess := s.session(r); sess != nil {
		if !s.sameOrigin(r) || !validCSRF(sess, r) {
			s.fail(w, r, sess, &statusError{http.StatusForbidden, "the form's security token is missing or stale: reload the page and try again"})
			return
		}
		s.sessions.remove(sess.id)
		s.log.Info("console: signed out", "user", sess.caller.User)
	}
	s.setCookie(w, r, "", -1)
	http.Redirect(w, r, prefix, http.StatusSeeOther)
}

// switchProject lets an admin act in another project, or list every project.
func (s *server) switchProject(w http.ResponseWriter, r *request) error {
	if !r.sess.caller.Admin {
		return &statusError{http.StatusForbidden, "only an admin may switch project"}
	}
	p := strings.TrimSpace(r.PostFormValue("project"))
	all := p == "*"
	if p == "" || all {
		p = r.sess.project
	}
	s.sessions.update(r.sess.id, func(ss *session) { ss.project, ss.all = p, all })
	back := r.PostFormValue("back")
	if !strings.HasPrefix(back, prefix) || strings.HasPrefix(back, "//") {
		back = prefix + "volumes"
	}
	http.Redirect(w, r.Request, back, http.StatusSeeOther)
	return nil
}

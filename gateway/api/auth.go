package api

import (
	"bufio"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/cairn-backup/cairn/gateway"
)

// Tokens maps each token of a tokens file to its holder. The API and the web console
// (gateway/ui) check credentials against the same Tokens, loaded once.
type Tokens map[string]Token

// Token is one line of a tokens file: the caller it authenticates and its roles.
type Token struct {
	Caller gateway.Caller
	// Roles are the line's roles (admin, member, metrics, ...). A token whose only role is
	// metrics reads /metrics and nothing else: the API, the console and NBD refuse it.
	Roles []string
}

// RoleMetrics lets a token read /metrics, which names every project's policies (for a
// Prometheus scraper, which should not hold an admin's token).
const RoleMetrics = "metrics"

// find returns the token's entry. It compares against every token in constant time, so
// timing does not reveal a prefix.
func (t Tokens) find(token string) (Token, bool) {
	var found *Token
	for k, c := range t {
		if subtle.ConstantTimeCompare([]byte(k), []byte(token)) == 1 {
			found = &c
		}
	}
	if token == "" || found == nil {
		return Token{}, false
	}
	return *found, true
}

// Lookup returns the caller of token; a metrics-only token has none.
func (t Tokens) Lookup(token string) (gateway.Caller, bool) {
	e, ok := t.find(token)
	if !ok || e.metricsOnly() {
		return gateway.Caller{}, false
	}
	return e.Caller, true
}

// readsMetrics says whether the token may read /metrics: an admin's, or one with role metrics.
func (t Tokens) readsMetrics(token string) (known, allowed bool) {
	e, ok := t.find(token)
	if !ok {
		return false, false
	}
	return true, e.Caller.Admin || slices.Contains(e.Roles, RoleMetrics)
}

func (e Token) metricsOnly() bool { return onlyMetrics(e.Roles) }

// LoadTokens reads a tokens file: one "TOKEN USER PROJECT ROLE[,ROLE...]" per line; the
// role admin makes an admin, the role metrics (alone) a token that only reads /metrics. Blank lines and lines starting with # are skipped.
func LoadTokens(path string) (Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	defer f.Close()
	tokens := Tokens{}
	err = readLines(f, "tokens file "+path, "TOKEN USER PROJECT ROLE[,ROLE...]", func(fields []string) error {
		if _, dup := tokens[fields[0]]; dup {
			return errors.New("the token is already on an earlier line")
		}
		roles := strings.Split(fields[3], ",")
		tokens[fields[0]] = Token{Caller: gateway.Caller{User: fields[1], Project: fields[2],
			Admin: slices.Contains(roles, "admin")}, Roles: roles}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return tokens, nil
}

// readLines reads the lines of a tokens or users file (what names it in errors): blank lines
// and lines starting with # are skipped, every other line must have the fields format names
// (one word each), and fn takes them. An error names the file and the line.
func readLines(r io.Reader, what, format string, fn func(fields []string) error) error {
	want := len(strings.Fields(format))
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != want {
			return fmt.Errorf("%s line %d: want %s, got %d fields", what, n, format, len(fields))
		}
		if err := fn(fields); err != nil {
			return fmt.Errorf("%s line %d: %w", what, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Lookup returns the caller of a token of the tokens file, or else of one issued to a user
// (users may be nil): what every check of a token takes, the API's and NBD's export names.
func Lookup(tokens Tokens, users *Users) func(token string) (gateway.Caller, bool) {
	return func(token string) (gateway.Caller, bool) {
		if c, ok := tokens.Lookup(token); ok {
			return c, true
		}
		return users.Lookup(token)
	}
}

var errUnauthorized = &httpError{http.StatusUnauthorized, "the request you have made requires authentication: give a valid X-Auth-Token"}

// authenticate returns the caller of a request.
func (s *server) authenticate(r *http.Request) (gateway.Caller, error) {
	token := r.Header.Get("X-Auth-Token")
	if s.auth == AuthNoAuth {
		return noauthCaller(r, token)
	}
	if token == "" {
		return gateway.Caller{}, errUnauthorized
	}
	c, ok := Lookup(s.tokens, s.users)(token)
	if !ok {
		return gateway.Caller{}, errUnauthorized
	}
	return c, nil
}

// noauthCaller trusts the request's headers, as Cinder's noauth middleware does: x-user-id
// and x-project-id (or a token "user:project"); the user admin or a role admin is an admin.
func noauthCaller(r *http.Request, token string) (gateway.Caller, error) {
	user, project := r.Header.Get("X-User-Id"), r.Header.Get("X-Project-Id")
	if user == "" && token != "" {
		user, project, _ = strings.Cut(token, ":")
	}
	if user == "" {
		return gateway.Caller{}, &httpError{http.StatusUnauthorized, "noauth: give x-user-id and x-project-id headers"}
	}
	if project == "" {
		project = user
	}
	admin := user == "admin"
	for _, role := range strings.Split(r.Header.Get("X-Roles"), ",") {
		admin = admin || strings.TrimSpace(role) == "admin"
	}
	return gateway.Caller{User: user, Project: project, Admin: admin}, nil
}

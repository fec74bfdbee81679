package api

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"golang.org/x/crypto/bcrypt"
)

// Users are the people who sign in with a name and a password, as OpenStack users do through
// Keystone (the identity endpoint, identity.go): a users file of "USER PROJECT
// ROLE[,ROLE...] BCRYPT_HASH" lines, one per project a user may act in. Signing in issues a
// token that the API then takes in X-Auth-Token like a token of the tokens file.
//
// The file is read again when it changes, so users are added, removed or given a new
// password without a restart; an issued token stops working as soon as its user's line is
// removed or its password changes (the token's MAC covers the line's hash), and after
// TokenLifetime in any case. Tokens are MACed under the repository's token key (UseKey), so
// every gateway of the repository with the same line takes them, across restarts; without
// one, under a key of this process.
type Users struct {
	path string
	key  []byte
	now  func() time.Time

	mu      sync.Mutex
	stamp   fileStamp // of the file entries were read from
	entries map[userKey]userEntry
	fails   map[string]failures // by the address sign-ins came from; under mu
}

// failures counts an address's refused sign-ins in the window that began at start.
type failures struct {
	n     int
	start time.Time
}

// Failed sign-ins from one address beyond maxFailures within failureWindow are refused
// without a password check until the window ends: a guesser gets a handful of tries a
// minute, and a flood of guesses does not take the CPU from backups (each check is a bcrypt
// comparison). At most maxTracked addresses are remembered.
const (
	maxFailures   = 5
	failureWindow = time.Minute
	maxTracked    = 4096
)

// errThrottled refuses a sign-in from an address that failed too often.
const errThrottled = signInError("too many failed sign-ins from this address: wait a minute")

// throttled says whether from has failed too often lately.
func (u *Users) throttled(from string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	f, ok := u.fails[from]
	return ok && f.n >= maxFailures && u.now().Before(f.start.Add(failureWindow))
}

// failed records a refused sign-in from from.
func (u *Users) failed(from string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.now()
	if u.fails == nil {
		u.fails = map[string]failures{}
	}
	if len(u.fails) >= maxTracked {
		for a, f := range u.fails {
			if !now.Before(f.start.Add(failureWindow)) {
				delete(u.fails, a)
			}
		}
		if len(u.fails) >= maxTracked {
			clear(u.fails) // a flood from everywhere: forget rather than grow
		}
	}
	f := u.fails[from]
	if !now.Before(f.start.Add(failureWindow)) {
		f = failures{start: now}
	}
	f.n++
	u.fails[from] = f
}

// TokenLifetime is how long an issued token is good for: Keystone's default.
const TokenLifetime = time.Hour

type userKey struct{ user, project string }

type userEntry struct {
	hash  []byte
	roles []string
}

// fileStamp tells whether a file changed since it was read.
type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

// issuedPrefix starts every token Users issue, so they are told from a tokens file's at a glance.
const issuedPrefix = "cairnu1."

// UseKey makes the users' tokens signed with key (the repository's TokenKey) instead of the
// random key LoadUsers drew: then every gateway of the repository takes the tokens any of
// them issued, and a restart ends no session. Call it before the first sign-in.
func (u *Users) UseKey(key []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.key = append([]byte(nil), key...)
}

// LoadUsers reads a users file; its errors name the file and the line.
func LoadUsers(path string) (*Users, error) {
	u := &Users{path: path, key: make([]byte, 32), now: time.Now}
	if _, err := rand.Read(u.key); err != nil {
		return nil, err
	}
	if _, err := u.current(); err != nil {
		return nil, err
	}
	return u, nil
}

// current returns the file's entries, reading it again when it changed.
func (u *Users) current() (map[userKey]userEntry, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	st, err := statFile(u.path)
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	if u.entries != nil && st == u.stamp {
		return u.entries, nil
	}
	entries, err := readUsers(u.path)
	if err != nil {
		return nil, err
	}
	u.entries, u.stamp = entries, st
	return entries, nil
}

func statFile(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	st := fileStamp{mod: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino // a file replaced by rename in the same second and size
	}
	return st, nil
}

// UserLine is one line of a users file.
type UserLine struct {
	User, Project string
	Roles         []string
	Hash          string
}

func (l UserLine) String() string {
	return fmt.Sprintf("%s %s %s %s", l.User, l.Project, strings.Join(l.Roles, ","), l.Hash)
}

// ReadUserLines reads a users file's lines; a missing file has none.
func ReadUserLines(path string) ([]UserLine, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	var lines []UserLine
	seen := map[userKey]bool{}
	err = readLines(bytes.NewReader(data), "users file "+path, "USER PROJECT ROLE[,ROLE...] HASH", func(f []string) error {
		if _, err := bcrypt.Cost([]byte(f[3])); err != nil {
			return errors.New("the hash is not a bcrypt hash (make lines with 'cairn user add')")
		}
		roles := strings.Split(f[2], ",")
		if err := CheckRoles(roles); err != nil {
			return err
		}
		k := userKey{f[0], f[1]}
		if seen[k] {
			return fmt.Errorf("user %s of project %s is already on an earlier line", f[0], f[1])
		}
		seen[k] = true
		lines = append(lines, UserLine{User: f[0], Project: f[1], Roles: roles, Hash: f[3]})
		return nil
	})
	return lines, err
}

// CheckRoles refuses a role cairn does not know: a reader (Cinder's read-only persona) would
// act as a member, so it is refused rather than granted more than was meant.
func CheckRoles(roles []string) error {
	for _, r := range roles {
		if r != "member" && r != "admin" && r != RoleMetrics {
			return fmt.Errorf("role %q: cairn knows member, admin and metrics", r)
		}
	}
	return nil
}

func readUsers(path string) (map[userKey]userEntry, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("users file: %w", err)
	}
	lines, err := ReadUserLines(path)
	if err != nil {
		return nil, err
	}
	entries := make(map[userKey]userEntry, len(lines))
	for _, l := range lines {
		entries[userKey{l.User, l.Project}] = userEntry{hash: []byte(l.Hash), roles: l.Roles}
	}
	return entries, nil
}

// HashPassword returns the bcrypt hash of a users file line.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", errors.New("the password is empty")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if errors.Is(err, bcrypt.ErrPasswordTooLong) {
		return "", errors.New("the password is longer than 72 bytes, which bcrypt does not take: choose a shorter one")
	}
	return string(h), err
}

// signInError is a refused sign-in, told the client as a 401.
type signInError string

func (e signInError) Error() string { return string(e) }

// IsRefused says whether a SignIn error refuses the credentials (tell the client) rather than
// failing (the users file cannot be read: log it).
func IsRefused(err error) bool {
	var r signInError
	return errors.As(err, &r)
}

// errSignIn is every refused sign-in but one: which of user, project and password was wrong
// is not said, so names cannot be probed.
const errSignIn = signInError("wrong user name, password or project")

// dummyHash is compared against when the user is unknown, so an unknown name costs the same
// time as a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("cairn: no such user"), bcrypt.DefaultCost)

// Session is a signed-in user's: the caller, the roles of the line and the token.
type Session struct {
	Caller  gateway.Caller
	Roles   []string
	Token   string
	Issued  time.Time
	Expires time.Time
}

// SignIn checks a user's password for a project and issues a token. project may be empty when
// the user has exactly one project. from is the address the sign-in came from (its host): one
// that failed too often lately is refused without a check.
func (u *Users) SignIn(from, user, password, project string) (Session, error) {
	if u.throttled(from) {
		return Session{}, errThrottled
	}
	s, err := u.signIn(user, password, project)
	if err == errSignIn {
		u.failed(from)
	}
	return s, err
}

func (u *Users) signIn(user, password, project string) (Session, error) {
	entries, err := u.current()
	if err != nil {
		return Session{}, err
	}
	if project != "" {
		ke, ok := entries[userKey{user, project}]
		if !ok {
			_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
			return Session{}, errSignIn
		}
		if bcrypt.CompareHashAndPassword(ke.hash, []byte(password)) != nil {
			return Session{}, errSignIn
		}
	} else {
		// No project named: the user's one project, told apart only once the password is right.
		var matched []string
		for k, ke := range entries {
			if k.user == user && bcrypt.CompareHashAndPassword(ke.hash, []byte(password)) == nil {
				matched = append(matched, k.project)
			}
		}
		switch len(matched) {
		case 0:
			_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
			return Session{}, errSignIn
		case 1:
			project = matched[0]
		default:
			slices.Sort(matched)
			return Session{}, signInError(fmt.Sprintf("user %s is in projects %s: name one (--os-project-name)", user, strings.Join(matched, ", ")))
		}
	}
	e := entries[userKey{user, project}]
	if onlyMetrics(e.roles) {
		return Session{}, errSignIn
	}
	now := u.now().UTC().Truncate(time.Second)
	s := Session{Caller: gateway.Caller{User: user, Project: project, Admin: slices.Contains(e.roles, "admin")},
		Roles: e.roles, Issued: now, Expires: now.Add(TokenLifetime)}
	nonce := make([]byte, 9)
	if _, err := rand.Read(nonce); err != nil {
		return Session{}, err
	}
	payload := strings.Join([]string{user, project, strconv.FormatInt(s.Expires.Unix(), 10),
		base64.RawURLEncoding.EncodeToString(nonce)}, "\x00")
	s.Token = issuedPrefix + base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." +
		base64.RawURLEncoding.EncodeToString(u.mac(payload, e.hash))
	return s, nil
}

func (u *Users) mac(payload string, hash []byte) []byte {
	u.mu.Lock()
	key := u.key
	u.mu.Unlock()
	m := hmac.New(sha256.New, key)
	m.Write([]byte(payload))
	m.Write([]byte{0})
	m.Write(hash)
	return m.Sum(nil)
}

// Lookup returns the caller of a token SignIn issued, while it is good: not expired, its
// user's line still in the file with the same password, and issued by this process.
func (u *Users) Lookup(token string) (gateway.Caller, bool) {
	c, _, ok := u.lookup(token)
	return c, ok
}

// lookup is Lookup with the roles of the token's user line.
func (u *Users) lookup(token string) (gateway.Caller, []string, bool) {
	if u == nil {
		return gateway.Caller{}, nil, false
	}
	rest, ok := strings.CutPrefix(token, issuedPrefix)
	if !ok {
		return gateway.Caller{}, nil, false
	}
	p64, m64, ok := strings.Cut(rest, ".")
	strict := base64.RawURLEncoding.Strict() // one spelling per token
	payload, err1 := strict.DecodeString(p64)
	mac, err2 := strict.DecodeString(m64)
	f := strings.Split(string(payload), "\x00")
	if !ok || err1 != nil || err2 != nil || len(f) != 4 {
		return gateway.Caller{}, nil, false
	}
	exp, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || !u.now().Before(time.Unix(exp, 0)) {
		return gateway.Caller{}, nil, false
	}
	entries, err := u.current()
	if err != nil {
		return gateway.Caller{}, nil, false
	}
	e, ok := entries[userKey{f[0], f[1]}]
	if !ok || !hmac.Equal(mac, u.mac(string(payload), e.hash)) || onlyMetrics(e.roles) {
		return gateway.Caller{}, nil, false
	}
	return gateway.Caller{User: f[0], Project: f[1], Admin: slices.Contains(e.roles, "admin")}, e.roles, true
}

// onlyMetrics: a line whose only role is metrics signs in nowhere (a scraper takes a token
// of the tokens file).
func onlyMetrics(roles []string) bool {
	return len(roles) > 0 && !slices.ContainsFunc(roles, func(r string) bool { return r != RoleMetrics })
}

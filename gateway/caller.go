package gateway

import (
	"cmp"
	"context"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cairn-backup/cairn/repo/backend/stack"
)

// Caller is who asks: a user acting in a project, perhaps an admin.
type Caller struct {
	User    string
	Project string
	Admin   bool
}

// DefaultProject is the project the embedded CLI's admin acts in when none is given, and the
// project of a backup whose manifest names none.
const DefaultProject = "admin"

type callerKey struct{}

// WithCaller returns a context that carries the caller. Every entry point (CLI, CLI socket,
// HTTP API) sets one explicitly: the service never assumes who asks.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller in ctx, and false when ctx carries none. There is no default:
// a request without an identity is refused, never taken for an admin's.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// callerOf returns who asks, or ErrDenied when ctx names nobody (or no project). Every
// operation that acts for a user starts with it.
func callerOf(ctx context.Context) (Caller, error) {
	c, ok := CallerFrom(ctx)
	if !ok {
		return Caller{}, wrapf(ErrDenied, "no caller identity: refusing the request")
	}
	if c.Project == "" {
		return Caller{}, wrapf(ErrDenied, "caller %q has no project: refusing the request", c.User)
	}
	return c, nil
}

// adminOf returns the caller if it is an admin, else ErrDenied saying it may not do what.
func adminOf(ctx context.Context, what string) (Caller, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return Caller{}, err
	}
	if !c.Admin {
		return Caller{}, wrapf(ErrDenied, "only an admin may %s", what)
	}
	return c, nil
}

// sees reports whether the caller may see a resource of project p.
func (c Caller) sees(p string) bool { return c.Admin || c.Project == p }

// shown is path as the caller may read it in a message: the path itself for an admin, who
// registered the volume or runs the gateway; instead, the words for what is there, for a
// member. A member gave no path (neither the API nor the console registers a volume), and one
// would tell it where the state directory is, which holds the images cairn creates and the
// index [TestMessagesNameNoPathToMembers].
func (c Caller) shown(path, instead string) string {
	if c.Admin {
		return path
	}
	return instead
}

// words is what a member reads in place of a path in a text cairn recorded (a failure reason, a
// restore's target): Caller.shown's rule for the texts that were written before anyone asked.
// An admin's (nil) leave a text as it is. The replacements are found at the first text that
// has something to replace in (build): a listing whose records hold no failure reads no
// volume's record for them, and neither does a refusal that names no path.
type words struct {
	build func() *strings.Replacer
	r     *strings.Replacer
}

// of is text as the words' caller may read it.
func (w *words) of(text string) string {
	if w == nil || text == "" || !strings.ContainsRune(text, '/') {
		return text // every place replaced is a path
	}
	if w.r == nil {
		w.r = w.build()
	}
	return w.r.Replace(text)
}

// wordsFor is what caller c reads in place of paths: nothing changes for an admin; for a
// member, the path of each volume's image or device becomes the volume's name (another
// project's, "a volume"), and the volume directory, the index, the state directory and a local
// repository's location become words [TestRecordedReasonsNameNoPathToMembers]. They are found
// once, at the first text with a path (every volume's record is read then): one per request,
// not per backup shown.
func (s *Service) wordsFor(c Caller) *words {
	if c.Admin {
		return nil
	}
	return &words{build: func() *strings.Replacer { return s.replacerFor(c) }}
}

// replacerFor builds wordsFor's replacements for member c.
func (s *Service) replacerFor(c Caller) *strings.Replacer {
	type place struct{ path, name string }
	places := []place{{s.volDir, "the gateway's volume directory"}, {s.cfg.IndexDir(), "the gateway's index"},
		{s.cfg.stateDir(), "the gateway's state directory"}}
	if u, err := stack.ParseURL(s.cfg.Repo); err == nil && u.Kind == stack.Local {
		places = append(places, place{u.Path, "the repository"})
	}
	if vols, err := s.idx.Volumes(); err == nil {
		for _, v := range vols {
			name := "a volume"
			if v.Project == c.Project {
				name = "volume " + v.Name
			}
			// "volume PATH" in a message reads "volume NAME", not "volume volume NAME".
			places = append(places, place{v.Path, name}, place{"volume " + v.Path, name})
		}
	} else {
		s.log.Warn("cannot read the volumes' records to word a member's texts", "error", err)
	}
	// The longest first: a Replacer tries its pairs in order at each place in the text, and a
	// volume's image inside the volume directory must read as the volume.
	slices.SortStableFunc(places, func(a, b place) int { return cmp.Compare(len(b.path), len(a.path)) })
	var pairs []string
	for _, p := range places {
		if p.path != "" && p.path != "/" && p.path != "volume " {
			pairs = append(pairs, p.path, p.name)
		}
	}
	return strings.NewReplacer(pairs...)
}

// ShownText is text (a refusal's message) as caller c may read it: for a member, without the
// paths wordsFor keeps from members.
func (s *Service) ShownText(c Caller, text string) string { return s.wordsFor(c).of(text) }

type workDirKey struct{}

// WithWorkDir returns a context whose relative paths resolve against dir: the CLI's working
// directory when a gateway runs the command for it.
func WithWorkDir(ctx context.Context, dir string) context.Context {
	return context.WithValue(ctx, workDirKey{}, dir)
}

// workDir is the caller's working directory when a gateway runs a CLI command for it, else "".
func workDir(ctx context.Context) string {
	dir, _ := ctx.Value(workDirKey{}).(string)
	return dir
}

// absPath makes p absolute against the caller's working directory.
func absPath(ctx context.Context, p string) (string, error) {
	if dir := workDir(ctx); dir != "" && !filepath.IsAbs(p) {
		return filepath.Join(dir, p), nil
	}
	return filepath.Abs(p)
}

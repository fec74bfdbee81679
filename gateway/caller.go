package gateway

import (
	"context"
	"path/filepath"
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

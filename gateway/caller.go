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

// DefaultProject is the project of the embedded CLI's admin when none is given.
const DefaultProject = "admin"

type callerKey struct{}

// WithCaller returns a context that carries the caller.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller in ctx; without one, the embedded admin of DefaultProject.
func CallerFrom(ctx context.Context) Caller {
	if c, ok := ctx.Value(callerKey{}).(Caller); ok {
		return c
	}
	return Caller{User: "admin", Project: DefaultProject, Admin: true}
}

// sees reports whether the caller may see a resource of project p.
func (c Caller) sees(p string) bool { return c.Admin || c.Project == p }

type workDirKey struct{}

// WithWorkDir returns a context whose relative paths resolve against dir: the CLI's working
// directory when a gateway runs the command for it.
func WithWorkDir(ctx context.Context, dir string) context.Context {
	return context.WithValue(ctx, workDirKey{}, dir)
}

// absPath makes p absolute against the caller's working directory.
func absPath(ctx context.Context, p string) (string, error) {
	if dir, ok := ctx.Value(workDirKey{}).(string); ok && dir != "" && !filepath.IsAbs(p) {
		return filepath.Join(dir, p), nil
	}
	return filepath.Abs(p)
}

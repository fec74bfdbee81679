package gateway

import "context"

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

package gateway

import "context"

// Confirm is asked, with a question naming what would be lost, before an operation destroys
// data that a request only implies: a restore over a volume, a device or a non-empty file, a
// volume delete that removes an image or leaves backups without their volume, a backup
// delete. It returns nil to go ahead; any error stops the operation before it has changed
// anything, and is the operation's error.
//
// The service decides what needs confirming; the entry point decides how to ask (the CLI asks
// on a terminal or takes --yes). A context without one goes ahead: an API request is itself
// the explicit act, as in Cinder.
type Confirm func(question string) error

type confirmKey struct{}

// WithConfirm returns a context whose destructive operations ask fn first.
func WithConfirm(ctx context.Context, fn Confirm) context.Context {
	return context.WithValue(ctx, confirmKey{}, fn)
}

// confirm asks ctx's Confirm, if any.
func confirm(ctx context.Context, question string) error {
	if fn, ok := ctx.Value(confirmKey{}).(Confirm); ok && fn != nil {
		return fn(question)
	}
	return nil
}

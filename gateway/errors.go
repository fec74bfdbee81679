package gateway

import (
	"errors"
	"fmt"
)

// Sentinel errors. cmd/cairn maps them to exit codes and gateway/api to HTTP statuses, each in
// one place. Every error a user sees wraps one of them, or is an internal failure.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid request")
	ErrInUse    = errors.New("in use")
	ErrConflict = errors.New("not allowed in this state")
	ErrQuota    = errors.New("quota exceeded")
	ErrDenied   = errors.New("not allowed")
	ErrExists   = errors.New("already exists")
)

func invalidf(format string, args ...any) error { return wrapf(ErrInvalid, format, args...) }

// Errorf returns an error that says format and matches kind (one of the sentinels above) with
// errors.Is, without the kind's own words ("invalid request: ...") in the one line a user
// sees. format takes no %w: the error wraps kind alone.
func Errorf(kind error, format string, args ...any) error { return wrapf(kind, format, args...) }

// wrapf returns an error that says format and matches sentinel with errors.Is, without the
// sentinel's own words in the message.
func wrapf(sentinel error, format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), kind: sentinel}
}

type userError struct {
	msg  string
	kind error
}

func (e *userError) Error() string        { return e.msg }
func (e *userError) Is(target error) bool { return target == e.kind }

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// Exit codes: the one place errors become them.
const (
	exitOK          = 0
	exitFailure     = 1
	exitInvalid     = 2
	exitNotFound    = 3
	exitConflict    = 4
	exitQuota       = 5
	exitDenied      = 6
	exitUnavailable = 7
	exitCorrupt     = 8
	exitCancelled   = 130
)

func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, context.Canceled):
		return exitCancelled
	case errors.Is(err, gateway.ErrInvalid), errors.Is(err, repo.ErrBadExport), errors.Is(err, repo.ErrPasswordRequired),
		errors.Is(err, backend.ErrBadLocation):
		return exitInvalid
	case errors.Is(err, gateway.ErrNotFound), errors.Is(err, repo.ErrNoRepository):
		return exitNotFound
	case errors.Is(err, gateway.ErrConflict), errors.Is(err, gateway.ErrInUse), errors.Is(err, gateway.ErrExists),
		errors.Is(err, repo.ErrExists), errors.Is(err, index.ErrLocked):
		return exitConflict
	case errors.Is(err, gateway.ErrQuota):
		return exitQuota
	case errors.Is(err, gateway.ErrDenied), errors.Is(err, backend.ErrPermission), errors.Is(err, repo.ErrWrongPassword),
		errors.Is(err, backend.ErrReadOnly), errors.Is(err, backend.ErrRetained):
		return exitDenied
	case errors.Is(err, backend.ErrUnavailable):
		return exitUnavailable
	case errors.Is(err, repo.ErrCorrupt):
		return exitCorrupt
	case errors.Is(err, errDeclined):
		return exitFailure
	}
	return exitFailure
}

// message turns an error into the one line a user sees.
func message(err error) string {
	msg := err.Error()
	if errors.Is(err, context.Canceled) && strings.HasSuffix(msg, context.Canceled.Error()) {
		msg = "interrupted" // nothing more to say than the context's own words
	}
	msg = strings.ReplaceAll(msg, "\n", " ")
	return fmt.Sprintf("cairn: %s", msg)
}

// usageError is invalid input found by the CLI itself (exit 2), said in its own words.
type usageError string

func (e usageError) Error() string        { return string(e) }
func (e usageError) Is(target error) bool { return target == gateway.ErrInvalid }

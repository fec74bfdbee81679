package api

import (
	"errors"
	"net/http"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo/backend"
)

// faultNames are Cinder's fault body keys by status (cinder/api/openstack/wsgi.py); any
// other status is a computeFault.
var faultNames = map[int]string{
	http.StatusBadRequest:            "badRequest",
	http.StatusUnauthorized:          "unauthorized",
	http.StatusForbidden:             "forbidden",
	http.StatusNotFound:              "itemNotFound",
	http.StatusMethodNotAllowed:      "badMethod",
	http.StatusConflict:              "conflictingRequest",
	http.StatusRequestEntityTooLarge: "overLimit",
	http.StatusUnsupportedMediaType:  "badMediaType",
	http.StatusNotImplemented:        "notImplemented",
	http.StatusServiceUnavailable:    "serviceUnavailable",
}

// StatusOf maps a gateway error to its HTTP status, for the API and the web console alike.
// Invalid states (in use, not allowed now) are 400 as in Cinder, whose InvalidVolume and
// InvalidBackup are bad requests.
func StatusOf(err error) int {
	switch {
	case errors.Is(err, gateway.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, gateway.ErrInvalid), errors.Is(err, gateway.ErrInUse), errors.Is(err, gateway.ErrConflict):
		return http.StatusBadRequest
	case errors.Is(err, gateway.ErrExists):
		return http.StatusConflict
	case errors.Is(err, gateway.ErrQuota):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, gateway.ErrDenied), errors.Is(err, backend.ErrReadOnly), errors.Is(err, backend.ErrPermission),
		errors.Is(err, backend.ErrRetained):
		return http.StatusForbidden
	case errors.Is(err, backend.ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// httpError is an error the API itself raises (bad body, bad URL) with its status.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(msg string) error { return &httpError{http.StatusBadRequest, msg} }

func notFound(msg string) error { return &httpError{http.StatusNotFound, msg} }

// writeFault writes err as a Cinder fault: {"<name>": {"code": N, "message": "..."}}.
func (s *server) writeFault(w http.ResponseWriter, r *http.Request, err error) {
	status := StatusOf(err)
	var he *httpError
	if errors.As(err, &he) {
		status = he.status
	}
	name, ok := faultNames[status]
	if !ok {
		name = "computeFault"
	}
	body := map[string]any{"code": status, "message": FaultMessage(s.svc, callerOf(r), status, err)}
	if status == http.StatusRequestEntityTooLarge {
		// Cinder says when to retry an over-quota request: any time (after freeing quota).
		w.Header().Set("Retry-After", "0")
		body["retryAfter"] = "0"
	}
	if status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "request_id", w.Header().Get("X-Openstack-Request-Id"), "error", err)
	} else {
		s.log.Debug("request refused", "method", r.Method, "path", r.URL.Path, "status", status, "error", err)
	}
	writeJSON(w, status, map[string]any{name: body})
}

// FaultMessage is what caller c reads of err, which failed its request with status, through the
// API and the web console alike. A server-side failure (5xx) says where it happened: a volume's
// image path under the state directory, the repository's directory or S3 endpoint and bucket.
// That goes to admins and to the log (with a request id the caller is given); anyone else reads
// Cinder's own words for the status, as a Cinder member reads them for a failure Cinder does not
// explain [TestServerFaultsSayNoPathToMembers, TestConsoleServerErrorsSayNoPathToMembers]. A
// refusal (4xx) says what was wrong, to a member without the paths it may name
// (Service.ShownText) [TestRefusalsNameNoPathToMembers].
func FaultMessage(svc *gateway.Service, c gateway.Caller, status int, err error) string {
	if c.Admin {
		return err.Error()
	}
	if status < 500 {
		return svc.ShownText(c, err.Error())
	}
	if status == http.StatusServiceUnavailable {
		return "The server is currently unavailable. Please try again at a later time."
	}
	return "The server has either erred or is incapable of performing the requested operation."
}

package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/minio/minio-go/v7"
)

// errRange marks a GetRange past the end of an object: a caller's mistake or a corrupt index,
// not something a retry fixes.
var errRange = errors.New("range past end of object")

// translate turns an error from minio-go or the network into one wrapping a backend sentinel
// (or the context's error), described in words a user can act on. The SDK's error is kept
// only as text, so its types never travel up.
func translate(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s: %w", what, cerr)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	sentinel, detail := classify(err)
	if sentinel == nil {
		return fmt.Errorf("%s: %s", what, detail)
	}
	return fmt.Errorf("%s: %w (%s)", what, sentinel, detail)
}

// classify names the sentinel for err (nil for a permanent error of another kind) and a short
// description of what failed.
func classify(err error) (sentinel error, detail string) {
	resp := minio.ToErrorResponse(err)
	if resp.Code == "" && resp.StatusCode == 0 {
		errors.As(err, &resp)
	}
	if resp.Code != "" || resp.StatusCode != 0 {
		return classifyResponse(resp)
	}
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var recordErr tls.RecordHeaderError
	var netErr net.Error
	switch {
	case errors.As(err, &dnsErr):
		return backend.ErrUnavailable, fmt.Sprintf("cannot resolve host %s", dnsErr.Name)
	case errors.Is(err, syscall.ECONNREFUSED):
		return backend.ErrUnavailable, "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return backend.ErrUnavailable, "connection reset"
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr):
		return backend.ErrUnavailable, fmt.Sprintf("tls certificate rejected: %v", err)
	case errors.As(err, &recordErr), strings.Contains(err.Error(), "HTTP response to HTTPS client"):
		return backend.ErrUnavailable, "tls handshake failed: the server speaks plain http; write the endpoint as http://host:port"
	case errors.As(err, &netErr) && netErr.Timeout():
		return backend.ErrUnavailable, "timeout"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return backend.ErrUnavailable, "connection closed early"
	case errors.As(err, &netErr):
		return backend.ErrUnavailable, err.Error()
	}
	// Anything else from the transport (a proxy's garbage, a broken response) is treated as
	// transient: retrying a permanent fault costs little, giving up on a transient one fails
	// a backup.
	return backend.ErrUnavailable, err.Error()
}

func classifyResponse(resp minio.ErrorResponse) (error, string) {
	code := resp.Code
	if code == "" {
		code = http.StatusText(resp.StatusCode)
	}
	switch resp.Code {
	case "NoSuchKey":
		return backend.ErrNotFound, "no such key"
	case "NoSuchBucket":
		return backend.ErrNotFound, fmt.Sprintf("bucket %q does not exist", resp.BucketName)
	case "InvalidAccessKeyId", "XAdminUserNotFound":
		return backend.ErrPermission, "access key not known to the server (InvalidAccessKeyId); check the access key"
	case "SignatureDoesNotMatch":
		return backend.ErrPermission, "signature rejected (SignatureDoesNotMatch); check the secret key"
	case "AccessDenied":
		return backend.ErrPermission, "access denied (AccessDenied); check the credentials and the bucket policy"
	case "InvalidRange":
		return nil, errRange.Error()
	case "RequestTimeTooSkewed":
		return backend.ErrPermission, "request time too skewed; check this machine's clock"
	case "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout":
		return backend.ErrUnavailable, fmt.Sprintf("server said %s (HTTP %d)", code, resp.StatusCode)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return backend.ErrNotFound, fmt.Sprintf("not found (%s)", code)
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized:
		return backend.ErrPermission, fmt.Sprintf("access denied (%s); check the credentials", code)
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests:
		return backend.ErrUnavailable, fmt.Sprintf("server error %s (HTTP %d)", code, resp.StatusCode)
	}
	return nil, fmt.Sprintf("request refused: %s (HTTP %d)", code, resp.StatusCode)
}

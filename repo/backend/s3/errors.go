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
var errRange = backend.ErrRange

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
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", what, err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// ctx is live, so the deadline was the transport's own (a dial, a TLS handshake or
		// a response header that took too long; Go's network timeouts match it): another
		// attempt may well succeed.
		return fmt.Errorf("%s: %w (timeout: %v)", what, backend.ErrUnavailable, err)
	}
	detail, sentinel := classify(err)
	if sentinel == nil {
		return fmt.Errorf("%s: %s", what, detail)
	}
	return fmt.Errorf("%s: %w (%s)", what, sentinel, detail)
}

// classify describes what failed in a few words and names the sentinel for err (nil for a
// permanent error of another kind).
func classify(err error) (detail string, sentinel error) {
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
		return fmt.Sprintf("cannot resolve host %s", dnsErr.Name), backend.ErrUnavailable
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused", backend.ErrUnavailable
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset", backend.ErrUnavailable
	case errors.As(err, &certErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr):
		return fmt.Sprintf("tls certificate rejected: %v", err), backend.ErrUnavailable
	case errors.As(err, &recordErr), strings.Contains(err.Error(), "HTTP response to HTTPS client"):
		return "tls handshake failed: the server speaks plain http; write the endpoint as http://host:port", backend.ErrUnavailable
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout", backend.ErrUnavailable
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "connection closed early", backend.ErrUnavailable
	case errors.As(err, &netErr):
		return err.Error(), backend.ErrUnavailable
	}
	// Anything else from the transport (a proxy's garbage, a broken response) is treated as
	// transient: retrying a permanent fault costs little, giving up on a transient one fails
	// a backup.
	return err.Error(), backend.ErrUnavailable
}

func classifyResponse(resp minio.ErrorResponse) (string, error) {
	code := resp.Code
	if code == "" {
		code = http.StatusText(resp.StatusCode)
	}
	switch resp.Code {
	case "NoSuchKey":
		return "no such key", backend.ErrNotFound
	case "NoSuchBucket":
		// Not ErrNotFound: to its callers that means this object is gone (a deleted backup,
		// a missing pack, a lock broken), none of which a missing bucket says
		// [TestBucketGoneIsNotAMissingObject].
		return fmt.Sprintf("bucket %q does not exist (NoSuchBucket): it was removed, or the endpoint or bucket name is wrong", resp.BucketName), nil
	case "InvalidAccessKeyId", "XAdminUserNotFound":
		return "access key not known to the server (InvalidAccessKeyId); check the access key", backend.ErrPermission
	case "SignatureDoesNotMatch":
		return "signature rejected (SignatureDoesNotMatch); check the secret key", backend.ErrPermission
	case "AccessDenied":
		return "access denied (AccessDenied); check the credentials and the bucket policy", backend.ErrPermission
	case "InvalidRange":
		return "range past the end of the object", backend.ErrRange
	case "InvalidBucketName":
		return "the server does not allow that bucket name (InvalidBucketName); check the bucket in the repository URL", backend.ErrBadLocation
	case "InsufficientStorage", "XMinioStorageFull":
		// Not ErrUnavailable: retried, a full server stays full, and the user would read
		// "unavailable" for "free space" [TestFullServerSaysSo].
		return fmt.Sprintf("the server has no room left (%s, HTTP %d): free space on it, or raise its quota", code, resp.StatusCode), nil
	case "RequestTimeTooSkewed":
		return "request time too skewed; check this machine's clock", backend.ErrPermission
	case "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout":
		return fmt.Sprintf("server said %s (HTTP %d)", code, resp.StatusCode), backend.ErrUnavailable
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Sprintf("not found (%s)", code), backend.ErrNotFound
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized:
		return fmt.Sprintf("access denied (%s); check the credentials", code), backend.ErrPermission
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests:
		return fmt.Sprintf("server error %s (HTTP %d)", code, resp.StatusCode), backend.ErrUnavailable
	}
	return fmt.Sprintf("request refused: %s (HTTP %d)", code, resp.StatusCode), nil
}

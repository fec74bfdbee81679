package stack

import (
	"fmt"
	"path"
	"strings"
)

// Kind says which backend a URL names.
type Kind string

// The kinds of backend.
const (
	Local Kind = "local"
	S3    Kind = "s3"
)

// URL is a parsed repository location.
type URL struct {
	Kind Kind
	// Path is the directory of a Local repository.
	Path string
	// Bucket and Prefix locate an S3 repository; Prefix has no leading or trailing slash.
	Bucket, Prefix string
}

// ParseURL parses a repository location: a path ("/srv/cairn", "./repo"), "file://PATH", or
// "s3://BUCKET[/PREFIX]". The S3 endpoint is not part of the URL: it comes from
// Config.Endpoint or AWS_ENDPOINT_URL.
func ParseURL(s string) (URL, error) {
	switch {
	case s == "":
		return URL{}, fmt.Errorf("repository location is empty: give a path or s3://bucket/prefix")
	case strings.HasPrefix(s, "s3://"):
		rest := strings.Trim(strings.TrimPrefix(s, "s3://"), "/")
		bucket, prefix, _ := strings.Cut(rest, "/")
		if bucket == "" {
			return URL{}, fmt.Errorf("repository %q: no bucket; write s3://bucket/prefix", s)
		}
		if strings.Contains(bucket, "@") || strings.Contains(rest, "@") && strings.Contains(bucket, ":") {
			// A secret key may hold slashes: what comes before the last @ is not shown.
			return URL{}, fmt.Errorf("repository %q: the keys go in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or --access-key and --secret-key), not in the URL; write s3://bucket/prefix", hideUserInfo(s))
		}
		if strings.Contains(bucket, ":") {
			return URL{}, fmt.Errorf("repository %q: the endpoint goes in --endpoint or AWS_ENDPOINT_URL, not in the URL; write s3://bucket/prefix", s)
		}
		prefix = strings.Trim(prefix, "/")
		if prefix != "" && path.Clean(prefix) != prefix {
			return URL{}, fmt.Errorf("repository %q: prefix %q is not a clean path", s, prefix)
		}
		return URL{Kind: S3, Bucket: bucket, Prefix: prefix}, nil
	case strings.HasPrefix(s, "file://"):
		p := strings.TrimPrefix(s, "file://")
		if p == "" {
			return URL{}, fmt.Errorf("repository %q: no path", s)
		}
		return URL{Kind: Local, Path: p}, nil
	}
	if scheme, _, ok := strings.Cut(s, "://"); ok && !strings.Contains(scheme, "/") {
		return URL{}, fmt.Errorf("repository %q: unsupported scheme %q; use a path, file:// or s3://", hideUserInfo(s), scheme)
	}
	return URL{Kind: Local, Path: s}, nil
}

// hideUserInfo returns the URL s for a message, with whatever lies between its "://" and its
// last "@" (keys, which may hold slashes) replaced by "...".
func hideUserInfo(s string) string {
	scheme, rest, ok := strings.Cut(s, "://")
	i := strings.LastIndex(rest, "@")
	if !ok || i < 0 {
		return s
	}
	return scheme + "://...@" + rest[i+1:]
}

// String returns the URL in the form ParseURL accepts.
func (u URL) String() string {
	if u.Kind == S3 {
		return "s3://" + path.Join(u.Bucket, u.Prefix)
	}
	return u.Path
}

// IsRemote reports whether s names a repository reached over the network (S3), as opposed
// to a local directory. An unparseable s is not remote.
func IsRemote(s string) bool {
	u, err := ParseURL(s)
	return err == nil && u.Kind != Local
}

package s3

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Addressing says how the bucket appears in request URLs.
type Addressing int

const (
	// AddressAuto uses path-style ("host/bucket/key"), except virtual-host style for AWS
	// endpoints, which are the only ones that commonly need it.
	AddressAuto Addressing = iota
	// AddressPath always uses path-style URLs.
	AddressPath
	// AddressVirtualHost always puts the bucket in the host name ("bucket.host/key").
	AddressVirtualHost
)

// ParseAddressing parses "auto", "path" or "virtual-host" (as given on a command line).
func ParseAddressing(s string) (Addressing, error) {
	switch s {
	case "", "auto":
		return AddressAuto, nil
	case "path":
		return AddressPath, nil
	case "virtual-host", "virtual", "dns":
		return AddressVirtualHost, nil
	}
	return AddressAuto, fmt.Errorf("s3 addressing %q: want auto, path or virtual-host", s)
}

// String returns the name ParseAddressing accepts.
func (a Addressing) String() string {
	switch a {
	case AddressPath:
		return "path"
	case AddressVirtualHost:
		return "virtual-host"
	}
	return "auto"
}

// Default transport timeouts. They bound each phase of one request; the retry wrapper bounds
// a whole attempt.
const (
	DefaultDialTimeout           = 10 * time.Second
	DefaultTLSHandshakeTimeout   = 10 * time.Second
	DefaultResponseHeaderTimeout = time.Minute
)

// Config says where the bucket is and how to reach it.
type Config struct {
	// Endpoint is "host:port" (TLS) or a URL: "http://host:port" means no TLS. Empty means
	// AWS (s3.amazonaws.com).
	Endpoint string
	// Region is sent in signatures; empty lets minio-go use us-east-1 or discover it.
	Region string
	// Bucket must already exist.
	Bucket string
	// Prefix is prepended, with a slash, to every key; empty stores keys at the bucket's root.
	Prefix string
	// Addressing chooses path-style or virtual-host URLs.
	Addressing Addressing
	// AccessKey and SecretKey are the static credentials.
	AccessKey, SecretKey string
	// Transport timeouts; zero means the Default* values.
	DialTimeout, TLSHandshakeTimeout, ResponseHeaderTimeout time.Duration
}

// endpoint splits Config.Endpoint into minio-go's host and TLS flag.
func (c Config) endpoint() (host string, secure bool, err error) {
	e := c.Endpoint
	if e == "" {
		return "s3.amazonaws.com", true, nil
	}
	if !strings.Contains(e, "://") {
		e = "https://" + e // host:port means TLS; checked like a URL, user info and all
	}
	u, err := url.Parse(e)
	if err != nil {
		// Not the endpoint itself, nor url.Parse's error, which quotes it: it may hold keys.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", false, fmt.Errorf("s3 endpoint: %v; want host:port or http(s)://host:port", err)
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") || u.User != nil || u.RawQuery != "" {
		return "", false, fmt.Errorf("s3 endpoint %q: want host:port or http(s)://host:port", redact(u))
	}
	switch u.Scheme {
	case "http":
		return u.Host, false, nil
	case "https":
		return u.Host, true, nil
	}
	return "", false, fmt.Errorf("s3 endpoint %q: scheme must be http or https", redact(u))
}

// redact drops user info from u, in case someone put credentials in the endpoint.
func redact(u *url.URL) string {
	v := *u
	v.User = nil
	return v.String()
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

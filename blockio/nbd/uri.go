package nbd

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// DefaultPort is NBD's IANA port.
const DefaultPort = "10809"

// Address is where an export is: a network and address to dial and the export's name.
type Address struct {
	Network string // "tcp" or "unix"
	Addr    string // host:port or socket path
	Export  string
}

// IsURI reports whether s looks like an NBD URI (nbd://, nbd+unix://, nbds://, nbds+unix://).
func IsURI(s string) bool {
	for _, p := range []string{"nbd://", "nbd+unix://", "nbds://", "nbds+unix://"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// ParseURI reads an NBD URI as the NBD URI standard (doc/uri.md) defines it:
// nbd://HOST[:PORT]/EXPORT over TCP (port 10809 by default) or nbd+unix:///EXPORT?socket=PATH
// over a Unix socket; the export is the path without its leading slash, unescaped. TLS
// (nbds, nbds+unix) is refused: cairn does not speak it yet.
func ParseURI(s string) (Address, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Address{}, fmt.Errorf("NBD URI %q: %w", s, err)
	}
	a := Address{Export: strings.TrimPrefix(u.Path, "/")}
	switch u.Scheme {
	case "nbd":
		if u.Host == "" {
			return Address{}, fmt.Errorf("NBD URI %q names no host: use nbd://HOST[:PORT]/EXPORT", s)
		}
		host, port := u.Hostname(), u.Port()
		if port == "" {
			port = DefaultPort
		}
		a.Network, a.Addr = "tcp", net.JoinHostPort(host, port)
	case "nbd+unix":
		sock := u.Query().Get("socket")
		if sock == "" {
			return Address{}, fmt.Errorf("NBD URI %q names no socket: use nbd+unix:///EXPORT?socket=PATH", s)
		}
		if u.Host != "" {
			return Address{}, fmt.Errorf("NBD URI %q: a Unix socket URI has no host: use nbd+unix:///EXPORT?socket=PATH", s)
		}
		a.Network, a.Addr = "unix", sock
	case "nbds", "nbds+unix":
		return Address{}, fmt.Errorf("NBD URI %q: TLS is not supported yet; use nbd:// or nbd+unix://", s)
	default:
		return Address{}, fmt.Errorf("NBD URI %q: scheme %q is not nbd or nbd+unix", s, u.Scheme)
	}
	if strings.ContainsRune(a.Export, 0) {
		return Address{}, errors.New("NBD URI: an export name cannot contain NUL")
	}
	return a, nil
}

package api

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// versionHeader carries the microversion both ways.
const versionHeader = "OpenStack-API-Version"

// Microversions served. 3.70 is python-cinderclient 9.1.0's newest, so it talks to cairn
// without a downgrade warning; nothing cairn serves changed shape between 3.64 and 3.70
// except that project ids in URLs are optional (3.67), which cairn always allows.
var (
	minVersion = version{3, 0}
	maxVersion = version{3, 70}
)

// version is a 3.x microversion.
type version struct{ major, minor int }

func (v version) String() string { return fmt.Sprintf("%d.%d", v.major, v.minor) }

// atLeast reports whether v is minor 3.n or later.
func (v version) atLeast(minor int) bool { return v.minor >= minor }

type versionKey struct{}

func versionOf(r *http.Request) version {
	if v, ok := r.Context().Value(versionKey{}).(version); ok {
		return v
	}
	return minVersion
}

// negotiate picks the microversion a request asks for in "OpenStack-API-Version: volume
// 3.x" (or "volume latest"); without one it is 3.0. Out of range is 406, as in Cinder.
func negotiate(header string) (version, error) {
	var want string
	for _, part := range strings.Split(header, ",") {
		service, v, ok := strings.Cut(strings.TrimSpace(part), " ")
		if ok && strings.EqualFold(service, "volume") {
			want = strings.TrimSpace(v)
		}
	}
	switch want {
	case "":
		return minVersion, nil
	case "latest":
		return maxVersion, nil
	}
	maj, min, ok := strings.Cut(want, ".")
	a, err1 := strconv.Atoi(maj)
	b, err2 := strconv.Atoi(min)
	if !ok || err1 != nil || err2 != nil || a < 0 || b < 0 {
		return version{}, badRequest(fmt.Sprintf("API version string %s format is not valid: use volume 3.x", want))
	}
	v := version{a, b}
	if v.major != 3 || v.minor > maxVersion.minor {
		return version{}, &httpError{http.StatusNotAcceptable, fmt.Sprintf("version %s is not supported by the API: minimum is %s and maximum is %s", v, minVersion, maxVersion)}
	}
	return v, nil
}

// versionDoc describes API v3 (GET / and GET /v3/).
func versionDoc(r *http.Request) map[string]any {
	return map[string]any{
		"id":          "v3.0",
		"status":      "CURRENT",
		"version":     maxVersion.String(),
		"min_version": minVersion.String(),
		"updated":     "2022-08-31T00:00:00Z",
		"links": []any{
			map[string]string{"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
			map[string]string{"rel": "self", "href": baseURL(r) + "/v3/"},
		},
		"media-types": []any{map[string]string{"base": "application/json",
			"type": "application/vnd.openstack.volume+json;version=3"}},
	}
}

// versionsRoot is GET /: 300 Multiple Choices with the one version, as Cinder answers.
func (s *server) versionsRoot(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusMultipleChoices, map[string]any{"versions": []any{versionDoc(r)}})
}

// baseURL is the scheme and host the client used.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

package api

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// timeFormat is how Cinder writes times: UTC, microseconds, no zone.
const timeFormat = "2006-01-02T15:04:05.000000"

// stamp is a time for JSON; the zero time is null.
func stamp(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(timeFormat)
}

// orNull is s, or null when empty.
func orNull(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// zone is the one availability zone cairn reports (as 'cairn service list' does).
const zone = "nova"

// links are a resource's self and bookmark links.
func links(r *http.Request, kind, id string) []any {
	project := url.PathEscape(callerOf(r).Project)
	base := baseURL(r)
	return []any{
		map[string]string{"rel": "self", "href": base + "/v3/" + project + "/" + kind + "/" + id},
		map[string]string{"rel": "bookmark", "href": base + "/" + project + "/" + kind + "/" + id},
	}
}

// truthy reads a query flag as Cinder does (1, true, yes, on).
func truthy(v string) bool {
	b, err := strconv.ParseBool(v)
	if err == nil {
		return b
	}
	switch strings.ToLower(v) {
	case "yes", "y", "on":
		return true
	}
	return false
}

// page applies Cinder's marker and limit to ids in order: the items after marker, at most
// limit of them.
func page(r *http.Request, n int, id func(int) string) (from, to int, err error) {
	q := r.URL.Query()
	to = n
	if m := q.Get("marker"); m != "" {
		from = -1
		for i := range n {
			if id(i) == m {
				from = i + 1
				break
			}
		}
		if from < 0 {
			return 0, 0, notFound("marker " + m + " could not be found")
		}
	}
	if l := q.Get("limit"); l != "" {
		lim, err := strconv.Atoi(l)
		if err != nil || lim < 0 {
			return 0, 0, badRequest("limit must be a non-negative integer")
		}
		to = from + min(lim, n-from) // from+lim may overflow
	}
	return from, to, nil
}

package api

import (
	"net/http"
	"net/url"
	"slices"
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

// memberContainer is the container a backup is in as members see it. In Cinder a container is
// a name within the backup store (a Swift container, a Ceph pool); cairn's one container is the
// repository, whose directory or S3 endpoint, bucket and prefix only admins are shown.
const memberContainer = "cairn"

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

// withCount says whether a list is to carry "count" (3.45): how many items match the filters,
// whatever the page. cinder list, snapshot-list and backup-list --with-count unpack the list
// and this count.
func withCount(r *http.Request) bool {
	return versionOf(r).atLeast(45) && truthy(r.URL.Query().Get("with_count"))
}

// filterKeepingMarker drops the items excluded says to, but the request's marker: when a
// filter leaves it out (it changed status since the page that ended on it), the next page
// still starts after its place in the order, as in Cinder, which looks the marker up by id
// whatever the filters. markerOut says it was kept so; it is then neither listed (page starts
// after it) nor to be counted.
func filterKeepingMarker[T any](r *http.Request, items []T, id func(T) string, excluded func(T) bool) (kept []T, markerOut bool) {
	marker := r.URL.Query().Get("marker")
	kept = slices.DeleteFunc(items, func(it T) bool {
		if marker != "" && id(it) == marker && excluded(it) {
			markerOut = true
			return false
		}
		return excluded(it)
	})
	return kept, markerOut
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

// sortKey is one key of a list's order, as Cinder takes it: sort=key[:dir],... or the older
// sort_key and sort_dir; a key without a direction is descending.
type sortKey struct {
	key  string
	desc bool
}

// sortKeys reads a list request's order; nil when it gives none. known says which keys the
// list sorts by (created_at and id among them); any other key or direction is refused, as
// Cinder refuses them.
func sortKeys(r *http.Request, known func(string) bool) ([]sortKey, error) {
	q := r.URL.Query()
	var keys, dirs []string
	switch {
	case q.Has("sort") && (q.Has("sort_key") || q.Has("sort_dir")):
		return nil, badRequest("the sort_key and sort_dir parameters cannot be used with the sort parameter: use sort=key:dir,...")
	case q.Has("sort"):
		for _, item := range strings.Split(q.Get("sort"), ",") {
			key, dir, _ := strings.Cut(item, ":")
			keys, dirs = append(keys, strings.TrimSpace(key)), append(dirs, strings.TrimSpace(dir))
		}
	case q.Has("sort_key") || q.Has("sort_dir"):
		keys, dirs = strings.Split(q.Get("sort_key"), ","), strings.Split(q.Get("sort_dir"), ",")
		if !q.Has("sort_key") {
			keys = []string{"created_at"}
		}
	default:
		return nil, nil
	}
	var out []sortKey
	for i, key := range keys {
		dir := "desc"
		if i < len(dirs) && strings.TrimSpace(dirs[i]) != "" {
			dir = strings.ToLower(strings.TrimSpace(dirs[i]))
		}
		if dir != "asc" && dir != "desc" {
			return nil, badRequest("unknown sort direction " + dir + ": use asc or desc")
		}
		if !known(key) {
			return nil, badRequest("invalid sort key " + key)
		}
		out = append(out, sortKey{key, dir == "desc"})
	}
	// Ties go by creation time, then id, in the first key's direction, as in Cinder.
	for _, tie := range []string{"created_at", "id"} {
		if !slices.ContainsFunc(out, func(k sortKey) bool { return k.key == tie }) {
			out = append(out, sortKey{tie, out[0].desc})
		}
	}
	return out, nil
}

// sortBy orders items stably by keys, compared by cmp; items that tie keep their order.
func sortBy[T any](items []T, keys []sortKey, cmp func(key string, a, b T) int) {
	slices.SortStableFunc(items, func(a, b T) int {
		for _, k := range keys {
			if c := cmp(k.key, a, b); c != 0 {
				if k.desc {
					return -c
				}
				return c
			}
		}
		return 0
	})
}

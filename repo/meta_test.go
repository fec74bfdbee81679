package repo

import (
	"context"
	"slices"
	"testing"
)

// ListMetaNamesFrom lists the names that start with its prefix and no other: a volume's
// update objects ("<id>@<time>") without those of a volume whose id starts with its id.
func TestListMetaNamesFrom(t *testing.T) {
	ctx := context.Background()
	r, _ := newTestRepo(t)
	for _, name := range []string{"a@1", "a@2", "ab@1", "b@1", "a"} {
		if err := r.PutMeta(ctx, "k", name, 1); err != nil {
			t.Fatal(err)
		}
	}
	for from, want := range map[string][]string{"a@": {"a@1", "a@2"}, "": {"a", "a@1", "a@2", "ab@1", "b@1"}, "c": nil} {
		var got []string
		if err := r.ListMetaNamesFrom(ctx, "k", from, func(name string) error { got = append(got, name); return nil }); err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("names from %q: %q, want %q", from, got, want)
		}
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/alecthomas/kong"
)

// configFile is one configuration file: a JSON object whose keys are flag names in snake_case
// (repo, endpoint, access_key...). It gives flags their values as kong.JSON does, and refuses
// a key that names no flag of any command: a misspelt key would otherwise be ignored without a
// word, and the setting it meant silently not applied.
type configFile struct {
	kong.Resolver
	path string
	keys []string
}

var _ kong.Resolver = (*configFile)(nil)

// loadConfigs reads the configuration files that exist, in order. A file that is not a JSON
// object is an error naming it; a missing or unreadable one is skipped, as kong does.
func loadConfigs(paths []string) ([]kong.Resolver, error) {
	var out []kong.Resolver
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
		var values map[string]json.RawMessage
		if err := json.Unmarshal(data, &values); err != nil {
			return nil, usageError(fmt.Sprintf("config file %s: not a JSON object of settings: %v", path, err))
		}
		r, err := kong.JSON(bytes.NewReader(data))
		if err != nil {
			return nil, usageError(fmt.Sprintf("config file %s: %v", path, err))
		}
		c := &configFile{Resolver: r, path: path}
		for k := range values {
			c.keys = append(c.keys, k)
		}
		slices.Sort(c.keys)
		out = append(out, c)
	}
	return out, nil
}

// Resolve gives flag the file's value unless one of the flag's environment variables is set:
// kong applies those before resolvers run, and environment variables win over files.
func (c *configFile) Resolve(ctx *kong.Context, parent *kong.Path, flag *kong.Flag) (any, error) {
	for _, env := range flag.Envs {
		if _, ok := os.LookupEnv(env); ok {
			return nil, nil
		}
	}
	return c.Resolver.Resolve(ctx, parent, flag)
}

// Validate refuses the first key (in sorted order) that no flag of the application takes.
func (c *configFile) Validate(app *kong.Application) error {
	known, snake := map[string]bool{}, map[string]bool{}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			if f.Name == "help" {
				continue
			}
			snake[strings.ReplaceAll(f.Name, "-", "_")] = true
			known[strings.ReplaceAll(f.Name, "-", "_")] = true
			known[camelCase(f.Name)] = true // kong's JSON takes this spelling too
		}
		for _, child := range n.Children {
			walk(child)
		}
	}
	walk(app.Node)
	for _, k := range c.keys {
		if !known[k] {
			hint := "keys are flag names in snake_case, like repo, endpoint or access_key"
			if near := closest(k, snake); near != "" {
				hint = "did you mean " + near + "?"
			}
			return usageError(fmt.Sprintf("config file %s: unknown key %q: %s", c.path, k, hint))
		}
	}
	return nil
}

// camelCase is kong's other spelling of a flag name in a JSON file: access-key, accessKey.
func camelCase(name string) string {
	parts := strings.Split(name, "-")
	for i := 1; i < len(parts); i++ {
		if parts[i] != "" {
			parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
		}
	}
	return strings.Join(parts, "")
}

// closest returns the name nearest to k by edit distance, if it is near enough to be a likely
// typo (at most 2 edits, and fewer than half the letters), else "".
func closest(k string, names map[string]bool) string {
	best, bestD := "", 3
	for name := range names {
		d := editDistance(k, name)
		if d < bestD || (d == bestD && name < best) {
			best, bestD = name, d
		}
	}
	if bestD*2 >= len(k) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

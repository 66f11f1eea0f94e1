package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/macula-io/cluster/mesh"
)

// tagFlag is a repeatable --tag key=value.
type tagFlag struct{ list []string }

func (t *tagFlag) String() string { return strings.Join(t.list, ",") }

// Set keeps v; parseTags checks it (so that the message names --tag).
func (t *tagFlag) Set(v string) error {
	t.list = append(t.list, v)
	return nil
}

func parseTag(v string) (key, value string, err error) {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("want key=value, got %q", v)
	}
	return k, val, nil
}

// parseTags turns key=value entries into tags, checked against the mesh's
// bounds; a key given twice is an error.
func parseTags(entries []string) (map[string]string, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	tags := map[string]string{}
	for _, e := range entries {
		k, v, err := parseTag(e)
		if err == nil {
			err = mesh.ValidateTags(map[string]string{k: v})
		}
		if err != nil {
			return nil, fmt.Errorf("%q: %w", e, err)
		}
		if _, dup := tags[k]; dup {
			return nil, fmt.Errorf("%q: tag %q given twice", e, k)
		}
		tags[k] = v
	}
	if err := mesh.ValidateTags(tags); err != nil {
		return nil, err
	}
	return tags, nil
}

// formatTags is "k=v,k2=v2", sorted by key.
func formatTags(tags map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(tags)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + tags[k])
	}
	return b.String()
}

// matchTags reports whether have holds every key=value of want.
func matchTags(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

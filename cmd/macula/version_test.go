package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want []string
	}{
		{"no build info", nil, false, []string{"unknown"}},
		{"tagged install", &debug.BuildInfo{GoVersion: "go1.26.0",
			Main: debug.Module{Path: "github.com/macula-io/cluster", Version: "v0.2.0"}}, true,
			[]string{"v0.2.0 (github.com/macula-io/cluster)", "go1.26.0"}},
		{"clone", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/macula-io/cluster", Version: "(devel)"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
				{Key: "vcs.time", Value: "2026-11-28T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}, true,
			[]string{"devel (github.com/macula-io/cluster) commit 0123456789abcdef0123456789abcdef01234567 2026-11-28T10:00:00Z +local changes"}},
	} {
		got := versionOf(tc.bi, tc.ok)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: versionOf = %q, want it to contain %q", tc.name, got, w)
			}
		}
	}
}

package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// doctorRefused runs `macula doctor` with a bad value and checks that it is
// refused before any check runs: exit 2, one line on stderr naming want,
// nothing on stdout (the report starts with a header line). A value that is
// wrongly accepted runs the doctor on lo only (--interface lo, or
// MACULA_GOSSIP_IF=lo when the case sets the interface), without listening.
func doctorRefused(t *testing.T, args []string, env []string, want ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	has := func(list []string, prefix string) bool {
		return slices.ContainsFunc(list, func(a string) bool { return strings.HasPrefix(a, prefix) })
	}
	fixed := []string{"doctor", "--listen-for", "0"}
	if !has(args, "--interface") && !has(env, "MACULA_GOSSIP_IF=") {
		fixed = append(fixed, "--interface", "lo")
	}
	if !has(args, "--listen") && !has(env, "MACULA_LISTEN=") {
		fixed = append(fixed, "--listen", "127.0.0.1:0")
	}
	cmd := exec.CommandContext(ctx, binary, append(fixed, args...)...)
	cmd.Env = append(append(os.Environ(), "MACULA_GOSSIP_IF=lo"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	code := cmd.ProcessState.ExitCode()
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if code != 2 || stdout.Len() != 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "macula doctor: ") {
		t.Errorf("doctor %q %q: exit %d, stdout %q, stderr %q; want exit 2, no stdout, one error line", args, env, code, stdout.String(), stderr.String())
		return
	}
	for _, w := range want {
		if !strings.Contains(lines[0], w) {
			t.Errorf("doctor %q %q: %q does not name %q", args, env, lines[0], w)
		}
	}
}

func TestDoctorRefusesBadFlagValues(t *testing.T) {
	for _, tc := range []struct{ flag, value, why string }{
		{"port", "99999", "1-65535"},
		{"port", "0", "1-65535"},
		{"port", "-1", "1-65535"},
		{"port", "0x10", "1-65535"},
		{"port", "", "empty"},
		{"multicast-addr", "bogus", "multicast"},
		{"multicast-addr", "10.0.0.1", "multicast"},
		{"multicast-addr", "", "empty"},
		{"interface", "lo,", "empty interface"},
		{"interface", ",", "empty interface"},
		{"interface", "", "empty"},
		{"listen", "foo", "host:port"},
		{"listen", "127.0.0.1:99999", "0-65535"},
		{"listen-for", "soon", "milliseconds"},
		{"listen-for", "-1s", "milliseconds"},
		{"listen-for", "", "milliseconds"},
		{"secret", ",", "empty secret"},
		{"secret", "a,,b", "empty secret"},
		{"secret", "", "empty"},
		{"cookie", "", "empty"},
		{"secret-file", "/nonexistent/secret", "no such file"},
		{"cookie-file", "/nonexistent/cookie", "no such file"},
	} {
		doctorRefused(t, []string{"--" + tc.flag + "=" + tc.value}, nil, "--"+tc.flag, `"`+tc.value+`"`, tc.why)
	}
	// The doctor has no --ttl (its probe is looped back): an unknown flag.
	doctorRefused(t, []string{"--ttl=300"}, nil, "-ttl", "doctor -h")
	// Value and file of one secret exclude each other, as for run.
	doctorRefused(t, []string{"--cookie=c", "--cookie-file=/etc/hostname"}, nil, "--cookie and --cookie-file")
}

func TestDoctorRefusesBadEnvValues(t *testing.T) {
	for _, tc := range []struct{ env, value, why string }{
		{"MACULA_GOSSIP_PORT", "99999", "1-65535"},
		{"MACULA_GOSSIP_TTL", "300", "1-255"},
		{"MACULA_GOSSIP_ADDR", "bogus", "multicast"},
		{"MACULA_GOSSIP_INTERVAL", "5", "below the minimum"},
		{"MACULA_GOSSIP_IF", "lo,", "empty interface"},
		{"MACULA_LISTEN", "foo", "host:port"},
		{"MACULA_GOSSIP_SECRET", "a,,b", "empty secret"},
		{"CLUSTER_SECRET", ",", "empty secret"},
		{"MACULA_COOKIE_FILE", "/nonexistent/cookie", "no such file"},
	} {
		doctorRefused(t, nil, []string{tc.env + "=" + tc.value}, tc.env, `"`+tc.value+`"`, tc.why)
	}
}

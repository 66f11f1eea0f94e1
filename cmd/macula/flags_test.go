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

	cluster "github.com/macula-io/cluster"
)

// runRefused runs `macula run` with a bad value and checks that it is
// refused before anything starts: exit 2, one line on stderr naming want,
// nothing on stdout (no ready line), no log line (debug logging would show
// the mesh or HTTP listener starting).
func runRefused(t *testing.T, args []string, env []string, want ...string) {
	t.Helper()
	// Bounded: a value that is wrongly accepted starts a node, which the
	// context stops (on lo, on an ephemeral mesh port).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fixed := []string{"run", "--log-level", "debug", "--interface", "lo", "--http", "127.0.0.1:0"}
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--control") }) {
		fixed = append(fixed, "--control", "127.0.0.1:0")
	}
	if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "MACULA_LISTEN=") }) {
		fixed = append(fixed, "--listen", "127.0.0.1:0")
	}
	cmd := exec.CommandContext(ctx, binary, append(fixed, args...)...)
	cmd.Env = append(append(os.Environ(), "MACULA_COOKIE=test-cookie"), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run()
	code := cmd.ProcessState.ExitCode()
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if code != 2 || stdout.Len() != 0 || len(lines) != 1 || !strings.HasPrefix(lines[0], "macula run: ") {
		t.Errorf("run %q %q: exit %d, stdout %q, stderr %q; want exit 2, no stdout, one error line", args, env, code, stdout.String(), stderr.String())
		return
	}
	for _, w := range want {
		if !strings.Contains(lines[0], w) {
			t.Errorf("run %q %q: %q does not name %q", args, env, lines[0], w)
		}
	}
}

func TestRunRefusesBadFlagValues(t *testing.T) {
	for _, tc := range []struct {
		flag, value string
		why         string
	}{
		{"port", "99999", "1-65535"},
		{"port", "0x10", "1-65535"},
		{"port", "", "empty"},
		{"ttl", "300", "1-255"},
		{"ttl", "0", "1-255"},
		{"multicast-addr", "bogus", "multicast"},
		{"multicast-addr", "10.0.0.1", "multicast"},
		{"listen", "foo", "host:port"},
		{"listen", "127.0.0.1:99999", "0-65535"},
		{"http", "foo", "host:port"},
		{"nodes", "garbage", "name@host:port"},
		{"nodes", "a@127.0.0.1", "no port"},
		{"dns-mode", "bogus", `"a" or "srv"`},
		{"dns-port", "0", "1-65535"},
		{"dns-name", "a..b", "DNS name"},
		{"interval", "5", "below the minimum"},
		{"interval", "soon", "milliseconds"},
		{"interval", "-1s", "milliseconds"},
		{"expiry", "0", "milliseconds"},
		{"on-event-timeout", "0", "milliseconds"},
		{"tag", "novalue", "key=value"},
		{"tag", "bad key=v", "letters, digits"},
		{"link-timeout", "10ms", "at least 1s"},
		{"min-peers", "-1", "0 or more"},
		{"min-peers", "many", "0 or more"},
		{"secret", ",", "empty secret"},
		{"secret", "a,,b", "empty secret"},
		{"interface", "lo,", "empty interface"},
		{"strategy", "telepathy", "auto, gossip"},
		{"name", "nohost", "name@host"},
		{"name", "a@127.0.0.1:9100", "without a port"},
		{"mdns-interface", "a/b", "interface name"},
		{"log-level", "loud", "debug, info"},
		{"log-format", "xml", "text or json"},
		{"tls-cert", "/nonexistent/cert.pem", "/nonexistent/cert.pem"},
		{"control", "0.0.0.0:9180", "loopback only"},
		{"control", "192.0.2.1:9180", "loopback only"},
		{"control", "on", "loopback host:port"},
		{"http-max-conns", "-5", "0 (automatic) or more"},
	} {
		args := []string{"--" + tc.flag + "=" + tc.value}
		if tc.flag == "tls-cert" {
			args = append(args, "--tls-key", "/nonexistent/key.pem")
		}
		runRefused(t, args, nil, "--"+tc.flag, `"`+tc.value+`"`, tc.why)
	}
}

func TestRunRefusesBadEnvValues(t *testing.T) {
	for _, tc := range []struct{ env, value, why string }{
		{"MACULA_GOSSIP_PORT", "99999", "1-65535"},
		{"MACULA_GOSSIP_TTL", "300", "1-255"},
		{"MACULA_GOSSIP_ADDR", "bogus", "multicast"},
		{"MACULA_GOSSIP_INTERVAL", "5", "below the minimum"},
		{"MACULA_LISTEN", "foo", "host:port"},
		{"MACULA_LISTEN", "127.0.0.1:http", "0-65535"},
		{"CLUSTER_NODES", "garbage", "name@host:port"},
		{"CLUSTER_DNS_MODE", "bogus", `"a" or "srv"`},
		{"CLUSTER_DNS_PORT", "0", "1-65535"},
		{"CLUSTER_SECRET", ",", "empty secret"},
		{"MACULA_GOSSIP_SECRET", "a,,b", "empty secret"},
		{"CLUSTER_STRATEGY", "telepathy", "auto, gossip"},
		{"MACULA_NODE", "nohost", "name@host"},
		{"MACULA_ERLANG", "maybe", "true or false"},
		{"ERL_EPMD_PORT", "0", "1-65535"},
	} {
		runRefused(t, nil, []string{tc.env + "=" + tc.value}, tc.env, `"`+tc.value+`"`, tc.why)
	}
}

// TestFlagAndEnvSpellings: a flag and the variable it mirrors accept the
// same values (one parser), and the library accepts whatever the command
// accepts, so a value that passes the early check never fails later.
func TestFlagAndEnvSpellings(t *testing.T) {
	values := []string{"", " ", "0", "1", "5", "10", "100", "1500", "1.5s", " 2s ", "-1", "99999", "65535", "255", "256",
		"0x10", "GOSSIP", "gossip", "Static", "dns", "mdns", "auto", "bogus", "a", "SRV", "230.1.1.251", "ff02::4d41:1",
		"10.0.0.1", "a@127.0.0.1:9100", "a@127.0.0.1", "a@b:1,c@d:2", "a@b:1,,c@d:2", ",", "a,,b", "lo", "lo,eth0",
		"127.0.0.1:0", ":9100", "foo", "[::1]:9100", "host.example.com", "_macula._tcp.example.com", "a..b", "1.2.3.4:53",
		"true", "yes"}
	getenvOnly := func(k, v string) func(string) string { return only(k, v) }
	for _, s := range runSettings {
		for _, env := range s.envs {
			for _, v := range values {
				if strings.TrimSpace(v) == "" {
					continue // empty: unset for a variable, refused for a flag
				}
				_, perr := s.parse(v)
				base := cluster.Config{}
				base.Mesh.Cookie = "x" // keep FromEnv away from ~/.macula.cookie
				_, lerr := cluster.FromEnvFunc(base, getenvOnly(env, v))
				if perr == nil && lerr != nil {
					t.Errorf("--%s %q is accepted but %s=%q is refused by the library: %v", s.flag, v, env, v, lerr)
				}
				if perr != nil && lerr == nil {
					t.Logf("--%s / %s %q: refused early (%v), the library would accept it", s.flag, env, v, perr)
				}
			}
		}
	}
	// The spellings the issue names.
	for _, tc := range []struct{ flag, v string }{{"strategy", "GOSSIP"}, {"interval", "1500"}, {"interval", "1.5s"}, {"dns-mode", "SRV"}} {
		for _, s := range runSettings {
			if s.flag == tc.flag {
				if _, err := s.parse(tc.v); err != nil {
					t.Errorf("--%s %q refused: %v", tc.flag, tc.v, err)
				}
			}
		}
	}
}

func TestHelpOnStdout(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}, {"help", "run"}, {"run", "-h"}, {"run", "--help"},
		{"demo", "-h"}, {"nodes", "-h"}, {"nodes", "--help"}, {"doctor", "-h"}, {"bench", "-h"}, {"version", "-h"}} {
		var out, errb bytes.Buffer
		code := realMain(args, &out, &errb)
		if code != 0 || errb.Len() != 0 || !strings.Contains(out.String(), "Usage") {
			t.Errorf("macula %q: exit %d, stdout %q, stderr %q; want the help on stdout, exit 0", args, code, out.String(), errb.String())
		}
		if strings.Contains(out.String(), "`") {
			t.Errorf("macula %q: help has a backquote: %q", args, out.String())
		}
	}
	var out, errb bytes.Buffer
	realMain([]string{"nodes", "-h"}, &out, &errb)
	if !strings.Contains(out.String(), "--http string") {
		t.Errorf("nodes -h does not show --http with its argument:\n%s", out.String())
	}
	// -v is verbose (demo), not version.
	out.Reset()
	errb.Reset()
	if code := realMain([]string{"-v"}, &out, &errb); code != 2 {
		t.Errorf("macula -v: exit %d, want 2 (unknown command)", code)
	}
}

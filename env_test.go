package cluster_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/mesh"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// The environment of Macula's Docker Compose example must work unchanged.
func TestFromEnvSeedCompose(t *testing.T) {
	home := t.TempDir()
	cfg, err := cluster.FromEnvFunc(cluster.Config{}, envOf(map[string]string{
		"HOME":             home,
		"RELEASE_NODE":     "macula@node1",
		"RELEASE_COOKIE":   "macula_secret_cookie",
		"CLUSTER_STRATEGY": "gossip",
		"CLUSTER_SECRET":   "my_cluster_secret",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Strategy != "gossip" || cfg.Mesh.Name != "macula@node1" || cfg.Mesh.Cookie != "macula_secret_cookie" ||
		!slices.Equal(cfg.Gossip.Secrets, []string{"my_cluster_secret"}) {
		t.Fatalf("got %+v", cfg)
	}
	if _, err := os.Stat(filepath.Join(home, ".macula.cookie")); err == nil {
		t.Error("a cookie file was created although RELEASE_COOKIE was set")
	}
}

func TestFromEnvPrecedence(t *testing.T) {
	env := envOf(map[string]string{
		"HOME":                t.TempDir(),
		"MACULA_NODE":         "env@10.0.0.1",
		"RELEASE_NODE":        "release@10.0.0.1",
		"MACULA_COOKIE":       "envcookie",
		"CLUSTER_NODES":       "a@10.0.0.2:9100, b@10.0.0.3:9100",
		"MACULA_LISTEN":       "0.0.0.0:9150",
		"MACULA_LINK_TIMEOUT": "2500",
		"MACULA_GOSSIP_PORT":  "45999",
	})
	cfg, err := cluster.FromEnvFunc(cluster.Config{}, env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mesh.Name != "env@10.0.0.1" {
		t.Errorf("MACULA_NODE should win over RELEASE_NODE: %q", cfg.Mesh.Name)
	}
	if !slices.Equal(cfg.Nodes, []string{"a@10.0.0.2:9100", "b@10.0.0.3:9100"}) {
		t.Errorf("Nodes = %q", cfg.Nodes)
	}
	if cfg.Mesh.Listen != "0.0.0.0:9150" || cfg.Mesh.LinkTimeout != 2500*time.Millisecond || cfg.Mesh.Cookie != "envcookie" {
		t.Errorf("mesh = %+v", cfg.Mesh)
	}
	if cfg.Gossip.Port != 45999 {
		t.Errorf("gossip port %d", cfg.Gossip.Port)
	}
	// Options win over the environment.
	cfg, err = cluster.FromEnvFunc(cluster.Config{Nodes: []string{"o@1.2.3.4:1"},
		Mesh: mesh.Config{Name: "opt@1.2.3.4", Cookie: "optcookie", LinkTimeout: 3 * time.Second}}, env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mesh.Name != "opt@1.2.3.4" || cfg.Mesh.Cookie != "optcookie" || cfg.Mesh.LinkTimeout != 3*time.Second ||
		!slices.Equal(cfg.Nodes, []string{"o@1.2.3.4:1"}) {
		t.Errorf("options did not win: %+v", cfg)
	}
}

func TestFromEnvCookieFile(t *testing.T) {
	home := t.TempDir()
	cfg, err := cluster.FromEnvFunc(cluster.Config{}, envOf(map[string]string{"HOME": home}))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(home, ".macula.cookie"))
	if err != nil {
		t.Fatalf("cookie file not created: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("cookie file mode %v, want 0600", st.Mode().Perm())
	}
	if cfg.Mesh.Cookie == "" {
		t.Error("cookie not loaded")
	}
	again, err := cluster.FromEnvFunc(cluster.Config{}, envOf(map[string]string{"HOME": home}))
	if err != nil || again.Mesh.Cookie != cfg.Mesh.Cookie {
		t.Errorf("second read gave %q, %v; want the same cookie", again.Mesh.Cookie, err)
	}
}

func TestFromEnvInvalid(t *testing.T) {
	for _, tc := range []struct{ key, val string }{
		{"CLUSTER_STRATEGY", "smoke-signals"},
		{"CLUSTER_NODES", "a@h:1,broken"},
		{"MACULA_NODE", "no-at-sign"},
		{"RELEASE_NODE", "a@h:9100"},
		{"MACULA_LISTEN", "9100"},
		{"MACULA_LINK_TIMEOUT", "500"},
		{"MACULA_LINK_TIMEOUT", "soon"},
		{"MACULA_GOSSIP_PORT", "99999"},
		{"MACULA_GOSSIP_INTERVAL", "-5"},
		{"MACULA_GOSSIP_TTL", "x"},
		{"MACULA_GOSSIP_ADDR", "not-an-ip"},
	} {
		_, err := cluster.FromEnvFunc(cluster.Config{}, envOf(map[string]string{"HOME": t.TempDir(), "MACULA_COOKIE": "c", tc.key: tc.val}))
		if err == nil {
			t.Errorf("%s=%q accepted", tc.key, tc.val)
			continue
		}
		if !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), tc.val) {
			t.Errorf("%s=%q: error %q does not name the variable and value", tc.key, tc.val, err)
		}
	}
}

// TestFromEnvSecretFiles: MACULA_COOKIE_FILE and MACULA_GOSSIP_SECRET_FILE
// (the Docker/Kubernetes secrets convention) are read by the library too,
// trailing newline trimmed; a missing file is an error naming the variable.
func TestFromEnvSecretFiles(t *testing.T) {
	dir := t.TempDir()
	cookie := filepath.Join(dir, "cookie")
	secret := filepath.Join(dir, "secret")
	os.WriteFile(cookie, []byte("c00kie\n"), 0o600)
	os.WriteFile(secret, []byte("k1,k2\r\n"), 0o600)
	env := map[string]string{"MACULA_COOKIE_FILE": cookie, "MACULA_GOSSIP_SECRET_FILE": secret,
		"RELEASE_COOKIE": "loses", "CLUSTER_SECRET": "loses", "HOME": dir}
	cfg, err := cluster.FromEnvFunc(cluster.Config{}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mesh.Cookie != "c00kie" || strings.Join(cfg.Gossip.Secrets, ",") != "k1,k2" {
		t.Fatalf("cookie %q secrets %q", cfg.Mesh.Cookie, cfg.Gossip.Secrets)
	}
	for _, k := range []string{"MACULA_COOKIE_FILE", "MACULA_GOSSIP_SECRET_FILE"} {
		bad := map[string]string{k: filepath.Join(dir, "missing"), "HOME": dir}
		if _, err := cluster.FromEnvFunc(cluster.Config{}, func(k string) string { return bad[k] }); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s missing: %v, want an error naming it", k, err)
		}
	}
}

func TestFromEnvProbes(t *testing.T) {
	env := map[string]string{"MACULA_NODE": "n@127.0.0.1", "MACULA_COOKIE": "c", "MACULA_PROFILE": "WAN",
		"MACULA_PROBE_INTERVAL": "2s", "MACULA_PROBE_TIMEOUT": "700", "MACULA_SUSPICION_MULT": "5", "MACULA_INDIRECT_CHECKS": "0"}
	cfg, err := cluster.FromEnvFunc(cluster.Config{}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Mesh
	if m.Profile != "wan" || m.ProbeInterval != 2*time.Second || m.ProbeTimeout != 700*time.Millisecond ||
		m.SuspicionMult != 5 || m.IndirectChecks != -1 {
		t.Fatalf("mesh config %+v", m)
	}
	for k, v := range map[string]string{"MACULA_PROFILE": "moon", "MACULA_PROBE_INTERVAL": "-1s", "MACULA_SUSPICION_MULT": "0", "MACULA_INDIRECT_CHECKS": "x"} {
		bad := map[string]string{"MACULA_NODE": "n@127.0.0.1", "MACULA_COOKIE": "c", k: v}
		if _, err := cluster.FromEnvFunc(cluster.Config{}, func(k string) string { return bad[k] }); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: err %v, want one naming the variable", k, v, err)
		}
	}
}

func TestFromEnvErlang(t *testing.T) {
	env := func(m map[string]string) func(string) string {
		m["MACULA_COOKIE"] = "x"
		return envOf(m)
	}
	cfg, err := cluster.FromEnvFunc(cluster.Config{}, env(map[string]string{"MACULA_ERLANG": "true", "ERL_EPMD_PORT": " 4370 "}))
	if err != nil || !cfg.Erlang.Enable || cfg.Erlang.EPMDPort != 4370 {
		t.Fatalf("%+v, %v", cfg.Erlang, err)
	}
	// Options win over the environment.
	base := cluster.Config{Erlang: cluster.ErlangConfig{Enable: true, EPMDPort: 5000}}
	cfg, err = cluster.FromEnvFunc(base, env(map[string]string{"MACULA_ERLANG": "false", "ERL_EPMD_PORT": "4370"}))
	if err != nil || !cfg.Erlang.Enable || cfg.Erlang.EPMDPort != 5000 {
		t.Fatalf("%+v, %v", cfg.Erlang, err)
	}
	for k, v := range map[string]string{"MACULA_ERLANG": "maybe", "ERL_EPMD_PORT": "70000"} {
		if _, err := cluster.FromEnvFunc(cluster.Config{}, env(map[string]string{k: v})); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%q: %v, want an error naming it", k, v, err)
		}
	}
}

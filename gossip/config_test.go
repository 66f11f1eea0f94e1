package gossip

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestResolveDefaults(t *testing.T) {
	s, err := Config{Node: "a@127.0.0.1:9100"}.resolve()
	if err != nil {
		t.Fatal(err)
	}
	if s.group.String() != DefaultGroup || s.port != DefaultPort || s.interval != 1500*time.Millisecond ||
		s.ttl != 1 || s.expiry != 7500*time.Millisecond || s.maxPeers != 4096 || s.keyring.Len() != 0 ||
		s.log == nil || s.self.Addr != "127.0.0.1:9100" || len(s.ifaces) != 0 || s.broadcast {
		t.Errorf("defaults: %+v", s)
	}
	// The 5 s floor applies to the default only; an explicit Expiry is honoured.
	s, _ = Config{Node: "a@h", Interval: 50 * time.Millisecond}.resolve()
	if s.expiry != 5*time.Second {
		t.Errorf("default expiry with short interval = %v, want 5s", s.expiry)
	}
	s, _ = Config{Node: "a@h", Interval: 50 * time.Millisecond, Expiry: 300 * time.Millisecond}.resolve()
	if s.expiry != 300*time.Millisecond {
		t.Errorf("explicit expiry = %v", s.expiry)
	}
	s, _ = Config{Node: "a@h", Group: "ff02::4d41:1"}.resolve()
	if !s.group.Is6() {
		t.Errorf("IPv6 group: %v", s.group)
	}
	s, _ = Config{Node: "a@h", Group: "::ffff:230.1.1.251"}.resolve()
	if !s.group.Is4() {
		t.Errorf("v4-mapped group not unmapped: %v", s.group)
	}
}

func TestResolveInvalid(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no node", Config{}},
		{"bad node", Config{Node: "nohost"}},
		{"unicast group", Config{Node: "a@h", Group: "10.0.0.1"}},
		{"garbage group", Config{Node: "a@h", Group: "x"}},
		{"zoned group", Config{Node: "a@h", Group: "ff02::1%lo"}},
		{"broadcast v6", Config{Node: "a@h", Group: "ff02::1", Broadcast: true}},
		{"port", Config{Node: "a@h", Port: 70000}},
		{"negative port", Config{Node: "a@h", Port: -1}},
		{"interval", Config{Node: "a@h", Interval: time.Millisecond}},
		{"ttl", Config{Node: "a@h", TTL: 256}},
		{"expiry <= interval", Config{Node: "a@h", Interval: time.Second, Expiry: time.Second}},
		{"max peers", Config{Node: "a@h", MaxPeers: -1}},
		{"empty secret", Config{Node: "a@h", Secrets: []string{"a", ""}}},
		{"empty interface", Config{Node: "a@h", Interfaces: []string{""}}},
	} {
		if _, err := tc.cfg.resolve(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", tc.name, err)
		}
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	full := env(EnvAddr, "239.1.2.3", EnvPort, "5000", EnvSecret, "new, old", EnvClusterSecret, "ignored",
		EnvInterface, "lo,eth1", EnvInterval, "1.5s", EnvTTL, "4", EnvBroadcast, "true")
	got, err := ConfigFromEnv(Config{}, full)
	want := Config{Group: "239.1.2.3", Port: 5000, Secrets: []string{"new", "old"}, Interfaces: []string{"lo", "eth1"},
		Interval: 1500 * time.Millisecond, TTL: 4, Broadcast: true}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("full env: %+v, %v\nwant %+v", got, err, want)
	}
	// Option wins over environment.
	base := Config{Group: "ff05::1", Port: 1, Secrets: []string{"opt"}, Interfaces: []string{"x"}, Interval: time.Second, TTL: 2, Node: "n@h", Broadcast: true}
	if got, err := ConfigFromEnv(base, full); err != nil || !reflect.DeepEqual(got, base) {
		t.Errorf("options must win: %+v, %v", got, err)
	}
	if got, _ := ConfigFromEnv(Config{}, env(EnvClusterSecret, "c")); !reflect.DeepEqual(got.Secrets, []string{"c"}) {
		t.Errorf("CLUSTER_SECRET fallback: %+v", got)
	}
	if got, _ := ConfigFromEnv(Config{}, env(EnvInterval, "1500")); got.Interval != 1500*time.Millisecond {
		t.Errorf("interval ms: %v", got.Interval)
	}
	if got, err := ConfigFromEnv(Config{}, env()); err != nil || !reflect.DeepEqual(got, Config{}) {
		t.Errorf("empty env: %+v, %v", got, err)
	}
	for _, tc := range []struct{ name, value string }{
		{EnvAddr, "10.0.0.1"}, {EnvAddr, "nope"}, {EnvPort, "0"}, {EnvPort, "65536"}, {EnvPort, "x"},
		{EnvInterval, "soon"}, {EnvInterval, "0"}, {EnvInterval, "-5"}, {EnvInterval, "1ms"},
		{EnvInterval, "99999999999999999"}, {EnvTTL, "0"}, {EnvTTL, "300"}, {EnvInterface, "lo,,eth0"}, {EnvBroadcast, "maybe"}, {EnvAcceptForeign, "maybe"},
	} {
		_, err := ConfigFromEnv(Config{}, env(tc.name, tc.value))
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.name) || !strings.Contains(err.Error(), tc.value) {
			t.Errorf("%s=%q: err = %v; want ErrInvalidConfig naming variable and value", tc.name, tc.value, err)
		}
	}
	_, err = ConfigFromEnv(Config{}, env(EnvSecret, "topsecret,"))
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), EnvSecret) || strings.Contains(err.Error(), "topsecret") {
		t.Errorf("bad secret list: %v (must name the variable, never the secret)", err)
	}
	t.Setenv(EnvPort, "4242")
	if got, err := ConfigFromEnv(Config{}, nil); err != nil || got.Port != 4242 {
		t.Errorf("os.Getenv default: %+v, %v", got, err)
	}
}

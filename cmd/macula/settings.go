package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/dnsdisc"
	"github.com/macula-io/cluster/gossip"
	"github.com/macula-io/cluster/internal/envx"
	"github.com/macula-io/cluster/mdns"
	"github.com/macula-io/cluster/mesh"
)

// A setting is a `macula run` flag that mirrors environment variables. One
// parse function reads the flag and the variables, so both accept exactly
// the same spellings, and `macula run` checks every given value (flag or
// environment) before it binds anything: a bad value exits 2 with a message
// that names the flag or the variable and the value.
//
// apply stores a parsed flag value into the config; the environment is then
// applied by cluster.FromEnv (option > environment > default), which
// accepts everything parse accepted.
type setting struct {
	flag  string
	envs  []string
	parse func(v string) (any, error)
	apply func(cfg *cluster.Config, x any)
}

var runSettings = []setting{
	{"multicast-addr", []string{gossip.EnvAddr}, parseGroup,
		func(c *cluster.Config, x any) { c.Gossip.Group = x.(string) }},
	{"port", []string{gossip.EnvPort}, parsePort,
		func(c *cluster.Config, x any) { c.Gossip.Port = x.(int) }},
	{"interval", []string{gossip.EnvInterval}, parseInterval,
		func(c *cluster.Config, x any) { c.Gossip.Interval = x.(time.Duration) }},
	{"ttl", []string{gossip.EnvTTL}, parseTTL,
		func(c *cluster.Config, x any) { c.Gossip.TTL = x.(int) }},
	{"interface", []string{gossip.EnvInterface}, parseList("interface name"),
		func(c *cluster.Config, x any) { c.Gossip.Interfaces = x.([]string) }},
	{"secret", []string{gossip.EnvSecret, gossip.EnvClusterSecret}, parseList("secret"),
		func(c *cluster.Config, x any) { c.Gossip.Secrets = x.([]string) }},
	{"expiry", nil, parsePositiveDuration,
		func(c *cluster.Config, x any) { c.Gossip.Expiry = x.(time.Duration) }},
	{"strategy", []string{"CLUSTER_STRATEGY"}, parseStrategy,
		func(c *cluster.Config, x any) { c.Strategy = x.(string) }},
	{"nodes", []string{"CLUSTER_NODES"}, parseNodes,
		func(c *cluster.Config, x any) { c.Nodes = x.([]string) }},
	{"dns-name", []string{"CLUSTER_DNS_NAME"}, viaDNSEnv("CLUSTER_DNS_NAME"),
		func(c *cluster.Config, x any) { c.DNS.Name = x.(dnsdisc.Config).Name }},
	{"dns-server", []string{"CLUSTER_DNS_SERVER"}, viaDNSEnv("CLUSTER_DNS_SERVER"),
		func(c *cluster.Config, x any) { c.DNS.Server = x.(dnsdisc.Config).Server }},
	{"dns-port", []string{"CLUSTER_DNS_PORT"}, parsePort,
		func(c *cluster.Config, x any) { c.DNS.Port = x.(int) }},
	{"dns-mode", []string{"CLUSTER_DNS_MODE"}, parseDNSMode,
		func(c *cluster.Config, x any) { c.DNS.Mode = x.(string) }},
	{"mdns-interface", []string{"MACULA_MDNS_IF"}, parseMDNSIfaces,
		func(c *cluster.Config, x any) { c.MDNS.Interfaces = x.([]string) }},
	{"name", []string{"MACULA_NODE", "RELEASE_NODE"}, parseName,
		func(c *cluster.Config, x any) { c.Mesh.Name = x.(string) }},
	{"listen", []string{"MACULA_LISTEN"}, parseListen,
		func(c *cluster.Config, x any) { c.Mesh.Listen = x.(string) }},
	{"link-timeout", []string{"MACULA_LINK_TIMEOUT"}, parseLinkTimeout,
		func(c *cluster.Config, x any) { c.Mesh.LinkTimeout = x.(time.Duration) }},
	{"profile", []string{"MACULA_PROFILE"}, parseProfile,
		func(c *cluster.Config, x any) { c.Mesh.Profile = x.(string) }},
	{"probe-interval", []string{"MACULA_PROBE_INTERVAL"}, parseProbeDuration,
		func(c *cluster.Config, x any) { c.Mesh.ProbeInterval = x.(time.Duration) }},
	{"probe-timeout", []string{"MACULA_PROBE_TIMEOUT"}, parseProbeDuration,
		func(c *cluster.Config, x any) { c.Mesh.ProbeTimeout = x.(time.Duration) }},
	{"suspicion-mult", []string{"MACULA_SUSPICION_MULT"}, parseIntRange(1, 64),
		func(c *cluster.Config, x any) { c.Mesh.SuspicionMult = x.(int) }},
	{"indirect-checks", []string{"MACULA_INDIRECT_CHECKS"}, parseIntRange(0, 64),
		func(c *cluster.Config, x any) {
			n := x.(int)
			if n == 0 {
				n = -1 // none (mesh.Config: negative)
			}
			c.Mesh.IndirectChecks = n
		}},
}

// parseProfile accepts the failure detector profiles, any case.
func parseProfile(v string) (any, error) {
	p := strings.ToLower(strings.TrimSpace(v))
	if err := mesh.CheckProfile(p); err != nil {
		return nil, errors.New("want lan, wan or local")
	}
	return p, nil
}

func parseProbeDuration(v string) (any, error) {
	d, err := envx.ParseDuration(v)
	if err != nil || d <= 0 {
		return nil, errors.New("want milliseconds or a positive Go duration")
	}
	return d, nil
}

func parseIntRange(lo, hi int) func(string) (any, error) {
	return func(v string) (any, error) {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < lo || n > hi {
			return nil, fmt.Errorf("want an integer %d-%d", lo, hi)
		}
		return n, nil
	}
}

// errEmpty is refused for a flag given with an empty value ("--port="); an
// empty environment variable means "not set", as everywhere in Macula.
var errEmpty = errors.New("empty value")

// check parses the flag's value v when the command line set it (fromFlag),
// else checks the first of its environment variables that is set (the
// library reads it later, as cluster.FromEnv). Errors name the flag or
// variable and the value, and are usage errors (exit 2).
func (s setting) check(set bool, v string, getenv func(string) string) (x any, fromFlag bool, err error) {
	if set {
		if strings.TrimSpace(v) == "" {
			return nil, false, usageError{fmt.Errorf("--%s %q: %w", s.flag, v, errEmpty)}
		}
		if x, err = s.parse(v); err != nil {
			return nil, false, usageError{fmt.Errorf("--%s %q: %w", s.flag, v, err)}
		}
		return x, true, nil
	}
	for _, env := range s.envs {
		v := getenv(env)
		if v == "" {
			continue
		}
		if _, err := s.parse(v); err != nil {
			return nil, false, usageError{fmt.Errorf("%s=%q: %w", env, v, err)}
		}
		break // the first variable set wins, as in cluster.FromEnv
	}
	return nil, false, nil
}

// applySettings parses every flag the command line set into cfg and checks
// the environment variables of the flags it did not set. values are the raw
// flag strings by name.
func applySettings(cfg *cluster.Config, fs *flag.FlagSet, values map[string]*string, getenv func(string) string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, s := range runSettings {
		var v string
		if set[s.flag] {
			v = *values[s.flag]
		}
		x, fromFlag, err := s.check(set[s.flag], v, getenv)
		if err != nil {
			return err
		}
		if fromFlag {
			s.apply(cfg, x)
		}
	}
	return nil
}

func parseGroup(v string) (any, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(v))
	if err != nil || !a.IsMulticast() || a.Zone() != "" {
		return nil, errors.New("want a multicast IP address such as 230.1.1.251 or ff02::4d41:1")
	}
	return a.String(), nil
}

func parsePortNumber(v string, min int) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < min || n > 65535 {
		return 0, fmt.Errorf("want a port %d-65535", min)
	}
	return n, nil
}

func parsePort(v string) (any, error) { return parsePortNumber(v, 1) }

func parseTTL(v string) (any, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 || n > 255 {
		return nil, errors.New("want a TTL 1-255")
	}
	return n, nil
}

// parseInterval: like MACULA_GOSSIP_INTERVAL, a bare number is milliseconds.
func parseInterval(v string) (any, error) {
	d, err := envx.ParseDuration(v)
	if err != nil {
		return nil, err
	}
	if d < gossip.MinInterval {
		return nil, fmt.Errorf("%v is below the minimum %v (a bare number is milliseconds: write 5s for five seconds)", d, gossip.MinInterval)
	}
	return d, nil
}

func parsePositiveDuration(v string) (any, error) { return envx.ParseDuration(v) }

func parseLinkTimeout(v string) (any, error) {
	d, err := envx.ParseDuration(v)
	if err != nil || d < time.Second {
		return nil, errors.New("want milliseconds or a Go duration of at least 1s")
	}
	return d, nil
}

func parseList(what string) func(string) (any, error) {
	return func(v string) (any, error) {
		list, ok := envx.SplitList(v)
		if !ok || len(list) == 0 {
			return nil, fmt.Errorf("empty %s in the comma-separated list", what)
		}
		return list, nil
	}
}

func parseStrategy(v string) (any, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	if err := cluster.CheckStrategy(s); err != nil {
		return nil, errors.New("want auto, gossip, static, dns or mdns")
	}
	return s, nil
}

// parseNodes: as CLUSTER_NODES, empty entries are skipped; every entry must
// be name@host:port or host:port (a static node without a port could never
// be dialled).
func parseNodes(v string) (any, error) {
	list, _ := envx.SplitList(v)
	if len(list) == 0 {
		return nil, errors.New("want name@host:port or host:port, comma-separated")
	}
	for _, n := range list {
		p, err := discovery.ParseEntry(n)
		if err != nil {
			return nil, fmt.Errorf("node %q: want name@host:port or host:port", n)
		}
		if !p.Dialable() {
			return nil, fmt.Errorf("node %q has no port: want name@host:port or host:port", n)
		}
	}
	return list, nil
}

func parseName(v string) (any, error) {
	p, err := discovery.ParseNode(strings.TrimSpace(v))
	if err != nil {
		return nil, errors.New("want name@host (the host is what peers dial)")
	}
	if p.Dialable() {
		return nil, errors.New("want name@host without a port (the port comes from the mesh listener)")
	}
	return p.Name, nil
}

func parseDNSMode(v string) (any, error) {
	m := strings.ToLower(strings.TrimSpace(v))
	if m != dnsdisc.ModeA && m != dnsdisc.ModeSRV {
		return nil, errors.New(`want "a" or "srv"`)
	}
	return m, nil
}

// viaDNSEnv checks a value with dnsdisc's own parser of the variable, so
// the flag and the variable cannot drift apart.
func viaDNSEnv(env string) func(string) (any, error) {
	return func(v string) (any, error) {
		cfg, err := dnsdisc.ConfigFromEnv(dnsdisc.Config{}, only(env, v))
		if err != nil {
			return nil, err
		}
		return cfg, nil
	}
}

func parseMDNSIfaces(v string) (any, error) {
	cfg, err := mdns.ConfigFromEnv(mdns.Config{}, only("MACULA_MDNS_IF", v))
	if err != nil {
		return nil, err
	}
	return cfg.Interfaces, nil
}

func only(env, v string) func(string) string {
	return func(k string) string {
		if k == env {
			return v
		}
		return ""
	}
}

// parseListen: host:port with a numeric port (0: any free port); the host
// may be empty (every address).
func parseListen(v string) (any, error) {
	v = strings.TrimSpace(v)
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return nil, errors.New("want host:port, e.g. 0.0.0.0:9100 or 127.0.0.1:0")
	}
	if _, err := parsePortNumber(port, 0); err != nil {
		return nil, errors.New("want host:port with a port 0-65535")
	}
	if strings.ContainsAny(host, " /") {
		return nil, errors.New("want host:port with an IP address or a host name")
	}
	return v, nil
}

// parseMinPeers: --min-peers, a count of peers, 0 or more.
func parseMinPeers(v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 {
		return 0, errors.New("want a number of peers, 0 or more")
	}
	return n, nil
}

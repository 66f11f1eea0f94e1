package cluster

import (
	"fmt"
	"github.com/macula-io/cluster/internal/envx"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/dnsdisc"
	"github.com/macula-io/cluster/gossip"
	"github.com/macula-io/cluster/mdns"
	"github.com/macula-io/cluster/mesh"
)

// The strategy names accepted by Config.Strategy and CLUSTER_STRATEGY.
const (
	StrategyAuto   = "auto"   // static when Nodes is set, else gossip (as Macula does)
	StrategyGossip = "gossip" // UDP multicast heartbeats (Macula's wire format)
	StrategyStatic = "static" // a fixed list of name@host:port
	StrategyDNS    = "dns"    // A/AAAA or SRV records (Kubernetes headless service)
	StrategyMDNS   = "mdns"   // DNS-SD over multicast DNS (_macula._tcp.local)
)

// Environment variables of Config.Erlang read by FromEnv.
const (
	EnvErlang   = "MACULA_ERLANG" // true/false (strconv.ParseBool): Erlang.Enable
	EnvEPMDPort = "ERL_EPMD_PORT" // Erlang.EPMDPort, the variable erl itself reads
)

// DefaultEventQueue is used when Config.EventQueue is zero.
const DefaultEventQueue = 1024

// Config configures a cluster. The zero value is a working configuration:
// gossip discovery with Macula's defaults, a generated node name, the cookie
// from ~/.macula.cookie, and a mesh port in 9100-9200.
//
// The library never reads environment variables by itself; FromEnv does.
type Config struct {
	// Strategy selects discovery: "auto" (or ""), "gossip", "static", "dns"
	// or "mdns". Auto means static when Nodes is non-empty, else gossip.
	Strategy string
	// Discovery, when non-nil, is your own strategy; Strategy is then
	// ignored. The cluster calls its Start, Refresh and Close.
	Discovery discovery.Strategy

	// Nodes is the static list: "name@host:port", "host:port" (the name is
	// learned in the handshake) or "name@host" (not dialable).
	Nodes []string
	// ReconnectInterval is how often the static strategy re-reports its
	// list so unreachable nodes are redialled. Zero means 5 s.
	ReconnectInterval time.Duration

	// Gossip configures the gossip strategy. Node and OnEvent are set by
	// the cluster and ignored here.
	Gossip gossip.Config
	// DNS configures the dns strategy; DNS.Name is required for it.
	DNS dnsdisc.Config
	// MDNS configures the mdns strategy.
	MDNS mdns.Config

	// Mesh configures this node and its links. Mesh.Name empty means
	// "macula-<random>@<IP>" (the IP of the first usable interface, or the
	// host of Mesh.Listen when that is a specific address). Mesh.Cookie
	// empty means the cookie in ~/.macula.cookie, created (mode 0600) when
	// missing. Mesh.OnEvent is set by the cluster and ignored here; use
	// OnEvent. Mesh.OnMessage receives messages sent with Send.
	Mesh mesh.Config

	// Erlang makes the node serve Erlang distribution too, under its mesh
	// name and cookie, and connect to the Erlang nodes it discovers (see
	// ErlangConfig). The zero value is off.
	Erlang ErlangConfig

	// Tags are this node's metadata (role, version, a service port), at
	// most mesh.MaxTags of them in mesh.MaxTagBytes, sent to every peer in
	// the authenticated handshake; peers see them in Member.Tags and NodeUp
	// events. It sets Mesh.Tags (give one of the two). nil = none.
	Tags map[string]string

	// OnEvent, when non-nil, is called for every event, in order, from one
	// goroutine. It is lossless: a slow OnEvent delays later events (and
	// the reconciliation that produces them), it never drops any. It must
	// not call Close, which waits for that goroutine; hand the event to
	// another goroutine if it should stop the cluster.
	OnEvent func(Event)
	// EventQueue is the buffer of the Events channel. Zero means 1024;
	// negative disables the channel. When a reader falls that far behind,
	// further events for the channel are dropped, counted in
	// Stats().EventsDropped, and logged once per episode; OnEvent still gets
	// every event.
	EventQueue int

	// Logger receives membership changes (Info) and problems (Warn); nil
	// discards. It is passed to the strategy and mesh unless those configs
	// carry their own.
	Logger *slog.Logger
}

// FromEnv returns base completed from the environment: option > environment
// > default, so a field already set in base is kept. It reads
// CLUSTER_STRATEGY, CLUSTER_NODES, CLUSTER_SECRET, the MACULA_GOSSIP_*
// variables, CLUSTER_DNS_*, MACULA_MDNS_*, MACULA_NODE / RELEASE_NODE,
// MACULA_COOKIE / RELEASE_COOKIE (then ~/.macula.cookie), MACULA_LISTEN,
// MACULA_LINK_TIMEOUT, MACULA_ERLANG (true/false: Erlang.Enable) and
// ERL_EPMD_PORT (Erlang.EPMDPort, as erl reads it). An invalid value is an
// error naming the variable.
func FromEnv(base Config) (Config, error) {
	return FromEnvFunc(base, os.Getenv)
}

// FromEnvFunc is FromEnv with a custom lookup (for tests and embedding).
func FromEnvFunc(base Config, getenv func(string) string) (Config, error) {
	cfg := base
	var err error
	if cfg.Strategy == "" {
		if v := getenv("CLUSTER_STRATEGY"); v != "" {
			cfg.Strategy = strings.ToLower(strings.TrimSpace(v))
			if err := CheckStrategy(cfg.Strategy); err != nil {
				return cfg, fmt.Errorf("CLUSTER_STRATEGY=%q: %w", v, err)
			}
		}
	}
	if len(cfg.Nodes) == 0 {
		if v := getenv("CLUSTER_NODES"); v != "" {
			cfg.Nodes, _ = envx.SplitList(v) // empty entries are skipped
			for _, n := range cfg.Nodes {
				if _, err := discovery.ParseEntry(n); err != nil {
					return cfg, fmt.Errorf("CLUSTER_NODES=%q: %w", v, err)
				}
			}
		}
	}
	if cfg.Gossip, err = gossip.ConfigFromEnv(cfg.Gossip, getenv); err != nil {
		return cfg, err
	}
	if cfg.DNS, err = dnsdisc.ConfigFromEnv(cfg.DNS, getenv); err != nil {
		return cfg, err
	}
	if cfg.MDNS, err = mdns.ConfigFromEnv(cfg.MDNS, getenv); err != nil {
		return cfg, err
	}
	if cfg.Mesh.Name == "" {
		for _, k := range []string{"MACULA_NODE", "RELEASE_NODE"} {
			if v := getenv(k); v != "" {
				if err := validName(v); err != nil {
					return cfg, fmt.Errorf("%s=%q: %w", k, v, err)
				}
				cfg.Mesh.Name = v
				break
			}
		}
	}
	if cfg.Mesh.Cookie == "" {
		home := getenv("HOME")
		if home == "" {
			home, _ = os.UserHomeDir()
		}
		cookie, _, err := mesh.ResolveCookie(getenv, home)
		if err != nil {
			return cfg, err
		}
		cfg.Mesh.Cookie = cookie
	}
	if cfg.Mesh.Listen == "" {
		if v := getenv("MACULA_LISTEN"); v != "" {
			if _, _, err := net.SplitHostPort(v); err != nil {
				return cfg, fmt.Errorf("MACULA_LISTEN=%q: want host:port: %w", v, err)
			}
			cfg.Mesh.Listen = v
		}
	}
	if !cfg.Erlang.Enable {
		if v := getenv(EnvErlang); v != "" {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			if err != nil {
				return cfg, fmt.Errorf("%s=%q: want true or false", EnvErlang, v)
			}
			cfg.Erlang.Enable = b
		}
	}
	if cfg.Erlang.EPMDPort == 0 {
		if v := getenv(EnvEPMDPort); v != "" {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 1 || n > 65535 {
				return cfg, fmt.Errorf("%s=%q: want a port 1-65535", EnvEPMDPort, v)
			}
			cfg.Erlang.EPMDPort = n
		}
	}
	if cfg.Mesh.LinkTimeout == 0 {
		if v := getenv("MACULA_LINK_TIMEOUT"); v != "" {
			d, err := envx.ParseDuration(v)
			if err != nil || d < time.Second {
				return cfg, fmt.Errorf("MACULA_LINK_TIMEOUT=%q: want milliseconds or a Go duration of at least 1s", v)
			}
			cfg.Mesh.LinkTimeout = d
		}
	}
	if err := probesFromEnv(&cfg.Mesh, getenv); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// probesFromEnv reads the failure detector's settings: MACULA_PROFILE
// (lan, wan, local), MACULA_PROBE_INTERVAL and MACULA_PROBE_TIMEOUT (ms or
// Go duration), MACULA_SUSPICION_MULT and MACULA_INDIRECT_CHECKS (integers).
// Fields already set win.
func probesFromEnv(m *mesh.Config, getenv func(string) string) error {
	if v := strings.ToLower(strings.TrimSpace(getenv("MACULA_PROFILE"))); v != "" && m.Profile == "" {
		if err := mesh.CheckProfile(v); err != nil {
			return fmt.Errorf("MACULA_PROFILE=%q: %w", v, err)
		}
		m.Profile = v
	}
	durs := []struct {
		env string
		dst *time.Duration
	}{{"MACULA_PROBE_INTERVAL", &m.ProbeInterval}, {"MACULA_PROBE_TIMEOUT", &m.ProbeTimeout}}
	for _, d := range durs {
		if v := getenv(d.env); v != "" && *d.dst == 0 {
			x, err := envx.ParseDuration(v)
			if err != nil || x <= 0 {
				return fmt.Errorf("%s=%q: want milliseconds or a positive Go duration", d.env, v)
			}
			*d.dst = x
		}
	}
	ints := []struct {
		env string
		dst *int
		min int
	}{{"MACULA_SUSPICION_MULT", &m.SuspicionMult, 1}, {"MACULA_INDIRECT_CHECKS", &m.IndirectChecks, 0}}
	for _, n := range ints {
		if v := getenv(n.env); v != "" && *n.dst == 0 {
			x, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || x < n.min || x > 64 {
				return fmt.Errorf("%s=%q: want an integer %d-64", n.env, v, n.min)
			}
			if x == 0 {
				x = -1 // 0 indirect checks: none (mesh.Config: negative)
			}
			*n.dst = x
		}
	}
	return nil
}

// CheckStrategy reports whether s names a strategy ("" means auto); the
// error lists the valid names. For callers that build a Config from their
// own flags.
func CheckStrategy(s string) error {
	switch s {
	case "", StrategyAuto, StrategyGossip, StrategyStatic, StrategyDNS, StrategyMDNS:
		return nil
	}
	return fmt.Errorf("unknown strategy %q (want auto, gossip, static, dns or mdns)", s)
}

// validName checks the mesh node name shape "name@host" (no port).
func validName(s string) error {
	p, err := discovery.ParseNode(s)
	if err != nil {
		return err
	}
	if p.Dialable() {
		return fmt.Errorf("node name %q must be name@host, without a port (the port comes from the mesh listener)", s)
	}
	return nil
}

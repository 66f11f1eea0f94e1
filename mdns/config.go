package mdns

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/macula-io/cluster/discovery"
)

// Defaults used when a Config field is zero.
const (
	DefaultService  = "_macula._tcp"
	DefaultPort     = 5353
	DefaultTTL      = 120 * time.Second
	DefaultMaxPeers = 1024
)

// Sentinel errors.
var (
	// ErrInvalidConfig is wrapped by configuration errors.
	ErrInvalidConfig = errors.New("mdns: invalid config")
	// ErrNoInterface: no usable interface (none found, or a named one is
	// missing or down).
	ErrNoInterface = errors.New("mdns: no usable interface")
	// ErrNotDialable: the self Peer given to Start has no mesh address.
	ErrNotDialable = errors.New("mdns: self node has no mesh port")
	// ErrClosed: the strategy was closed.
	ErrClosed = discovery.ErrClosed
	// ErrStarted: Start was called twice.
	ErrStarted = discovery.ErrStarted
)

// Config configures the mDNS strategy. The zero value works.
type Config struct {
	// Interfaces to use, by name; each must exist and be up at Start.
	// Empty = every up, running, multicast-capable, non-loopback
	// interface. Either way the list is rescanned when the interfaces or
	// their addresses change.
	Interfaces []string
	// Service is the DNS-SD service type "_name._tcp" or "_name._udp"
	// ("" = "_macula._tcp"); the domain is always "local.".
	Service string
	// Port is the UDP port (0 = 5353, the mDNS port). Other ports are for
	// tests on a shared interface such as "lo": only nodes using the same
	// port see each other, and standard tools will not.
	Port int
	// TTL of the records this node publishes (0 = 120 s); rounded up to
	// whole seconds. Peers re-query at 80% of it, and drop this node when
	// it passes without an answer.
	TTL time.Duration
	// DisableIPv6 turns the IPv6 group [ff02::fb] off (false = IPv4 and
	// IPv6; IPv6 failing to bind or join is logged, not fatal).
	DisableIPv6 bool
	// MaxPeers bounds the table of discovered instances (0 = 1024).
	MaxPeers int
	// Logger receives membership changes (Info), per-packet detail (Debug)
	// and rate-limited warnings about bad packets; nil = discard.
	Logger *slog.Logger
}

// ConfigFromEnv fills the fields of base that are zero from the
// environment: MACULA_MDNS_IF (comma-separated interface names) and
// MACULA_MDNS_SERVICE (service type, e.g. "_macula._tcp"). A field already
// set in base wins. getenv nil means os.Getenv. An invalid value is an
// error naming the variable and the value.
func ConfigFromEnv(base Config, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg := base
	if len(cfg.Interfaces) == 0 {
		if v := strings.TrimSpace(getenv("MACULA_MDNS_IF")); v != "" {
			var names []string
			for _, n := range strings.Split(v, ",") {
				n = strings.TrimSpace(n)
				if n == "" || len(n) > 15 || strings.ContainsAny(n, " /") {
					return base, fmt.Errorf("%w: MACULA_MDNS_IF=%q: bad interface name %q", ErrInvalidConfig, v, n)
				}
				names = append(names, n)
			}
			cfg.Interfaces = names
		}
	}
	if cfg.Service == "" {
		if v := strings.TrimSpace(getenv("MACULA_MDNS_SERVICE")); v != "" {
			s, err := normalizeService(v)
			if err != nil {
				return base, fmt.Errorf("%w: MACULA_MDNS_SERVICE=%q: %v", ErrInvalidConfig, v, err)
			}
			cfg.Service = s
		}
	}
	return cfg, nil
}

// normalizeService accepts "_name._tcp" (optionally followed by ".local"
// and/or "."), name being 1-15 letters, digits or '-' (RFC 6335).
func normalizeService(v string) (string, error) {
	s := strings.TrimSuffix(v, ".")
	s = strings.TrimSuffix(s, ".local")
	name, proto, ok := strings.Cut(s, ".")
	if !ok || (proto != "_tcp" && proto != "_udp") || len(name) < 2 || len(name) > 16 || name[0] != '_' {
		return "", errors.New(`want "_name._tcp" or "_name._udp"`)
	}
	for i := 1; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return "", errors.New("service name: letters, digits and '-' only")
		}
	}
	return s, nil
}

type settings struct {
	ifaces   []string
	service  string
	port     int
	ttl      uint32 // seconds
	v6       bool
	maxPeers int
	log      *slog.Logger
}

func (c Config) settings() (settings, error) {
	s := settings{ifaces: c.Interfaces, port: c.Port, v6: !c.DisableIPv6, maxPeers: c.MaxPeers, log: c.Logger}
	s.service = DefaultService
	if c.Service != "" {
		svc, err := normalizeService(c.Service)
		if err != nil {
			return s, fmt.Errorf("%w: Service %q: %v", ErrInvalidConfig, c.Service, err)
		}
		s.service = svc
	}
	switch {
	case s.port == 0:
		s.port = DefaultPort
	case s.port < 0 || s.port > 65535:
		return s, fmt.Errorf("%w: Port %d", ErrInvalidConfig, c.Port)
	}
	switch {
	case c.TTL == 0:
		s.ttl = uint32(DefaultTTL / time.Second)
	case c.TTL < 0 || c.TTL > 24*time.Hour:
		return s, fmt.Errorf("%w: TTL %v", ErrInvalidConfig, c.TTL)
	default:
		s.ttl = uint32((c.TTL + time.Second - 1) / time.Second)
	}
	switch {
	case s.maxPeers == 0:
		s.maxPeers = DefaultMaxPeers
	case s.maxPeers < 0:
		return s, fmt.Errorf("%w: MaxPeers %d", ErrInvalidConfig, c.MaxPeers)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

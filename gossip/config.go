package gossip

import (
	"errors"
	"fmt"
	"github.com/macula-io/cluster/internal/envx"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/macula-io/cluster/discovery"
)

// Defaults used for zero Config fields.
const (
	DefaultGroup     = "230.1.1.251"
	DefaultPort      = 45892
	DefaultInterval  = 1500 * time.Millisecond
	DefaultTTL       = 1
	DefaultMaxPeers  = 4096
	MinDefaultExpiry = 5 * time.Second // floor of the default Expiry only
	MinInterval      = 10 * time.Millisecond
)

// ErrInvalidConfig is wrapped by every Config validation error.
var ErrInvalidConfig = errors.New("gossip: invalid config")

// Config configures Start. The zero value works once Node is set.
type Config struct {
	// Group is the multicast group IP. "" = 230.1.1.251. IPv6 groups
	// (ff02::..., ff05::...) are allowed. Ignored for sending in Broadcast
	// mode (which is IPv4 only).
	Group string
	// Port is the UDP port. 0 = 45892.
	Port int
	// Interval is the heartbeat interval; each wait is jittered by about
	// +-10%. 0 = 1500ms; must be at least 10ms.
	Interval time.Duration
	// TTL is the multicast TTL / IPv6 hop limit (also the unicast TTL of
	// broadcast packets). 0 = 1. Range 1-255.
	TTL int
	// Interfaces are the interface names to join and send on. Empty = every
	// up, running, multicast-capable (broadcast-capable in Broadcast mode),
	// non-loopback interface with an IPv4 address (IPv4 groups), rescanned
	// when the interfaces change. A named interface must exist at Start and only needs to be
	// up (so "lo", which lacks the MULTICAST flag on Linux, can be named).
	Interfaces []string
	// Broadcast (IPv4 only) sends to each interface's broadcast address
	// (127.255.255.255 on lo) instead of the group. false = multicast.
	Broadcast bool
	// Secrets is the keyring: the first signs, any verifies. Empty =
	// unsigned: send without HMAC, accept signed and unsigned. Entries must
	// not be empty.
	Secrets []string
	// Expiry drops a peer not heard for this long (reported as Lost).
	// 0 = max(5*Interval, 5s). An explicit value is honoured as given but
	// must exceed Interval.
	Expiry time.Duration
	// MaxPeers bounds the discovered table. 0 = 4096. When it is full, a
	// new node evicts the least recently heard unverified entry (one not
	// yet heard over a whole interval, or not dialable), or a verified one
	// silent for two intervals (counted in Stats.Evicted, reported Gone);
	// if there is none, its heartbeat is dropped (reason "table_full").
	MaxPeers int
	// AcceptForeignHosts makes a node of an unsigned heartbeat dialable
	// whatever the packet's source address. false = without Secrets, a
	// heartbeat's advertised host must be the packet's source IP, or both
	// must be addresses of this machine (nodes on one host); otherwise the
	// node is discovered but not dialled (its Peer has no Addr; reason
	// "undialable", a rate-limited warning). A host name is resolved
	// (bounded: 2 lookups at once, 1 s each, 256 names cached for a
	// minute) and must lead to the source; such a node is reported on its
	// first heartbeat after the answer. Set it behind NAT. Heartbeats that
	// verify against Secrets are always dialable: only a member can have
	// signed the address.
	AcceptForeignHosts bool
	// Node is our node field, "name@host:port" (port = mesh TCP port), or
	// "name@host" for a node that cannot be dialled. Required by Start.
	Node string
	// ErlangNode is a second node field announced right after Node in every
	// round: Node's name without a port ("name@host"), for a node that also
	// serves Erlang distribution, so that Erlang macula nodes connect to it.
	// Its own heartbeats are ignored like Node's. "" = announce Node only.
	// It must be Node's name (the twin rule of the package doc).
	ErlangNode string
	// Logger receives Debug for table changes and per packet, and
	// rate-limited warnings about hostile traffic (the cluster facade logs
	// membership changes at Info). nil = discard.
	Logger *slog.Logger
	// Sink, when not nil, is told of every change of the discovered table:
	// Found when a node is heard for the first time (or with a new port),
	// Gone when it was not heard for Expiry. It is called from the table
	// goroutine and must not block (discovery.Sink).
	Sink discovery.Sink

	// lookup resolves host names of unsigned heartbeats (tests set it);
	// nil = the system resolver.
	lookup lookupFunc
}

// settings is a validated Config with defaults applied.
type settings struct {
	group     netip.Addr
	port      int
	interval  time.Duration
	ttl       int
	ifaces    []string
	broadcast bool
	keyring   *Keyring
	expiry    time.Duration
	maxPeers  int
	foreign   bool
	lookup    lookupFunc
	self      discovery.Peer
	selfNode  string // our node field on the wire
	erlNode   string // our second, Erlang-form node field; "" = none
	log       *slog.Logger
	sink      discovery.Sink
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
}

// resolve validates cfg and applies defaults.
func (cfg Config) resolve() (settings, error) {
	s := settings{
		port: cfg.Port, interval: cfg.Interval, ttl: cfg.TTL, broadcast: cfg.Broadcast,
		expiry: cfg.Expiry, maxPeers: cfg.MaxPeers, log: cfg.Logger, sink: cfg.Sink,
		foreign: cfg.AcceptForeignHosts, lookup: cfg.lookup,
	}
	group := cfg.Group
	if group == "" {
		group = DefaultGroup
	}
	g, err := netip.ParseAddr(group)
	if err != nil || !g.IsMulticast() || g.Zone() != "" {
		return s, invalid("group %q is not a multicast IP address", cfg.Group)
	}
	s.group = g.Unmap()
	if s.broadcast && !s.group.Is4() {
		return s, invalid("broadcast mode is IPv4 only, group is %s", s.group)
	}
	switch {
	case s.port == 0:
		s.port = DefaultPort
	case s.port < 0 || s.port > 65535:
		return s, invalid("port %d out of range 1-65535", cfg.Port)
	}
	switch {
	case s.interval == 0:
		s.interval = DefaultInterval
	case s.interval < MinInterval:
		return s, invalid("interval %v below %v", cfg.Interval, MinInterval)
	}
	switch {
	case s.ttl == 0:
		s.ttl = DefaultTTL
	case s.ttl < 0 || s.ttl > 255:
		return s, invalid("ttl %d out of range 1-255", cfg.TTL)
	}
	switch {
	case s.expiry == 0:
		s.expiry = max(5*s.interval, MinDefaultExpiry)
	case s.expiry <= s.interval:
		return s, invalid("expiry %v must exceed interval %v", cfg.Expiry, s.interval)
	}
	switch {
	case s.maxPeers == 0:
		s.maxPeers = DefaultMaxPeers
	case s.maxPeers < 0:
		return s, invalid("max peers %d is negative", cfg.MaxPeers)
	}
	for _, name := range cfg.Interfaces {
		if name == "" {
			return s, invalid("empty interface name")
		}
	}
	s.ifaces = append([]string(nil), cfg.Interfaces...)
	for _, sec := range cfg.Secrets {
		if sec == "" {
			return s, invalid("empty secret in keyring")
		}
	}
	s.keyring = NewKeyring(cfg.Secrets...)
	if cfg.Node == "" {
		return s, invalid("node is required")
	}
	if s.self, err = discovery.ParseNode(cfg.Node); err != nil {
		return s, fmt.Errorf("%w: node: %w", ErrInvalidConfig, err)
	}
	s.selfNode = cfg.Node
	if cfg.ErlangNode != "" {
		if cfg.ErlangNode != s.self.Name {
			return s, invalid("erlang node %q is not the name of node %q", cfg.ErlangNode, cfg.Node)
		}
		s.erlNode = cfg.ErlangNode
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.lookup == nil {
		s.lookup = defaultLookup
	}
	return s, nil
}

// Environment variables read by ConfigFromEnv.
const (
	EnvAddr          = "MACULA_GOSSIP_ADDR"
	EnvPort          = "MACULA_GOSSIP_PORT"
	EnvSecret        = "MACULA_GOSSIP_SECRET"
	EnvSecretFile    = "MACULA_GOSSIP_SECRET_FILE"
	EnvClusterSecret = "CLUSTER_SECRET"
	EnvInterface     = "MACULA_GOSSIP_IF"
	EnvInterval      = "MACULA_GOSSIP_INTERVAL"
	EnvTTL           = "MACULA_GOSSIP_TTL"
	EnvBroadcast     = "MACULA_GOSSIP_BROADCAST"
	EnvAcceptForeign = "MACULA_GOSSIP_ACCEPT_FOREIGN"
)

// ConfigFromEnv fills the zero fields of base from the environment (option
// > environment > default); getenv nil = os.Getenv. Empty variables count
// as unset. Variables:
//
//	MACULA_GOSSIP_ADDR      multicast group IP
//	MACULA_GOSSIP_PORT      UDP port, 1-65535
//	MACULA_GOSSIP_SECRET    keyring, comma-separated (first signs)
//	MACULA_GOSSIP_SECRET_FILE  a file holding that keyring (Docker/Kubernetes
//	                        secrets; trailing newline trimmed), when
//	                        MACULA_GOSSIP_SECRET is unset
//	CLUSTER_SECRET          keyring, when neither of those is set
//	MACULA_GOSSIP_IF        interface names, comma-separated
//	MACULA_GOSSIP_INTERVAL  milliseconds ("1500") or a Go duration ("1.5s")
//	MACULA_GOSSIP_TTL       1-255
//	MACULA_GOSSIP_BROADCAST true/false (strconv.ParseBool): broadcast mode
//	MACULA_GOSSIP_ACCEPT_FOREIGN true/false: Config.AcceptForeignHosts
//
// List entries are trimmed of spaces. An invalid value is an error wrapping
// ErrInvalidConfig that names the variable and the value (secrets are never
// printed).
func ConfigFromEnv(base Config, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg := base
	bad := func(name, value, why string) error {
		return fmt.Errorf("%w: %s=%q: %s", ErrInvalidConfig, name, value, why)
	}
	if v := getenv(EnvAddr); v != "" && cfg.Group == "" {
		a, err := netip.ParseAddr(strings.TrimSpace(v))
		if err != nil || !a.IsMulticast() || a.Zone() != "" {
			return base, bad(EnvAddr, v, "not a multicast IP address")
		}
		cfg.Group = a.String()
	}
	if v := getenv(EnvPort); v != "" && cfg.Port == 0 {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 || n > 65535 {
			return base, bad(EnvPort, v, "want a port 1-65535")
		}
		cfg.Port = n
	}
	if len(cfg.Secrets) == 0 {
		name, v := EnvSecret, getenv(EnvSecret)
		if f := getenv(EnvSecretFile); f != "" && v == "" {
			s, err := envx.ReadSecretFile(f)
			if err != nil {
				return base, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, EnvSecretFile, err)
			}
			name, v = EnvSecretFile, s
		}
		if v == "" {
			name, v = EnvClusterSecret, getenv(EnvClusterSecret)
		}
		if v != "" {
			list, ok := envx.SplitList(v)
			if !ok {
				return base, fmt.Errorf("%w: %s: empty entry in comma-separated secret list", ErrInvalidConfig, name)
			}
			cfg.Secrets = list
		}
	}
	if v := getenv(EnvInterface); v != "" && len(cfg.Interfaces) == 0 {
		list, ok := envx.SplitList(v)
		if !ok {
			return base, bad(EnvInterface, v, "empty interface name in list")
		}
		cfg.Interfaces = list
	}
	if v := getenv(EnvInterval); v != "" && cfg.Interval == 0 {
		d, err := parseInterval(strings.TrimSpace(v))
		if err != nil {
			return base, bad(EnvInterval, v, err.Error())
		}
		cfg.Interval = d
	}
	if v := getenv(EnvTTL); v != "" && cfg.TTL == 0 {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 || n > 255 {
			return base, bad(EnvTTL, v, "want a TTL 1-255")
		}
		cfg.TTL = n
	}
	if v := getenv(EnvBroadcast); v != "" && !cfg.Broadcast {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return base, bad(EnvBroadcast, v, "want true or false")
		}
		cfg.Broadcast = b
	}
	if v := getenv(EnvAcceptForeign); v != "" && !cfg.AcceptForeignHosts {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			return base, bad(EnvAcceptForeign, v, "want true or false")
		}
		cfg.AcceptForeignHosts = b
	}
	return cfg, nil
}

// parseInterval reads MACULA_GOSSIP_INTERVAL: milliseconds or a Go
// duration (envx.ParseDuration), at least MinInterval.
func parseInterval(v string) (time.Duration, error) {
	d, err := envx.ParseDuration(v)
	if err != nil {
		return 0, err
	}
	if d < MinInterval {
		return 0, fmt.Errorf("below %v", MinInterval)
	}
	return d, nil
}

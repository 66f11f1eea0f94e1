package mesh

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"time"

	"github.com/macula-io/cluster/discovery"
)

// Defaults for zero Config fields.
const (
	DefaultLinkTimeout          = 5 * time.Second
	MinLinkTimeout              = time.Second
	DefaultHandshakeTimeout     = 5 * time.Second
	DefaultMaxPendingHandshakes = 64
	DefaultMaxMessageSize       = 1 << 20
	DefaultSendQueue            = 1024
	DefaultMaxDials             = 16
	// DefaultPortFirst and DefaultPortLast bound the port search when
	// Config.Listen is empty.
	DefaultPortFirst = 9100
	DefaultPortLast  = 9200
	// MaxMessageSizeLimit is the largest Config.MaxMessageSize accepted.
	MaxMessageSizeLimit = 1 << 30
)

const (
	transitiveTries = 3           // dial attempts for a peer learned from a peer
	maxPeerStates   = 4096        // bound on remembered peers (wanted + transitive), and on goodbyes
	leftMemory      = time.Minute // how long a goodbye keeps its incarnation (and name, for transitive dials) away
	closeGrace      = time.Second // Close: bound on goodbye write and on the wait for the peer's close
	backoffBase     = 100 * time.Millisecond
	backoffCap      = 5 * time.Second
	warnPeriod      = 10 * time.Second // hostile-traffic warnings: one per remote address per period
)

// Sentinel errors, for errors.Is.
var (
	ErrClosed        = discovery.ErrClosed // the module's one ErrClosed
	ErrNoCookie      = errors.New("mesh: no cookie")
	ErrInvalidName   = errors.New("mesh: invalid node name")
	ErrInvalidAddr   = errors.New("mesh: invalid address")
	ErrInvalidConfig = errors.New("mesh: invalid config")
	ErrNotConnected  = errors.New("mesh: not connected")
	ErrTooLarge      = errors.New("mesh: message too large")
)

// Config configures a Mesh. The zero value of every field but Name and
// Cookie works.
type Config struct {
	// Name is this node, "name@host" (required). host is an IP address or a
	// host name, no port; an IPv6 address is written without brackets.
	Name string
	// Cookie is the shared secret every node of the cluster holds
	// (required; "" -> ErrNoCookie). It never crosses the wire. See
	// ResolveCookie.
	Cookie string
	// Listen is the TCP address to accept links on, "host:port". "" = the
	// first free port in 9100-9200 on all addresses; port 0 = any free port.
	Listen string
	// Advertise is the "host:port" peers dial to reach this node; "" =
	// Name's host and the bound port.
	Advertise string
	// LinkTimeout: a link from which nothing arrives, or to which nothing
	// can be written, for this long is closed with reason timeout. Ticks
	// are sent on idle links every LinkTimeout/4. 0 = 5 s; values below
	// 1 s are raised to 1 s.
	LinkTimeout time.Duration
	// HandshakeTimeout bounds the TCP connect, TLS handshake and mesh
	// handshake of one connection; with probes the TCP connect alone is
	// bounded by max(2 s, 5*ProbeInterval) too. 0 = 5 s.
	HandshakeTimeout time.Duration
	// MaxPendingHandshakes bounds inbound connections still in their
	// handshake; beyond it a new connection is accepted and closed at
	// once (counted as HSTooManyPending). 0 = 64.
	MaxPendingHandshakes int
	// TLS, when set, wraps every connection in TLS before the mesh
	// handshake: tls.Server with this config to accept, tls.Client to dial
	// (ServerName defaults to the dialled host). Set ClientAuth and
	// ClientCAs for mutual TLS. The cookie proof is required on top.
	// nil = plain TCP.
	TLS *tls.Config
	// NoTransitive: do not tell peers about our links and do not connect
	// to the peers our peers tell us about. false = full mesh.
	NoTransitive bool
	// MaxMessageSize is the largest payload Send accepts and the largest
	// this node receives (the smaller of the two nodes' values applies on
	// a link). 0 = 1 MiB; at most 1 GiB.
	MaxMessageSize int
	// SendQueue is the per-link outbound queue, in messages. 0 = 1024.
	SendQueue int
	// MaxDials bounds the outbound connection attempts in flight; further
	// peers wait in a fair queue (first attempts before retries). 0 = 16.
	MaxDials int
	// Profile picks the failure detector's defaults, as memberlist's
	// DefaultLAN/WAN/LocalConfig do: "lan" (or "") probe every 400 ms,
	// probe timeout 200 ms, SuspicionMult 3 (a silent node is declared
	// dead about 3-4 s after it stops answering at 10-100 members; a
	// process stopped for 2 s is not); "wan": 5 s, 3 s, 6; "local" (one
	// host, tests): 200 ms, 100 ms, 3 (dead after about 1.5-2 s; not for
	// lossy networks or loaded hosts). The fields below override single
	// values. Any other name is an error.
	Profile string
	// ProbeInterval is the protocol period: each node probes one member
	// per period, so the probing cost per node is constant in the cluster
	// size. 0 = the profile's.
	ProbeInterval time.Duration
	// ProbeTimeout is the wait for a direct ack before asking
	// IndirectChecks other members to probe; at most 2/3 of ProbeInterval
	// (a relay waits ProbeTimeout/2 before its nack, which must arrive
	// within the period).
	// 0 = the profile's.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspected member has to refute
	// before it is declared dead (NodeDown reason timeout):
	// max(SuspicionMult * log10(N+1), 5) * ProbeInterval with
	// confirmations from other members, up to twice that without
	// (mesh/doc.go, "Liveness"). 0 = the profile's.
	SuspicionMult int
	// IndirectChecks is the number of members asked to probe a member
	// that did not answer (fewer in small clusters). 0 = 3; negative =
	// none.
	IndirectChecks int
	// NoProbes turns the failure detector off: liveness is then only the
	// links' LinkTimeout, and no UDP socket is bound.
	NoProbes bool
	// Logger receives link changes and per-connection detail at Debug and
	// rate-limited warnings about hostile traffic (membership changes are
	// logged at Info by the cluster facade). nil = discard.
	Logger *slog.Logger
	// OnEvent is the sink for NodeUp/NodeDown events. It is called
	// synchronously, in the order the link table changed, exactly once per
	// change, while the mesh holds its table lock: it must not block and
	// must not call the Mesh (hand the event to a queue; the cluster
	// facade does). nil = no callback.
	OnEvent func(Event)
	// Tags are this node's metadata, sent to every peer in the handshake
	// (authenticated like the name) and seen in their NodeUp events and
	// Links; see ValidateTags for the bounds. nil = none.
	Tags map[string]string
	// OnMessage receives each inbound message with the sender's name,
	// from the link's reader goroutine: in order per sender, concurrently
	// across senders. payload belongs to the callee. While it runs the
	// link reads nothing more; it should return quickly, and must not
	// call Close. nil = drop.
	OnMessage func(from string, payload []byte)
}

// probeParams are a profile's detector settings.
type probeParams struct {
	interval, timeout time.Duration
	mult, indirect    int
}

// Profiles: see Config.Profile.
var profiles = map[string]probeParams{
	"lan":   {400 * time.Millisecond, 200 * time.Millisecond, 3, 3},
	"wan":   {5 * time.Second, 3 * time.Second, 6, 3},
	"local": {200 * time.Millisecond, 100 * time.Millisecond, 3, 3},
}

// Profiles lists the valid Config.Profile names.
func Profiles() []string { return []string{"lan", "wan", "local"} }

// CheckProfile reports whether name is a valid Config.Profile ("" is lan).
func CheckProfile(name string) error {
	if _, ok := profiles[name]; ok || name == "" {
		return nil
	}
	return fmt.Errorf("%w: profile %q (want lan, wan or local)", ErrInvalidConfig, name)
}

// probeConfig is the detector's configuration after normalize.
func (c *Config) probeConfig() probeParams {
	return probeParams{c.ProbeInterval, c.ProbeTimeout, c.SuspicionMult, c.IndirectChecks}
}

func normalize(cfg *Config) error {
	bad := func(field string, v any) error {
		return fmt.Errorf("%w: %s %v", ErrInvalidConfig, field, v)
	}
	if cfg.Profile == "" {
		cfg.Profile = "lan"
	}
	prof, ok := profiles[cfg.Profile]
	switch {
	case !ok:
		return bad("Profile", cfg.Profile)
	case cfg.ProbeInterval < 0:
		return bad("ProbeInterval", cfg.ProbeInterval)
	case cfg.ProbeTimeout < 0:
		return bad("ProbeTimeout", cfg.ProbeTimeout)
	case cfg.SuspicionMult < 0:
		return bad("SuspicionMult", cfg.SuspicionMult)
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = prof.interval
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = min(prof.timeout, cfg.ProbeInterval*2/3)
	}
	if cfg.ProbeTimeout > cfg.ProbeInterval*2/3 {
		return bad("ProbeTimeout (more than 2/3 of ProbeInterval)", cfg.ProbeTimeout)
	}
	if cfg.SuspicionMult == 0 {
		cfg.SuspicionMult = prof.mult
	}
	if cfg.IndirectChecks == 0 {
		cfg.IndirectChecks = prof.indirect
	}
	switch {
	case cfg.LinkTimeout < 0:
		return bad("LinkTimeout", cfg.LinkTimeout)
	case cfg.LinkTimeout == 0:
		cfg.LinkTimeout = DefaultLinkTimeout
	case cfg.LinkTimeout < MinLinkTimeout:
		cfg.LinkTimeout = MinLinkTimeout
	}
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{{"HandshakeTimeout", &cfg.HandshakeTimeout, DefaultHandshakeTimeout}} {
		if err := orDefault(f.name, f.v, f.def); err != nil {
			return err
		}
	}
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{
		{"MaxPendingHandshakes", &cfg.MaxPendingHandshakes, DefaultMaxPendingHandshakes},
		{"MaxMessageSize", &cfg.MaxMessageSize, DefaultMaxMessageSize},
		{"SendQueue", &cfg.SendQueue, DefaultSendQueue},
		{"MaxDials", &cfg.MaxDials, DefaultMaxDials},
	} {
		if err := orDefault(f.name, f.v, f.def); err != nil {
			return err
		}
	}
	if cfg.MaxMessageSize > MaxMessageSizeLimit {
		return bad("MaxMessageSize", cfg.MaxMessageSize)
	}
	if cfg.Listen != "" {
		if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
			return fmt.Errorf("%w: Listen %q: %w", ErrInvalidConfig, cfg.Listen, err)
		}
	}
	if cfg.Advertise != "" {
		if err := validateAddr(cfg.Advertise); err != nil {
			return fmt.Errorf("%w: Advertise: %w", ErrInvalidConfig, err)
		}
	}
	if err := ValidateTags(cfg.Tags); err != nil {
		return fmt.Errorf("%w: Tags: %w", ErrInvalidConfig, err)
	}
	cfg.Tags = maps.Clone(cfg.Tags)
	return nil
}

// orDefault applies a zero-means-default field: negative is an error, zero
// becomes def.
func orDefault[T int | time.Duration](name string, v *T, def T) error {
	switch {
	case *v < 0:
		return fmt.Errorf("%w: %s %v", ErrInvalidConfig, name, *v)
	case *v == 0:
		*v = def
	}
	return nil
}

// validateName checks "name@host": a valid discovery field with no port.
func validateName(s string) error {
	p, err := discovery.ParseNode(s)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidName, err)
	}
	if p.Addr != "" || p.Name != s {
		return fmt.Errorf("%w %q: want name@host without a port", ErrInvalidName, s)
	}
	return nil
}

func cutName(s string) (name, host string, ok bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '@' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

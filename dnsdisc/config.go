package dnsdisc

import (
	"errors"
	"fmt"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/internal/envx"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Defaults used when a Config field is zero.
const (
	DefaultPort     = 9100
	DefaultInterval = 5 * time.Second
	DefaultTimeout  = 2 * time.Second
	DefaultBasename = "macula"
)

// Modes for Config.Mode.
const (
	ModeA   = "a"
	ModeSRV = "srv"
)

// Sentinel errors.
var (
	// ErrNoName: Config.Name is empty.
	ErrNoName = errors.New("dnsdisc: no DNS name to query")
	// ErrInvalidConfig is wrapped by every other configuration error.
	ErrInvalidConfig = errors.New("dnsdisc: invalid config")
	// ErrClosed: the strategy was closed.
	ErrClosed = discovery.ErrClosed
	// ErrStarted: Start was called twice.
	ErrStarted = discovery.ErrStarted
)

// Config configures the DNS strategy. Only Name is required.
type Config struct {
	// Name is the DNS name to query, e.g.
	// "macula-headless.default.svc.cluster.local" (A mode) or
	// "_macula._tcp.macula-headless.default.svc.cluster.local" (SRV mode).
	// A trailing dot is optional. Required.
	Name string
	// Mode is "a" (A and AAAA records), "srv" (SRV records), or "" = "srv"
	// when Name starts with "_", else "a".
	Mode string
	// Port is the mesh port of peers found in A mode (0 = 9100). Unused in
	// SRV mode, where each record carries its port.
	Port int
	// Interval between lookups (0 = 5s).
	Interval time.Duration
	// Timeout bounds each lookup (0 = 2s).
	Timeout time.Duration
	// Server is the DNS server "host:port" to ask ("host" alone means port
	// 53); "" = the system resolver configuration.
	Server string
	// Basename is validated and otherwise ignored: peers are reported by
	// address and the mesh learns each node's name in its handshake, so
	// nodes need not be named "<Basename>@<IP>" (they still may be).
	//
	// Deprecated: kept so that existing configurations compile.
	Basename string
	// Logger receives answer changes (Debug) and lookup failures (Warn,
	// once per change of state); nil = discard.
	Logger *slog.Logger
}

// ConfigFromEnv fills the fields of base that are zero from the
// environment: CLUSTER_DNS_NAME, CLUSTER_DNS_SERVER, CLUSTER_DNS_PORT,
// CLUSTER_DNS_INTERVAL (milliseconds or a Go duration), CLUSTER_DNS_MODE
// ("a" or "srv") and CLUSTER_DNS_BASENAME. A field already set in base wins
// (option > environment > default). getenv nil means os.Getenv. An invalid
// value is an error naming the variable and the value.
func ConfigFromEnv(base Config, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	cfg := base
	bad := func(name, v, why string) error {
		return fmt.Errorf("%w: %s=%q: %s", ErrInvalidConfig, name, v, why)
	}
	if cfg.Name == "" {
		if v := strings.TrimSpace(getenv("CLUSTER_DNS_NAME")); v != "" {
			if err := checkName(v); err != nil {
				return base, bad("CLUSTER_DNS_NAME", v, err.Error())
			}
			cfg.Name = v
		}
	}
	if cfg.Server == "" {
		if v := strings.TrimSpace(getenv("CLUSTER_DNS_SERVER")); v != "" {
			s, err := normalizeServer(v)
			if err != nil {
				return base, bad("CLUSTER_DNS_SERVER", v, err.Error())
			}
			cfg.Server = s
		}
	}
	if cfg.Port == 0 {
		if v := strings.TrimSpace(getenv("CLUSTER_DNS_PORT")); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 65535 {
				return base, bad("CLUSTER_DNS_PORT", v, "want a port 1-65535")
			}
			cfg.Port = n
		}
	}
	if cfg.Interval == 0 {
		if v := strings.TrimSpace(getenv("CLUSTER_DNS_INTERVAL")); v != "" {
			d, err := envx.ParseDuration(v)
			if err != nil {
				return base, bad("CLUSTER_DNS_INTERVAL", v, err.Error())
			}
			cfg.Interval = d
		}
	}
	if cfg.Mode == "" {
		if v := strings.TrimSpace(getenv("CLUSTER_DNS_MODE")); v != "" {
			m := strings.ToLower(v)
			if m != ModeA && m != ModeSRV {
				return base, bad("CLUSTER_DNS_MODE", v, `want "a" or "srv"`)
			}
			cfg.Mode = m
		}
	}
	if cfg.Basename == "" {
		if v := strings.TrimSpace(getenv("CLUSTER_DNS_BASENAME")); v != "" {
			if err := checkBasename(v); err != nil {
				return base, bad("CLUSTER_DNS_BASENAME", v, err.Error())
			}
			cfg.Basename = v
		}
	}
	return cfg, nil
}

func normalizeServer(v string) (string, error) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		// "host" or "::1" alone: default port 53.
		if strings.Contains(v, "[") || strings.Count(v, ":") == 1 {
			return "", errors.New("want host:port")
		}
		host, port = v, "53"
	}
	n, err := strconv.Atoi(port)
	if host == "" || err != nil || n < 1 || n > 65535 {
		return "", errors.New("want host:port with a port 1-65535")
	}
	return net.JoinHostPort(host, port), nil
}

func checkName(v string) error {
	n := strings.TrimSuffix(v, ".")
	if n == "" || len(n) > 253 || strings.ContainsAny(n, " \t\r\n") || strings.Contains(n, "..") {
		return errors.New("want a DNS name")
	}
	return nil
}

func checkBasename(v string) error {
	if v == "" || len(v) > 200 {
		return errors.New("want a non-empty name of at most 200 bytes")
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x21 || c > 0x7e || c == '@' || c == '|' {
			return fmt.Errorf("byte 0x%02x not allowed", c)
		}
	}
	return nil
}

// settings is a validated Config with defaults applied.
type settings struct {
	fqdn     string
	srv      bool
	port     int
	interval time.Duration
	timeout  time.Duration
	server   string
	basename string
	log      *slog.Logger
}

func (c Config) settings() (settings, error) {
	s := settings{port: c.Port, interval: c.Interval, timeout: c.Timeout, basename: c.Basename, log: c.Logger}
	if c.Name == "" {
		return s, ErrNoName
	}
	if err := checkName(c.Name); err != nil {
		return s, fmt.Errorf("%w: Name %q: %v", ErrInvalidConfig, c.Name, err)
	}
	s.fqdn = strings.TrimSuffix(c.Name, ".") + "."
	switch strings.ToLower(c.Mode) {
	case "":
		s.srv = strings.HasPrefix(c.Name, "_")
	case ModeA:
	case ModeSRV:
		s.srv = true
	default:
		return s, fmt.Errorf("%w: Mode %q: want \"a\" or \"srv\"", ErrInvalidConfig, c.Mode)
	}
	switch {
	case s.port == 0:
		s.port = DefaultPort
	case s.port < 0 || s.port > 65535:
		return s, fmt.Errorf("%w: Port %d", ErrInvalidConfig, c.Port)
	}
	switch {
	case s.interval == 0:
		s.interval = DefaultInterval
	case s.interval < 0:
		return s, fmt.Errorf("%w: Interval %v", ErrInvalidConfig, c.Interval)
	}
	switch {
	case s.timeout == 0:
		s.timeout = DefaultTimeout
	case s.timeout < 0:
		return s, fmt.Errorf("%w: Timeout %v", ErrInvalidConfig, c.Timeout)
	}
	if c.Server != "" {
		srv, err := normalizeServer(c.Server)
		if err != nil {
			return s, fmt.Errorf("%w: Server %q: %v", ErrInvalidConfig, c.Server, err)
		}
		s.server = srv
	}
	if s.basename == "" {
		s.basename = DefaultBasename
	} else if err := checkBasename(s.basename); err != nil {
		return s, fmt.Errorf("%w: Basename %q: %v", ErrInvalidConfig, c.Basename, err)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/gossip"
	"github.com/macula-io/cluster/internal/envx"
)

// runFlags mirror cluster.Config. Every flag defaults to "unset" so that
// the environment can fill what the command line leaves out (option >
// environment > default); the help text names the real default. The flags
// that mirror environment variables are strings parsed by runSettings, so a
// flag and its variable accept the same spellings.
type runFlags struct {
	values                  map[string]*string
	cookie                  string
	cookieFile, secretFile  string
	tlsCert, tlsKey, tlsCA  string
	httpAddr, minPeers      string
	httpMaxConns            string
	onEvent, onEventTimeout string
	tags                    tagFlag
	control                 string
	broadcast, noTransitive bool
	acceptForeign           bool
	erlang                  bool
	jsonOut                 bool
	fs                      *flag.FlagSet
	logFlags
}

// runUsage is the help text of each setting flag.
var runUsage = map[string]string{
	"multicast-addr":  "gossip multicast group (default 230.1.1.251; env MACULA_GOSSIP_ADDR)",
	"port":            "gossip UDP port (default 45892; env MACULA_GOSSIP_PORT)",
	"interval":        "heartbeat interval: a bare number is milliseconds (1500), or a Go duration (1.5s) (default 1500; env MACULA_GOSSIP_INTERVAL)",
	"ttl":             "multicast TTL, 1-255 (default 1; env MACULA_GOSSIP_TTL)",
	"interface":       "gossip interfaces, comma-separated (default every up, multicast-capable, non-loopback one; env MACULA_GOSSIP_IF)",
	"secret":          "gossip HMAC secret; a comma-separated list is a keyring, the first signs (env MACULA_GOSSIP_SECRET or CLUSTER_SECRET)",
	"expiry":          "forget a silent gossip peer after this, ms or Go duration (default 5 intervals, at least 5s)",
	"strategy":        "discovery: auto, gossip, static, dns or mdns, any case (default auto; env CLUSTER_STRATEGY)",
	"nodes":           "static nodes, comma-separated name@host:port (env CLUSTER_NODES)",
	"dns-name":        "dns strategy: name to query, A/AAAA or SRV (env CLUSTER_DNS_NAME)",
	"dns-server":      "dns strategy: DNS server host:port (default the system resolver; env CLUSTER_DNS_SERVER)",
	"dns-port":        "dns strategy: mesh port of A/AAAA peers, 1-65535 (default 9100; env CLUSTER_DNS_PORT)",
	"dns-mode":        "dns strategy: a or srv (default srv for names starting with _, else a; env CLUSTER_DNS_MODE)",
	"mdns-interface":  "mdns strategy: interfaces, comma-separated (env MACULA_MDNS_IF)",
	"name":            "node name name@host (default macula-<random>@<interface IP>; env MACULA_NODE or RELEASE_NODE)",
	"listen":          "mesh listen host:port, port 0 = any (default first free port 9100-9200; env MACULA_LISTEN)",
	"link-timeout":    "re-establish a link that makes no progress for this long, or declare its peer down when no probe answers; for peers without probes, the silence limit (ms or Go duration, >= 1s; default 5s; env MACULA_LINK_TIMEOUT)",
	"profile":         "failure detector profile: lan (probe 400ms, timeout 200ms, suspicion x3), wan (5s, 3s, x6) or local (200ms, 100ms, x3) (default lan; env MACULA_PROFILE)",
	"probe-interval":  "failure detector protocol period, ms or Go duration (default from --profile; env MACULA_PROBE_INTERVAL)",
	"probe-timeout":   "wait for a direct ack before indirect probes, at most 2/3 of the period (default from --profile; env MACULA_PROBE_TIMEOUT)",
	"suspicion-mult":  "suspicion timeout multiplier, 1-64: dead after mult*max(1,log10(N+1)) periods with confirmations (default from --profile; env MACULA_SUSPICION_MULT)",
	"indirect-checks": "members asked to probe a member that did not answer, 0-64 (default 3; env MACULA_INDIRECT_CHECKS)",
}

func (f *runFlags) register(fs *flag.FlagSet) {
	f.fs = fs
	f.values = map[string]*string{}
	for _, s := range runSettings {
		f.values[s.flag] = fs.String(s.flag, "", runUsage[s.flag])
	}
	fs.BoolVar(&f.acceptForeign, "accept-foreign-hosts", false, "dial gossip nodes whose advertised host is not the heartbeat's source address, for NAT (env MACULA_GOSSIP_ACCEPT_FOREIGN)")
	fs.BoolVar(&f.erlang, "erlang", false, "also serve Erlang distribution under the node name and cookie, announce name@host to Erlang macula nodes and connect to the ones discovered; registers with epmd on 127.0.0.1 (ERL_EPMD_PORT, default 4369), starting an embedded one if none runs (env MACULA_ERLANG)")
	fs.BoolVar(&f.broadcast, "broadcast", false, "send heartbeats to the interface broadcast address instead of the multicast group (env MACULA_GOSSIP_BROADCAST)")
	fs.StringVar(&f.cookie, "cookie", "", "mesh cookie; visible to local users in ps, prefer --cookie-file (default env MACULA_COOKIE, MACULA_COOKIE_FILE, RELEASE_COOKIE, then ~/.macula.cookie)")
	fs.StringVar(&f.cookieFile, "cookie-file", "", "read the mesh cookie from this file, trailing newline removed (env MACULA_COOKIE_FILE)")
	fs.StringVar(&f.secretFile, "secret-file", "", "read --secret from this file (a comma-separated keyring), trailing newline removed (env MACULA_GOSSIP_SECRET_FILE)")
	fs.BoolVar(&f.noTransitive, "no-transitive", false, "do not connect to the peers of peers")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "mesh TLS certificate (PEM); with --tls-key enables TLS")
	fs.StringVar(&f.tlsKey, "tls-key", "", "mesh TLS private key (PEM)")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "CA (PEM) that peer certificates must chain to; enables mutual TLS")
	fs.StringVar(&f.httpAddr, "http", "", "serve /healthz, /readyz, /nodes and /metrics on this host:port")
	fs.StringVar(&f.control, "control", defaultControl, "loopback address where \"macula nodes\" finds this node (9181-9189 when the default port is taken), or off")
	fs.StringVar(&f.httpMaxConns, "http-max-conns", "0", "cap on open --http connections; at the cap the oldest idle one is closed (0: an eighth of the open-file limit, 32-512)")
	fs.StringVar(&f.minPeers, "min-peers", "0", "/readyz: ready when at least this many peers are connected")
	fs.Var(&f.tags, "tag", "a tag of this node, key=value; repeat for more (env MACULA_TAGS, comma-separated); peers see them in events, /nodes and the page")
	fs.StringVar(&f.onEvent, "on-event", "", "run this shell command for each membership event, with MACULA_EVENT, MACULA_NODE, ... in its environment and the event as a JSON line on stdin (README: event handlers)")
	fs.StringVar(&f.onEventTimeout, "on-event-timeout", "10s", "kill an --on-event command that runs longer than this, ms or Go duration")
	fs.BoolVar(&f.jsonOut, "json", false, "print events as JSON lines on stdout (logs stay on stderr)")
	f.logFlags.register(fs)
}

// config turns the flags into a cluster.Config holding only what was given,
// after checking them and the environment variables they mirror.
func (f *runFlags) config(getenv func(string) string) (cluster.Config, error) {
	var cfg cluster.Config
	var err error
	if err := applySettings(&cfg, f.fs, f.values, getenv); err != nil {
		return cfg, err
	}
	cfg.Gossip.Broadcast = f.broadcast
	cfg.Gossip.AcceptForeignHosts = f.acceptForeign
	cfg.Erlang.Enable, cfg.Erlang.EmbeddedEPMD = f.erlang, true
	cfg.Mesh.Cookie, cfg.Mesh.NoTransitive = f.cookie, f.noTransitive
	set := map[string]bool{}
	f.fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if set["cookie"] && f.cookie == "" {
		return cfg, usageError{fmt.Errorf("--cookie %q: %w", f.cookie, errEmpty)}
	}
	cookie, err := cookieSource.resolve(set, f.cookieFile, getenv)
	if err != nil {
		return cfg, err
	}
	if cookie != "" {
		cfg.Mesh.Cookie = cookie
	}
	secret, err := secretSrc.resolve(set, f.secretFile, getenv)
	if err != nil {
		return cfg, err
	}
	if secret != "" {
		where := "--secret-file " + f.secretFile
		if !set["secret-file"] {
			where = "MACULA_GOSSIP_SECRET_FILE=" + getenv("MACULA_GOSSIP_SECRET_FILE")
		}
		list, err := parseList("secret")(secret)
		if err != nil {
			return cfg, usageError{fmt.Errorf("%s: %w", where, err)}
		}
		cfg.Gossip.Secrets = list.([]string)
	}
	if _, err := parseMinPeers(f.minPeers); err != nil {
		return cfg, usageError{fmt.Errorf("--min-peers %q: %w", f.minPeers, err)}
	}
	if err := parseControl(f.control); err != nil {
		return cfg, usageError{fmt.Errorf("--control %q: %w", f.control, err)}
	}
	if _, err := parseMinPeers(f.httpMaxConns); err != nil {
		return cfg, usageError{fmt.Errorf("--http-max-conns %q: want a number of connections, 0 (automatic) or more", f.httpMaxConns)}
	}
	if len(f.tags.list) > 0 {
		if cfg.Tags, err = parseTags(f.tags.list); err != nil {
			return cfg, usageError{fmt.Errorf("--tag %w", err)}
		}
	} else if env := getenv("MACULA_TAGS"); env != "" {
		if cfg.Tags, err = parseTags(splitComma(env)); err != nil {
			return cfg, usageError{fmt.Errorf("MACULA_TAGS=%q: %w", env, err)}
		}
	}
	if _, err := parsePositiveDuration(f.onEventTimeout); err != nil {
		return cfg, usageError{fmt.Errorf("--on-event-timeout %q: %w", f.onEventTimeout, err)}
	}
	if f.httpAddr != "" {
		if _, err := parseListen(f.httpAddr); err != nil {
			return cfg, usageError{fmt.Errorf("--http %q: %w", f.httpAddr, err)}
		}
	}
	if cfg.Mesh.TLS, err = f.tlsConfig(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func (f *runFlags) tlsConfig() (*tls.Config, error) {
	if f.tlsCert == "" && f.tlsKey == "" && f.tlsCA == "" {
		return nil, nil
	}
	if f.tlsCert == "" || f.tlsKey == "" {
		return nil, usageError{errors.New("--tls-cert and --tls-key go together")}
	}
	cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
	if err != nil {
		return nil, usageError{fmt.Errorf("--tls-cert %q, --tls-key %q: %w", f.tlsCert, f.tlsKey, err)}
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if f.tlsCA == "" {
		// Encryption only: peers are authenticated by the cookie proof.
		cfg.InsecureSkipVerify = true
		return cfg, nil
	}
	pem, err := os.ReadFile(f.tlsCA)
	if err != nil {
		return nil, usageError{fmt.Errorf("--tls-ca %q: %w", f.tlsCA, err)}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, usageError{fmt.Errorf("--tls-ca %q: no PEM certificate in it", f.tlsCA)}
	}
	// Mutual TLS: both sides must present a certificate from the CA. Peers
	// are dialled by address, so the chain is checked, not the host name;
	// the node's identity is proven by the cookie handshake on top.
	cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	cfg.InsecureSkipVerify = true
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("peer sent no certificate")
		}
		opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool(),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
		for _, c := range cs.PeerCertificates[1:] {
			opts.Intermediates.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(opts)
		return err
	}
	return cfg, nil
}

// agentGCPercent is the collector's target of "macula run" when GOGC is not
// set (the library leaves the application's setting alone). A node's live
// heap is a few MB, so with Go's default (100: a heap goal of at least 4 MB)
// the collector ran after every few MB allocated, and while links are made
// in bulk (a 100-node partition healing, 50 new links per node) its cycles
// took about a sixth of the CPU: the heal took 2.25-2.55 s with the
// default and 1.80-2.00 s with 400 (same minutes). The price is memory: a
// heap goal of five times the live heap, at least 16 MB.
const agentGCPercent = 400

// agentGC sets agentGCPercent unless GOGC is set in the environment.
func agentGC(lookup func(string) (string, bool)) {
	if _, set := lookup("GOGC"); !set {
		debug.SetGCPercent(agentGCPercent)
	}
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f runFlags
	fs := newFlagSet("run", stderr)
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	base, err := f.config(os.Getenv)
	if err != nil {
		return err
	}
	cfg, err := cluster.FromEnv(base)
	if err != nil {
		return usageError{err}
	}
	minPeers, _ := parseMinPeers(f.minPeers)
	f.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "cookie":
			log.Warn(cmdlineSecretWarning("cookie", "cookie-file", "MACULA_COOKIE_FILE"))
		case "secret":
			log.Warn(cmdlineSecretWarning("secret", "secret-file", "MACULA_GOSSIP_SECRET_FILE"))
		}
	})
	agentGC(os.LookupEnv)
	soft, hard := openFileLimit()
	log.Debug("open-file limit (RLIMIT_NOFILE; the Go runtime raised the soft limit to the hard one)", "soft", soft, "hard", hard)
	maxConns, _ := parseMinPeers(f.httpMaxConns)
	if maxConns == 0 {
		maxConns = httpConnCap(soft)
	}
	cfg.Logger = log
	cfg.EventQueue = -1
	out := newPrinter(stdout, f.jsonOut)
	recent := newRecentTable()
	ui := &webUI{view: newClusterView(log, cfg.Tags), hub: newEventHub()}
	cfg.Mesh.OnMessage = ui.view.receive
	var hook *eventHook
	if f.onEvent != "" {
		t, _ := parsePositiveDuration(f.onEventTimeout)
		hook = newEventHook(f.onEvent, t.(time.Duration), log)
	}
	cfg.OnEvent = func(e cluster.Event) {
		if hook != nil {
			hook.push(e)
		}
		recent.event(e)
		ui.view.event(e)
		ui.hub.publish(e)
		out.event(e)
	}

	// The HTTP ports are bound first: when one is taken, nothing else has
	// started yet.
	var httpLn, ctlLn net.Listener
	closeListeners := func() {
		for _, ln := range []net.Listener{httpLn, ctlLn} {
			if ln != nil {
				ln.Close()
			}
		}
	}
	if f.httpAddr != "" {
		if httpLn, err = net.Listen("tcp", f.httpAddr); err != nil {
			return fmt.Errorf("--http %s: %w", f.httpAddr, err)
		}
	}
	controlSet := false
	f.fs.Visit(func(fl *flag.Flag) { controlSet = controlSet || fl.Name == "control" })
	if cands := controlCandidates(f.control, controlSet); len(cands) > 0 {
		if ctlLn, err = listenFirst(cands); err != nil {
			if controlSet {
				closeListeners()
				return fmt.Errorf("--control: %w", err)
			}
			log.Warn("no control endpoint: every default port is taken; \"macula nodes\" needs --http to reach this node", "err", err)
		}
	}
	c, err := cluster.Start(ctx, cfg)
	if err != nil {
		closeListeners()
		if hook != nil {
			hook.Close()
		}
		return err
	}
	if hook != nil {
		hook.start(c.Self())
	}
	viewCtx, stopView := context.WithCancel(context.Background())
	viewDone := make(chan struct{})
	go func() {
		defer close(viewDone)
		ui.view.run(viewCtx, c)
	}()
	var srv, ctl *httpServer
	// Each listener has its own registry: collectors are built per server.
	metrics := func() []prometheus.Collector {
		m := viewMetrics(ui.view)
		if hook != nil {
			m = append(m, hookMetrics(hook)...)
		}
		return m
	}
	if httpLn != nil {
		srv = serveHTTP(httpLn, c, recent, ui, minPeers, maxConns, log, metrics()...)
	}
	if ctlLn != nil {
		ctl = serveHTTP(ctlLn, c, recent, ui, minPeers, controlMaxConns, log, metrics()...)
	}
	ready := map[string]any{"node": c.Self().Node, "addr": c.Self().Addr, "strategy": c.Strategy().Name()}
	if gs, ok := c.Strategy().(*gossip.Strategy); ok {
		ready["gossip"] = gs.Gossip().Group()
	}
	if srv != nil {
		ready["http"] = srv.Addr()
	}
	if ctl != nil {
		ready["control"] = ctl.Addr()
	}
	out.ready(ready)

	<-ctx.Done()
	log.Info("leaving the cluster", "node", c.Self().Node)
	stopView()
	<-viewDone
	err = c.Close()
	if hook != nil {
		hook.Close() // after the last event
	}
	for _, s := range []*httpServer{srv, ctl} {
		if s != nil {
			s.Close()
		}
	}
	return err
}

// printer writes events to stdout, as text or JSON lines. Events that
// arrive before "ready" is printed are held back so that ready comes first.
type printer struct {
	mu      sync.Mutex
	w       io.Writer
	json    bool
	isReady bool
	held    []cluster.Event
}

func newPrinter(w io.Writer, jsonOut bool) *printer { return &printer{w: w, json: jsonOut} }

func (p *printer) ready(fields map[string]any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.write("ready", time.Now(), fields)
	p.isReady = true
	for _, e := range p.held {
		p.writeEvent(e)
	}
	p.held = nil
}

func (p *printer) event(e cluster.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.isReady {
		p.held = append(p.held, e)
		return
	}
	p.writeEvent(e)
}

func (p *printer) writeEvent(e cluster.Event) {
	p.write(e.Kind.String(), e.Time, eventFields(e))
}

func (p *printer) write(event string, t time.Time, fields map[string]any) {
	if p.json {
		m := map[string]any{"time": t.UTC().Format(time.RFC3339Nano), "event": event}
		for k, v := range fields {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		p.w.Write(append(b, '\n'))
		return
	}
	line := t.Format("15:04:05.000") + " " + event
	for _, k := range []string{"node", "addr", "source", "incarnation", "reason", "protocol", "tags", "gossip", "strategy", "http", "control"} {
		if t, ok := fields[k].(map[string]string); ok {
			line += " " + k + "=" + formatTags(t)
		} else if v, ok := fields[k]; ok && v != "" {
			line += fmt.Sprintf(" %s=%v", k, v)
		}
	}
	fmt.Fprintln(p.w, line)
}

// splitComma splits a comma-separated flag value; empty entries are
// skipped.
func splitComma(s string) []string {
	list, _ := envx.SplitList(s)
	return list
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/macula-io/cluster/internal/envx"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	cluster "github.com/macula-io/cluster"
	"github.com/macula-io/cluster/gossip"
)

// runFlags mirror cluster.Config. Every flag defaults to "unset" so that
// the environment can fill what the command line leaves out (option >
// environment > default); the help text names the real default.
type runFlags struct {
	groupAddr, interval, ifaces, secret, strategy, nodes string
	name, cookie, listen, linkTimeout, expiry            string
	dnsName, dnsServer, dnsMode, mdnsIfaces              string
	tlsCert, tlsKey, tlsCA                               string
	httpAddr                                             string
	port, ttl, dnsPort, minPeers                         int
	broadcast, noTransitive, jsonOut                     bool
	logFlags
}

func (f *runFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.groupAddr, "multicast-addr", "", "gossip multicast group (default 230.1.1.251; env MACULA_GOSSIP_ADDR)")
	fs.IntVar(&f.port, "port", 0, "gossip UDP port (default 45892; env MACULA_GOSSIP_PORT)")
	fs.StringVar(&f.interval, "interval", "", "heartbeat interval, ms or Go duration (default 1500; env MACULA_GOSSIP_INTERVAL)")
	fs.IntVar(&f.ttl, "ttl", 0, "multicast TTL (default 1; env MACULA_GOSSIP_TTL)")
	fs.StringVar(&f.ifaces, "interface", "", "gossip interfaces, comma-separated (default every up, multicast-capable, non-loopback one; env MACULA_GOSSIP_IF)")
	fs.BoolVar(&f.broadcast, "broadcast", false, "send heartbeats to the interface broadcast address instead of the multicast group")
	fs.StringVar(&f.secret, "secret", "", "gossip HMAC secret; a comma-separated list is a keyring, the first signs (env MACULA_GOSSIP_SECRET or CLUSTER_SECRET)")
	fs.StringVar(&f.expiry, "expiry", "", "forget a silent gossip peer after this (default 5 intervals, at least 5s)")
	fs.StringVar(&f.strategy, "strategy", "", "discovery: auto, gossip, static, dns or mdns (default auto; env CLUSTER_STRATEGY)")
	fs.StringVar(&f.nodes, "nodes", "", "static nodes, comma-separated name@host:port (env CLUSTER_NODES)")
	fs.StringVar(&f.dnsName, "dns-name", "", "dns strategy: name to query, A/AAAA or SRV (env CLUSTER_DNS_NAME)")
	fs.StringVar(&f.dnsServer, "dns-server", "", "dns strategy: DNS server host:port (default the system resolver; env CLUSTER_DNS_SERVER)")
	fs.IntVar(&f.dnsPort, "dns-port", 0, "dns strategy: mesh port of A/AAAA peers (default 9100; env CLUSTER_DNS_PORT)")
	fs.StringVar(&f.dnsMode, "dns-mode", "", "dns strategy: a or srv (default srv for names starting with _, else a; env CLUSTER_DNS_MODE)")
	fs.StringVar(&f.mdnsIfaces, "mdns-interface", "", "mdns strategy: interfaces, comma-separated (env MACULA_MDNS_IF)")
	fs.StringVar(&f.name, "name", "", "node name name@host (default macula-<random>@<interface IP>; env MACULA_NODE or RELEASE_NODE)")
	fs.StringVar(&f.cookie, "cookie", "", "mesh cookie (default env MACULA_COOKIE, RELEASE_COOKIE, then ~/.macula.cookie)")
	fs.StringVar(&f.listen, "listen", "", "mesh listen host:port (default first free port 9100-9200; env MACULA_LISTEN)")
	fs.StringVar(&f.linkTimeout, "link-timeout", "", "declare a silent peer down after this, ms or Go duration, >= 1s (default 5s; env MACULA_LINK_TIMEOUT)")
	fs.BoolVar(&f.noTransitive, "no-transitive", false, "do not connect to the peers of peers")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "mesh TLS certificate (PEM); with --tls-key enables TLS")
	fs.StringVar(&f.tlsKey, "tls-key", "", "mesh TLS private key (PEM)")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "CA (PEM) that peer certificates must chain to; enables mutual TLS")
	fs.StringVar(&f.httpAddr, "http", "", "serve /healthz, /readyz, /nodes and /metrics on this address")
	fs.IntVar(&f.minPeers, "min-peers", 0, "/readyz: ready when at least this many peers are connected")
	fs.BoolVar(&f.jsonOut, "json", false, "print events as JSON lines on stdout (logs stay on stderr)")
	f.logFlags.register(fs)
}

// config turns the flags into a cluster.Config holding only what was given.
func (f *runFlags) config() (cluster.Config, error) {
	var cfg cluster.Config
	var err error
	if err := cluster.CheckStrategy(f.strategy); err != nil {
		return cfg, usageError{fmt.Errorf("--strategy: %w", err)}
	}
	cfg.Strategy = f.strategy
	cfg.Nodes = splitComma(f.nodes)
	g := &cfg.Gossip
	g.Group, g.Port, g.TTL, g.Broadcast = f.groupAddr, f.port, f.ttl, f.broadcast
	g.Interfaces, g.Secrets = splitComma(f.ifaces), splitComma(f.secret)
	if f.interval != "" {
		if g.Interval, err = envx.ParseDuration(f.interval); err != nil {
			return cfg, usageError{fmt.Errorf("--interval %q: %w", f.interval, err)}
		}
	}
	if f.expiry != "" {
		if g.Expiry, err = envx.ParseDuration(f.expiry); err != nil {
			return cfg, usageError{fmt.Errorf("--expiry %q: %w", f.expiry, err)}
		}
	}
	cfg.DNS.Name, cfg.DNS.Server, cfg.DNS.Port, cfg.DNS.Mode = f.dnsName, f.dnsServer, f.dnsPort, f.dnsMode
	cfg.MDNS.Interfaces = splitComma(f.mdnsIfaces)
	m := &cfg.Mesh
	m.Name, m.Cookie, m.Listen, m.NoTransitive = f.name, f.cookie, f.listen, f.noTransitive
	if f.linkTimeout != "" {
		if m.LinkTimeout, err = envx.ParseDuration(f.linkTimeout); err != nil || m.LinkTimeout < time.Second {
			return cfg, usageError{fmt.Errorf("--link-timeout %q: want milliseconds or a Go duration of at least 1s", f.linkTimeout)}
		}
	}
	if m.TLS, err = f.tlsConfig(); err != nil {
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
		return nil, fmt.Errorf("load TLS key pair: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if f.tlsCA == "" {
		// Encryption only: peers are authenticated by the cookie proof.
		cfg.InsecureSkipVerify = true
		return cfg, nil
	}
	pem, err := os.ReadFile(f.tlsCA)
	if err != nil {
		return nil, fmt.Errorf("read TLS CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("TLS CA %s: no PEM certificate in it", f.tlsCA)
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
	base, err := f.config()
	if err != nil {
		return err
	}
	cfg, err := cluster.FromEnv(base)
	if err != nil {
		return usageError{err}
	}
	cfg.Logger = log
	cfg.EventQueue = -1
	out := newPrinter(stdout, f.jsonOut)
	cfg.OnEvent = out.event

	c, err := cluster.Start(ctx, cfg)
	if err != nil {
		return err
	}
	var srv *httpServer
	if f.httpAddr != "" {
		if srv, err = startHTTP(f.httpAddr, c, f.minPeers, log); err != nil {
			c.Close()
			return err
		}
	}
	ready := map[string]any{"node": c.Self().Node, "addr": c.Self().Addr, "strategy": c.Strategy().Name()}
	if gs, ok := c.Strategy().(*gossip.Strategy); ok {
		ready["gossip"] = gs.Gossip().Group()
	}
	if srv != nil {
		ready["http"] = srv.Addr()
	}
	out.ready(ready)

	<-ctx.Done()
	log.Info("leaving the cluster", "node", c.Self().Node)
	err = c.Close()
	if srv != nil {
		srv.Close()
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
	f := map[string]any{"node": e.Node}
	switch e.Kind {
	case cluster.Discovered, cluster.Lost:
		f["addr"], f["source"] = e.Addr, e.Source
	case cluster.NodeUp:
		f["addr"], f["incarnation"] = e.Addr, strconv.FormatUint(e.Incarnation, 10)
	case cluster.NodeDown:
		f["reason"] = e.Reason
	}
	p.write(e.Kind.String(), e.Time, f)
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
	for _, k := range []string{"node", "addr", "source", "incarnation", "reason", "gossip", "strategy", "http"} {
		if v, ok := fields[k]; ok && v != "" {
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

package dnsdisc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/macula-io/cluster/discovery"
)

// maxPeers bounds the peer set (and the SRV targets resolved per round).
const maxPeers = 1024

// maxParallel bounds concurrent SRV target lookups.
const maxParallel = 8

// Stats are the strategy's counters.
type Stats struct {
	Rounds   uint64 // lookup rounds (poll or Refresh)
	Lookups  uint64 // DNS lookups made (SRV, and A/AAAA per name)
	Failures uint64 // lookups that failed (the last good answer was kept)
	Reports  uint64 // peer sets reported (changes)
	Peers    uint64 // peers in the current set
}

// Strategy is the DNS discovery.Strategy. Create it with NewStrategy.
type Strategy struct {
	cfg Config

	life    discovery.Lifecycle
	cancel  context.CancelFunc
	done    chan struct{}
	refresh chan struct{}
	conns   *connTracker

	rounds, lookups, failures, reports atomic.Uint64
	peers                              atomic.Pointer[[]discovery.Peer]
}

var (
	_ discovery.Strategy    = (*Strategy)(nil)
	_ discovery.StatsSource = (*Strategy)(nil)
)

// NewStrategy returns a strategy for cfg; Start validates cfg.
func NewStrategy(cfg Config) *Strategy {
	t := &connTracker{}
	t.cond = sync.NewCond(&t.mu)
	return &Strategy{cfg: cfg, refresh: make(chan struct{}, 1), conns: t}
}

// Name is "dns".
func (s *Strategy) Name() string { return "dns" }

// Start validates the configuration and starts polling; the first lookup
// runs at once in the background. The peers are reported by address only
// (the mesh learns each name in its handshake), so nodes may be named as
// their operators like. sink hears of every change, from one goroutine,
// never after Close returns.
func (s *Strategy) Start(ctx context.Context, self discovery.Peer, sink discovery.Sink) error {
	return s.life.Start(func() error {
		st, err := s.cfg.settings()
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		s.cancel = cancel
		s.done = make(chan struct{})
		l := &looper{s: s, st: st, self: self, set: discovery.NewSet(sink), res: newResolver(st.server, s.conns)}
		l.selfAddr, _ = netip.ParseAddrPort(self.Addr)
		l.selfAddr = netip.AddrPortFrom(l.selfAddr.Addr().Unmap().WithZone(""), l.selfAddr.Port())
		st.log.Debug("dns discovery started", "name", st.fqdn, "srv", st.srv, "server", st.server, "interval", st.interval)
		go l.run(ctx)
		return nil
	})
}

// Refresh asks for a lookup now; it does not block.
func (s *Strategy) Refresh() {
	select {
	case s.refresh <- struct{}{}:
	default:
	}
}

// Close stops polling and waits for the polling goroutine. It is
// idempotent.
func (s *Strategy) Close() error {
	if s.life.Close() {
		s.cancel()
		<-s.done
		s.conns.closeAndWait()
	}
	return nil
}

// Peers returns a copy of the current peer set, sorted by address.
func (s *Strategy) Peers() []discovery.Peer {
	if p := s.peers.Load(); p != nil {
		return slices.Clone(*p)
	}
	return nil
}

// Stats returns the counters.
func (s *Strategy) Stats() Stats {
	var n uint64
	if p := s.peers.Load(); p != nil {
		n = uint64(len(*p))
	}
	return Stats{Rounds: s.rounds.Load(), Lookups: s.lookups.Load(), Failures: s.failures.Load(),
		Reports: s.reports.Load(), Peers: n}
}

// DiscoveryStats implements discovery.StatsSource.
func (s *Strategy) DiscoveryStats() discovery.Stats {
	st := s.Stats()
	return discovery.Stats{Peers: st.Peers, Counters: map[string]uint64{
		"rounds": st.Rounds, "lookups": st.Lookups, "lookup_failures": st.Failures, "reports": st.Reports,
	}, Rejected: map[string]uint64{}}
}

// connTracker counts the resolver's open connections so that Close can
// wait for the resolver's own goroutines: the Go resolver reads until its
// deadline and ignores cancellation, so connections are closed when the
// lookup's context ends.
type connTracker struct {
	mu     sync.Mutex
	cond   *sync.Cond
	n      int
	closed bool
}

func newResolver(server string, t *connTracker) *net.Resolver {
	var d net.Dialer
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		if server != "" {
			address = server
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, ErrClosed
		}
		t.n++
		t.mu.Unlock()
		c, err := d.DialContext(ctx, network, address)
		if err != nil {
			t.release()
			return nil, err
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		var once sync.Once
		done := func() {
			once.Do(func() {
				stop()
				t.release()
			})
		}
		// Keep the PacketConn-ness: the resolver picks UDP framing by it.
		if uc, ok := c.(*net.UDPConn); ok {
			return &trackedUDP{UDPConn: uc, done: done}, nil
		}
		return &trackedConn{Conn: c, done: done}, nil
	}}
}

func (t *connTracker) release() {
	t.mu.Lock()
	t.n--
	if t.n == 0 {
		t.cond.Broadcast()
	}
	t.mu.Unlock()
}

// closeAndWait refuses new connections and waits for open ones to close.
func (t *connTracker) closeAndWait() {
	t.mu.Lock()
	t.closed = true
	for t.n > 0 {
		t.cond.Wait()
	}
	t.mu.Unlock()
}

type trackedUDP struct {
	*net.UDPConn
	done func()
}

func (c *trackedUDP) Close() error {
	err := c.UDPConn.Close()
	c.done()
	return err
}

type trackedConn struct {
	net.Conn
	done func()
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.done()
	return err
}

// looper is the polling goroutine's state; only that goroutine touches it.
type looper struct {
	s        *Strategy
	st       settings
	self     discovery.Peer
	selfAddr netip.AddrPort
	set      *discovery.Set
	res      *net.Resolver

	last    []discovery.Peer
	failing bool
}

func (l *looper) run(ctx context.Context) {
	defer close(l.s.done)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-l.s.refresh:
		}
		l.poll(ctx)
		if ctx.Err() != nil {
			return
		}
		// +-10% jitter so that many nodes do not poll in step.
		j := time.Duration(rand.Int64N(int64(l.st.interval)/5+1)) - l.st.interval/10
		timer.Reset(l.st.interval + j)
	}
}

func (l *looper) poll(ctx context.Context) {
	l.s.rounds.Add(1)
	peers, err := l.lookup(ctx)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		if !l.failing {
			l.failing = true
			l.st.log.Warn("dns discovery lookup failing, keeping last answer", "name", l.st.fqdn,
				"peers", len(l.last), "err", err)
		} else {
			l.st.log.Debug("dns discovery lookup failed", "name", l.st.fqdn, "err", err)
		}
		return
	}
	if l.failing {
		l.failing = false
		l.st.log.Info("dns discovery lookup recovered", "name", l.st.fqdn, "peers", len(peers))
	}
	if slices.Equal(peers, l.last) {
		return
	}
	l.last = peers
	l.s.peers.Store(&peers)
	l.s.reports.Add(1)
	found, gone := l.set.Report(peers)
	l.st.log.Debug("dns discovery: answer changed", "name", l.st.fqdn, "found", found, "gone", gone)
}

func cmpAddr(a, b discovery.Peer) int { return strings.Compare(a.Addr, b.Addr) }

// lookup does one round and returns the sorted peer set, or an error when
// the answer cannot be trusted (the caller keeps the last one).
func (l *looper) lookup(ctx context.Context) ([]discovery.Peer, error) {
	set := make(map[string]discovery.Peer)
	if l.st.srv {
		if err := l.lookupSRV(ctx, set); err != nil {
			return nil, err
		}
	} else {
		ips, err := l.lookupIP(ctx, l.st.fqdn)
		if err != nil {
			return nil, err
		}
		for _, ip := range ips {
			l.add(set, ip, l.st.port)
		}
	}
	peers := make([]discovery.Peer, 0, len(set))
	for _, p := range set {
		peers = append(peers, p)
	}
	slices.SortFunc(peers, cmpAddr)
	return peers, nil
}

// notFound reports whether err is an answer meaning "no such records".
func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

func (l *looper) lookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, l.st.timeout)
	defer cancel()
	l.s.lookups.Add(1)
	ips, err := l.res.LookupNetIP(ctx, "ip", host)
	if err != nil {
		if notFound(err) {
			return nil, nil
		}
		l.s.failures.Add(1)
		return nil, fmt.Errorf("dnsdisc: lookup %s: %w", host, err)
	}
	return ips, nil
}

func (l *looper) lookupSRV(ctx context.Context, set map[string]discovery.Peer) error {
	sctx, cancel := context.WithTimeout(ctx, l.st.timeout)
	l.s.lookups.Add(1)
	_, recs, err := l.res.LookupSRV(sctx, "", "", l.st.fqdn)
	cancel()
	switch {
	case err != nil && notFound(err):
		return nil
	case err != nil && len(recs) == 0:
		l.s.failures.Add(1)
		return fmt.Errorf("dnsdisc: lookup SRV %s: %w", l.st.fqdn, err)
	case err != nil:
		// Some records had invalid targets and were dropped by the resolver.
		l.st.log.Debug("dns discovery: some SRV records ignored", "name", l.st.fqdn, "err", err)
	}
	if len(recs) > maxPeers {
		recs = recs[:maxPeers]
	}
	type result struct {
		port int
		ips  []netip.Addr
		err  error
	}
	results := make([]result, len(recs))
	sem := make(chan struct{}, maxParallel)
	var wg sync.WaitGroup
	for i, r := range recs {
		if r.Target == "." || r.Target == "" || r.Port == 0 {
			continue
		}
		results[i].port = int(r.Port)
		if ip, err := netip.ParseAddr(strings.TrimSuffix(r.Target, ".")); err == nil {
			results[i].ips = []netip.Addr{ip}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[i].ips, results[i].err = l.lookupIP(ctx, r.Target)
		}()
	}
	wg.Wait()
	for _, r := range results {
		if r.err != nil {
			return r.err
		}
		for _, ip := range r.ips {
			l.add(set, ip, r.port)
		}
	}
	return nil
}

// add puts the peer at ip:port into set unless it is this node.
func (l *looper) add(set map[string]discovery.Peer, ip netip.Addr, port int) {
	ip = ip.Unmap().WithZone("")
	if !ip.IsValid() || ip.IsUnspecified() || len(set) >= maxPeers {
		return
	}
	ap := netip.AddrPortFrom(ip, uint16(port))
	addr := ap.String()
	if ap == l.selfAddr || addr == l.self.Addr {
		return
	}
	set[addr] = discovery.Peer{Addr: addr}
}

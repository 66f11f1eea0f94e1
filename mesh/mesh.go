package mesh

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/internal/ratelimit"
)

// Defaults for zero Config fields.
const (
	DefaultLinkTimeout          = 5 * time.Second
	MinLinkTimeout              = time.Second
	DefaultHandshakeTimeout     = 5 * time.Second
	DefaultMaxPendingHandshakes = 64
	DefaultMaxMessageSize       = 1 << 20
	DefaultSendQueue            = 1024
	// DefaultPortFirst and DefaultPortLast bound the port search when
	// Config.Listen is empty.
	DefaultPortFirst = 9100
	DefaultPortLast  = 9200
	// MaxMessageSizeLimit is the largest Config.MaxMessageSize accepted.
	MaxMessageSizeLimit = 1 << 30
)

const (
	transitiveTries = 3           // dial attempts for a peer learned from a peer
	maxPeerStates   = 4096        // bound on remembered peers (wanted + transitive)
	closeGrace      = time.Second // Close: bound on goodbye write and on the wait for the peer's close
	backoffBase     = 100 * time.Millisecond
	backoffCap      = 5 * time.Second
	warnPeriod      = 10 * time.Second // hostile-traffic warnings: one per remote address per period
)

// Sentinel errors, for errors.Is.
var (
	ErrClosed        = errors.New("mesh: closed")
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
	// handshake of one connection. 0 = 5 s.
	HandshakeTimeout time.Duration
	// MaxPendingHandshakes bounds inbound connections still in their
	// handshake; beyond it a new connection is accepted and closed at
	// once (counted as "too_many_pending"). 0 = 64.
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
	// Logger receives membership changes at Info, per-connection detail
	// at Debug and rate-limited warnings about hostile traffic. nil =
	// discard.
	Logger *slog.Logger
	// OnEvent receives NodeUp/NodeDown events from one goroutine, in
	// order, exactly once each. A slow OnEvent delays later events but
	// never the links. It must not call Close. nil = no callback.
	OnEvent func(Event)
	// OnMessage receives each inbound message with the sender's name,
	// from the link's reader goroutine: in order per sender, concurrently
	// across senders. payload belongs to the callee. While it runs the
	// link reads nothing more; it should return quickly, and must not
	// call Close. nil = drop.
	OnMessage func(from string, payload []byte)
}

// Link describes one live link.
type Link struct {
	Node        string    // peer name
	Addr        string    // peer's advertised address
	Incarnation uint64    // peer's incarnation
	Since       time.Time // when the link came up
	Outbound    bool      // this node dialled the connection
}

// Stats are counters since Start, for metrics. Maps are copies.
type Stats struct {
	Links             uint64            // links up now
	LinksUp           uint64            // NodeUp events
	LinksDown         map[string]uint64 // NodeDown events by reason
	HandshakeFailures map[string]uint64 // failed handshakes (both directions) by reason; see doc.go
	ProtocolErrors    map[string]uint64 // links closed for a bad frame after the handshake, by reason
	DuplicateLinks    uint64            // connections refused because the pair already had a link or a winning dial
	PendingHandshakes uint64            // inbound handshakes in progress now
	Dials             uint64            // outbound TCP connection attempts
	DialFailures      uint64            // outbound TCP connection attempts that failed
	MessagesSent      uint64            // messages written to a link
	MessagesReceived  uint64            // messages read from a link
	BytesSent         uint64            // payload bytes of MessagesSent
	BytesReceived     uint64            // payload bytes of MessagesReceived
}

// Mesh is a node of the mesh: a listener and a set of links, at most one per
// peer. Its methods are safe for concurrent use.
type Mesh struct {
	cfg    Config
	name   string
	addr   string
	inc    uint64
	start  int64
	cookie []byte
	log    *slog.Logger
	warns  *ratelimit.PerKey
	ln     net.Listener
	ctx    context.Context // cancelled by Close: ends dials, handshakes, backoffs
	cancel context.CancelFunc
	events *dispatcher

	mu     sync.RWMutex
	closed bool
	links  map[string]*link
	peers  map[string]*peerState

	isClosed  atomic.Bool
	pending   atomic.Int64
	wg        sync.WaitGroup
	closeOnce sync.Once
	st        counters
}

// peerState is what the mesh knows about a peer it dials. Guarded by Mesh.mu.
type peerState struct {
	addr       string
	wanted     bool // Connect: redial until linked and after a drop
	transitive int  // dial attempts left for a peer learned from a peer
	dialing    bool // a dial goroutine runs
	pendingOut bool // our outbound connection is connected and in its handshake
	gen        uint64
	kick       chan struct{}
}

// Start validates cfg, binds the listener and starts accepting links. ctx
// bounds the start only.
func Start(ctx context.Context, cfg Config) (*Mesh, error) {
	if err := validateName(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.Cookie == "" {
		return nil, ErrNoCookie
	}
	if err := normalize(&cfg); err != nil {
		return nil, err
	}
	m := &Mesh{
		cfg:    cfg,
		name:   cfg.Name,
		cookie: []byte(cfg.Cookie),
		log:    cfg.Logger,
		warns:  ratelimit.New(warnPeriod, 0),
		events: newDispatcher(),
		links:  make(map[string]*link),
		peers:  make(map[string]*peerState),
		start:  time.Now().UnixNano(),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	for m.inc == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("mesh: incarnation: %w", err)
		}
		m.inc = binary.BigEndian.Uint64(b[:])
	}
	ln, err := listen(ctx, cfg.Listen)
	if err != nil {
		return nil, err
	}
	m.ln = ln
	m.addr = cfg.Advertise
	if m.addr == "" {
		_, host, _ := cutName(m.name)
		port := ln.Addr().(*net.TCPAddr).Port
		m.addr = net.JoinHostPort(host, strconv.Itoa(port))
		if err := validateAddr(m.addr); err != nil {
			ln.Close()
			return nil, fmt.Errorf("%w: advertised address from name: %w", ErrInvalidConfig, err)
		}
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	go m.events.run(cfg.OnEvent, m.log)
	m.wg.Add(1)
	go m.acceptLoop()
	m.log.Info("mesh: listening", "node", m.name, "addr", m.addr, "listen", ln.Addr().String(),
		"incarnation", m.inc, "tls", cfg.TLS != nil)
	return m, nil
}

func normalize(cfg *Config) error {
	bad := func(field string, v any) error {
		return fmt.Errorf("%w: %s %v", ErrInvalidConfig, field, v)
	}
	switch {
	case cfg.LinkTimeout < 0:
		return bad("LinkTimeout", cfg.LinkTimeout)
	case cfg.LinkTimeout == 0:
		cfg.LinkTimeout = DefaultLinkTimeout
	case cfg.LinkTimeout < MinLinkTimeout:
		cfg.LinkTimeout = MinLinkTimeout
	}
	switch {
	case cfg.HandshakeTimeout < 0:
		return bad("HandshakeTimeout", cfg.HandshakeTimeout)
	case cfg.HandshakeTimeout == 0:
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	switch {
	case cfg.MaxPendingHandshakes < 0:
		return bad("MaxPendingHandshakes", cfg.MaxPendingHandshakes)
	case cfg.MaxPendingHandshakes == 0:
		cfg.MaxPendingHandshakes = DefaultMaxPendingHandshakes
	}
	switch {
	case cfg.MaxMessageSize < 0 || cfg.MaxMessageSize > MaxMessageSizeLimit:
		return bad("MaxMessageSize", cfg.MaxMessageSize)
	case cfg.MaxMessageSize == 0:
		cfg.MaxMessageSize = DefaultMaxMessageSize
	}
	switch {
	case cfg.SendQueue < 0:
		return bad("SendQueue", cfg.SendQueue)
	case cfg.SendQueue == 0:
		cfg.SendQueue = DefaultSendQueue
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
	return nil
}

// listen binds addr, or the first free port of 9100-9200 on all addresses.
func listen(ctx context.Context, addr string) (net.Listener, error) {
	if addr != "" {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("mesh: listen %s: %w", addr, err)
		}
		return ln, nil
	}
	return listenRange(ctx, "", DefaultPortFirst, DefaultPortLast)
}

// listenRange binds the first free port of first..last on host.
func listenRange(ctx context.Context, host string, first, last int) (net.Listener, error) {
	var lc net.ListenConfig
	var err error
	for p := first; p <= last; p++ {
		var ln net.Listener
		ln, err = lc.Listen(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err == nil {
			return ln, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return nil, fmt.Errorf("mesh: listen: no free port in %d-%d: %w", first, last, err)
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

// Name is this node's name.
func (m *Mesh) Name() string { return m.name }

// Addr is the advertised address, "host:port".
func (m *Mesh) Addr() string { return m.addr }

// Incarnation is this node's incarnation: random, never 0, fresh at every Start.
func (m *Mesh) Incarnation() uint64 { return m.inc }

// ListenAddr is the bound listener address.
func (m *Mesh) ListenAddr() net.Addr { return m.ln.Addr() }

// Connect asks for a link to name at addr ("host:port"). It returns at once;
// the mesh dials with exponential backoff and jitter (100 ms to 5 s) until
// linked, and again after the link drops, until Forget or Disconnect.
// Calling it again is harmless; a new addr replaces the old one. Invalid
// arguments are logged and ignored; Connect to this node is ignored.
func (m *Mesh) Connect(name, addr string) {
	if err := validateName(name); err != nil {
		m.log.Warn("mesh: connect: ignored", "node", name, "err", err)
		return
	}
	if err := validateAddr(addr); err != nil {
		m.log.Warn("mesh: connect: ignored", "node", name, "addr", addr, "err", err)
		return
	}
	if name == m.name {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	ps := m.peers[name]
	if ps == nil {
		ps = &peerState{kick: make(chan struct{}, 1)}
		m.peers[name] = ps
	}
	changed := ps.addr != addr
	ps.addr = addr
	ps.wanted = true
	if m.links[name] != nil {
		return
	}
	if !ps.dialing {
		m.startDialerLocked(name, ps)
	} else if changed {
		ps.kickDialer()
	}
}

// Forget stops (re)dialling name. A live link stays up.
func (m *Mesh) Forget(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.forgetLocked(name)
}

func (m *Mesh) forgetLocked(name string) {
	ps := m.peers[name]
	if ps == nil {
		return
	}
	ps.wanted = false
	ps.transitive = 0
	ps.gen++
	ps.kickDialer()
	m.gcPeerLocked(name, ps)
}

// Disconnect is Forget plus closing the link, if any: NodeDown with reason
// "disconnected" here, reason "closed" at the peer. The peer may connect
// again if it wants this node.
func (m *Mesh) Disconnect(name string) {
	m.mu.Lock()
	m.forgetLocked(name)
	l := m.links[name]
	if l != nil {
		m.removeLocked(l, ReasonDisconnected)
	}
	m.mu.Unlock()
	if l != nil {
		l.fail(ReasonDisconnected)
	}
}

// Send queues payload for node. It returns once the message is queued on the
// link (not when it is delivered), waiting while the link's queue is full
// until ctx is done. Messages to one node are delivered in order. payload is
// copied. Errors: ErrNotConnected, ErrTooLarge, ErrClosed, or ctx.Err(), wrapped.
func (m *Mesh) Send(ctx context.Context, node string, payload []byte) error {
	if m.isClosed.Load() {
		return ErrClosed
	}
	if len(payload) > m.cfg.MaxMessageSize {
		return fmt.Errorf("mesh: send to %s: %w: %d bytes, limit %d", node, ErrTooLarge, len(payload), m.cfg.MaxMessageSize)
	}
	p := make([]byte, len(payload))
	copy(p, payload)
	var prev *link
	for {
		m.mu.RLock()
		l := m.links[node]
		m.mu.RUnlock()
		if l == nil || l == prev {
			// prev: the link we tried went down and was not replaced.
			if m.isClosed.Load() {
				return ErrClosed
			}
			return fmt.Errorf("mesh: send to %s: %w", node, ErrNotConnected)
		}
		if len(p) > l.maxSend {
			return fmt.Errorf("mesh: send to %s: %w: %d bytes, peer's limit %d", node, ErrTooLarge, len(p), l.maxSend)
		}
		select {
		case <-l.done:
			prev = l
			continue
		case l.out <- p:
			return nil
		default:
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("mesh: send to %s: %w", node, err)
		}
		select {
		case l.out <- p:
			return nil
		case <-l.done:
			prev = l
		case <-ctx.Done():
			return fmt.Errorf("mesh: send to %s: %w", node, ctx.Err())
		}
	}
}

// Links returns the live links, sorted by node name.
func (m *Mesh) Links() []Link {
	m.mu.RLock()
	out := make([]Link, 0, len(m.links))
	for _, l := range m.links {
		out = append(out, l.info())
	}
	m.mu.RUnlock()
	slices.SortFunc(out, func(a, b Link) int { return cmp.Compare(a.Node, b.Node) })
	return out
}

// Stats returns a snapshot of the counters.
func (m *Mesh) Stats() Stats {
	m.mu.RLock()
	n := len(m.links)
	m.mu.RUnlock()
	s := m.st.snapshot()
	s.Links = uint64(n)
	s.PendingHandshakes = uint64(max(m.pending.Load(), 0))
	return s
}

// Close leaves the mesh: it stops accepting and dialling, sends goodbye on
// every link (peers report NodeDown reason "left" at once), reports NodeDown
// reason "shutdown" for each link, and returns once every goroutine has
// ended and every event has been delivered. It is idempotent.
func (m *Mesh) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		m.isClosed.Store(true)
		ls := make([]*link, 0, len(m.links))
		for _, l := range m.links {
			l.removed = true
			ls = append(ls, l)
		}
		clear(m.links)
		for _, ps := range m.peers {
			ps.kickDialer()
		}
		m.mu.Unlock()
		slices.SortFunc(ls, func(a, b *link) int { return cmp.Compare(a.peer.Name, b.peer.Name) })

		m.cancel()
		m.ln.Close()
		for _, l := range ls {
			l.shutdown()
		}
		m.wg.Wait()
		for _, l := range ls {
			l.fail(ReasonShutdown) // no-op unless the link never started
			m.mu.Lock()
			m.emitDownLocked(l, ReasonShutdown)
			m.mu.Unlock()
		}
		m.events.close()
		<-m.events.done
		m.log.Info("mesh: closed", "node", m.name)
	})
	return nil
}

// --- link table (all *Locked methods need m.mu held) ---

func (m *Mesh) emitUpLocked(l *link) {
	m.st.linksUp.Add(1)
	m.events.push(Event{Kind: NodeUp, Node: l.peer.Name, Addr: l.peer.Addr,
		Incarnation: l.peer.Incarnation, Time: time.Now()})
}

func (m *Mesh) emitDownLocked(l *link, r Reason) {
	m.st.count(&m.st.linksDown, string(r))
	m.events.push(Event{Kind: NodeDown, Node: l.peer.Name, Addr: l.peer.Addr,
		Incarnation: l.peer.Incarnation, Reason: r, Time: time.Now()})
}

// removeLocked takes l out of the table and reports NodeDown(r). The caller
// closes l (l.fail) after releasing m.mu.
func (m *Mesh) removeLocked(l *link, r Reason) {
	if l.removed {
		return
	}
	l.removed = true
	if m.links[l.peer.Name] == l {
		delete(m.links, l.peer.Name)
	}
	m.emitDownLocked(l, r)
}

// linkDown is called once per link when it fails. If the link is still in
// the table it is removed with NodeDown(r), and a wanted peer is redialled.
func (m *Mesh) linkDown(l *link, r Reason) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l.removed {
		return
	}
	m.removeLocked(l, r)
	if ps := m.peers[l.peer.Name]; ps != nil && ps.wanted && !m.closed && !ps.dialing {
		m.startDialerLocked(l.peer.Name, ps)
	}
}

// admit decides, under m.mu, whether an authenticated connection to peer
// becomes the link. On success the link is in the table and NodeUp is
// queued; old, if not nil, is a link it replaced (already reported down)
// that the caller must close. On refusal it returns a refuse code.
//
// Rules, identical on both nodes so both keep the same connection:
//   - an older incarnation than the current link's is refused (stale);
//   - a newer incarnation replaces the link (restarted);
//   - same incarnation, acceptor side: between the existing link and the new
//     one, a connection dialled by the node whose name sorts lower wins; if
//     both were dialled by the peer, the newer wins (the peer gave the old
//     one up). While our own outbound handshake to the peer is in progress,
//     it counts as a connection dialled by us.
//   - dialer side: the acceptor has already committed to the connection, so
//     it replaces any link of the same incarnation.
func (m *Mesh) admit(peer hello, conn, raw net.Conn, outbound bool, ps *peerState, gen uint64) (l, old *link, refuse byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if outbound && ps != nil {
		ps.pendingOut = false
	}
	if m.closed {
		return nil, nil, refuseShutdown
	}
	if outbound && ps != nil && ps.gen != gen {
		// Forgotten or disconnected while we dialled.
		return nil, nil, refuseForgotten
	}
	reason := Reason("")
	if cur := m.links[peer.Name]; cur != nil {
		switch c := compareIncarnation(peer, cur.peer); {
		case c < 0:
			return nil, nil, refuseStale
		case c > 0:
			reason = ReasonRestarted
		case outbound:
			reason = ReasonClosed
		default:
			curWins := cur.outbound && m.name < peer.Name
			if curWins {
				m.st.duplicates.Add(1)
				return nil, nil, refuseDuplicate
			}
			reason = ReasonClosed
		}
		old = cur
	} else if !outbound {
		if p := m.peers[peer.Name]; p != nil && p.pendingOut && m.name < peer.Name {
			m.st.duplicates.Add(1)
			return nil, nil, refuseDuplicate
		}
	}
	if old != nil {
		m.removeLocked(old, reason)
	}
	l = newLink(m, peer, conn, raw, outbound)
	m.links[peer.Name] = l
	m.emitUpLocked(l)
	m.peersChangedLocked()
	return l, old, 0
}

// compareIncarnation orders two incarnations of one name: by start time,
// then by incarnation number.
func compareIncarnation(a, b hello) int {
	if c := cmp.Compare(a.Start, b.Start); c != 0 {
		return c
	}
	return cmp.Compare(a.Incarnation, b.Incarnation)
}

// peersChangedLocked asks every link to send our current peer list.
func (m *Mesh) peersChangedLocked() {
	if m.cfg.NoTransitive {
		return
	}
	for _, l := range m.links {
		l.peersDirty.Store(true)
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

// peerList returns the (name, addr) of our links except exclude.
func (m *Mesh) peerList(exclude string) []peerInfo {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]peerInfo, 0, len(m.links))
	for name, l := range m.links {
		if name != exclude {
			out = append(out, peerInfo{Name: name, Addr: l.peer.Addr})
		}
	}
	slices.SortFunc(out, func(a, b peerInfo) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// learnPeers handles a peers frame from l: dial the ones we lack, a bounded
// number of times, without making them wanted.
func (m *Mesh) learnPeers(from *link, ps []peerInfo) {
	if m.cfg.NoTransitive {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	for _, p := range ps {
		if p.Name == m.name || m.links[p.Name] != nil {
			continue
		}
		st := m.peers[p.Name]
		if st == nil {
			if len(m.peers) >= maxPeerStates {
				continue
			}
			st = &peerState{kick: make(chan struct{}, 1)}
			m.peers[p.Name] = st
		}
		if st.dialing {
			continue
		}
		if !st.wanted {
			st.addr = p.Addr
			st.transitive = transitiveTries
		}
		m.log.Debug("mesh: learned peer", "node", p.Name, "addr", p.Addr, "from", from.peer.Name)
		m.startDialerLocked(p.Name, st)
	}
}

// gcPeerLocked forgets a peer state nobody needs.
func (m *Mesh) gcPeerLocked(name string, ps *peerState) {
	if !ps.wanted && !ps.dialing && ps.transitive <= 0 && m.peers[name] == ps {
		delete(m.peers, name)
	}
}

func (ps *peerState) kickDialer() {
	select {
	case ps.kick <- struct{}{}:
	default:
	}
}

// --- accepting ---

func (m *Mesh) acceptLoop() {
	defer m.wg.Done()
	var delay time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if m.isClosed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, bounded.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.log.Warn("mesh: accept", "err", err)
			select {
			case <-time.After(delay):
			case <-m.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		if m.pending.Load() >= int64(m.cfg.MaxPendingHandshakes) {
			m.failHandshake(c.RemoteAddr(), false, "too_many_pending", nil)
			c.Close()
			continue
		}
		m.pending.Add(1)
		m.wg.Add(1)
		go m.serveInbound(c)
	}
}

// failHandshake counts a failed handshake and logs it: a rate-limited
// warning for hostile-looking inbound traffic, Debug otherwise.
func (m *Mesh) failHandshake(remote net.Addr, outbound bool, reason string, err error) {
	m.st.count(&m.st.hsFail, reason)
	ra := ""
	if remote != nil {
		ra = remote.String()
	}
	hostile := false
	switch reason {
	case "bad_cookie", "bad_magic", "bad_version", "malformed", "frame_too_large",
		"unexpected_frame", "too_many_pending", "name_conflict", "tls":
		hostile = true
	}
	if outbound {
		// Worth a warning from our own dials: a peer with another cookie,
		// protocol or certificate, or another live incarnation of our name.
		switch reason {
		case "bad_cookie", "bad_version", "tls", "stale", "name_conflict", "self", "wrong_node":
			hostile = true
		default:
			hostile = false
		}
	}
	if hostile {
		key := ra
		if ap, perr := netipAddrOf(remote); perr == nil {
			key = ap
		}
		if ok, suppressed := m.warns.Allow(key); ok {
			m.log.Warn("mesh: rejected connection", "remote", ra, "reason", reason, "err", err,
				"suppressed", suppressed)
		}
		return
	}
	m.log.Debug("mesh: handshake failed", "remote", ra, "outbound", outbound, "reason", reason, "err", err)
}

func netipAddrOf(a net.Addr) (string, error) {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String(), nil
	}
	host, _, err := net.SplitHostPort(a.String())
	return host, err
}

// handshakeError carries the reason counted in Stats.HandshakeFailures.
type handshakeError struct {
	reason string
	err    error
}

func (e *handshakeError) Error() string {
	if e.err == nil {
		return "mesh handshake: " + e.reason
	}
	return "mesh handshake: " + e.reason + ": " + e.err.Error()
}

func (e *handshakeError) Unwrap() error { return e.err }

func hsErr(reason string, err error) error { return &handshakeError{reason: reason, err: err} }

// tlsErr classifies a failed TLS handshake: a deadline is a timeout like any
// other silent handshake.
func tlsErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return hsErr("timeout", err)
	}
	return hsErr("tls", err)
}

// ioReason classifies a read or write error during the handshake.
func ioReason(ctx context.Context, err error) string {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return "shutdown"
	case errors.Is(err, errFrameTooLarge):
		return "frame_too_large"
	case errors.Is(err, errMalformed):
		return "malformed"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.EPIPE):
		return "closed"
	}
	return "io"
}

// reasonOf is the Stats.HandshakeFailures reason of a handshake error.
func reasonOf(ctx context.Context, err error) string {
	var he *handshakeError
	if ctx.Err() != nil {
		return "shutdown"
	}
	if errors.As(err, &he) {
		return he.reason
	}
	return ioReason(ctx, err)
}

// selfHello is our hello with a fresh nonce.
func (m *Mesh) selfHello() (hello, error) {
	h := hello{Incarnation: m.inc, Start: m.start, MaxMessage: uint32(m.cfg.MaxMessageSize),
		Name: m.name, Addr: m.addr}
	if _, err := rand.Read(h.Nonce[:]); err != nil {
		return h, err
	}
	return h, nil
}

// watchShutdown makes blocked I/O on c fail when the mesh closes.
func (m *Mesh) watchShutdown(c net.Conn) (stop func() bool) {
	return context.AfterFunc(m.ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
}

func (m *Mesh) serveInbound(raw net.Conn) {
	defer m.wg.Done()
	pendingDone := false
	donePending := func() {
		if !pendingDone {
			pendingDone = true
			m.pending.Add(-1)
		}
	}
	defer donePending()
	raw.SetDeadline(time.Now().Add(m.cfg.HandshakeTimeout))
	stop := m.watchShutdown(raw)
	l, err := m.acceptHandshake(raw)
	stop()
	donePending()
	if err != nil {
		m.failHandshake(raw.RemoteAddr(), false, reasonOf(m.ctx, err), err)
		raw.Close()
		return
	}
	l.start()
}

// acceptHandshake runs the acceptor side; on success the link is admitted
// and the welcome sent.
func (m *Mesh) acceptHandshake(raw net.Conn) (*link, error) {
	conn := raw
	if m.cfg.TLS != nil {
		tc := tls.Server(raw, m.cfg.TLS)
		if err := tc.HandshakeContext(m.ctx); err != nil {
			return nil, tlsErr(err)
		}
		conn = tc
	}
	var pre [preambleLen]byte
	if _, err := io.ReadFull(conn, pre[:]); err != nil {
		return nil, hsErr(ioReason(m.ctx, err), err)
	}
	if [4]byte(pre[:4]) != magic {
		return nil, hsErr("bad_magic", fmt.Errorf("got % x", pre[:4]))
	}
	if pre[4] != protoVersion {
		conn.Write(appendFrame(appendPreamble(nil), frameRefuse, []byte{refuseBadVersion}))
		return nil, hsErr("bad_version", fmt.Errorf("version %d", pre[4]))
	}
	fr := frameReader{r: conn, limit: handshakeFrameLimit}
	typ, hbody, err := fr.next()
	if err != nil {
		return nil, hsErr(ioReason(m.ctx, err), err)
	}
	if typ != frameHello {
		return nil, hsErr("unexpected_frame", fmt.Errorf("frame type 0x%02x, want hello", typ))
	}
	peer, err := parseHello(hbody)
	if err != nil {
		return nil, hsErr("malformed", err)
	}
	if peer.Name == m.name {
		code, reason := refuseSelf, "self"
		if peer.Incarnation != m.inc {
			code, reason = refuseNameConflict, "name_conflict"
		}
		conn.Write(appendFrame(appendPreamble(nil), frameRefuse, []byte{code}))
		return nil, hsErr(reason, fmt.Errorf("peer %s incarnation %d", peer.Name, peer.Incarnation))
	}
	self, err := m.selfHello()
	if err != nil {
		return nil, hsErr("io", err)
	}
	cbody := appendHello(nil, &self)
	if _, err := conn.Write(appendFrame(appendPreamble(nil), frameChallenge, cbody)); err != nil {
		return nil, hsErr(ioReason(m.ctx, err), err)
	}
	typ, pbody, err := fr.next()
	if err != nil {
		return nil, hsErr(ioReason(m.ctx, err), err)
	}
	if typ != frameProof {
		return nil, hsErr("unexpected_frame", fmt.Errorf("frame type 0x%02x, want proof", typ))
	}
	proof, err := parseMAC(pbody)
	if err != nil {
		return nil, hsErr("malformed", err)
	}
	if !hmac.Equal(proof, handshakeMAC(m.cookie, labelDialer, hbody, cbody)) {
		conn.Write(appendFrame(nil, frameRefuse, []byte{refuseBadCookie}))
		return nil, hsErr("bad_cookie", fmt.Errorf("proof from %s did not verify", peer.Name))
	}
	l, old, code := m.admit(peer, conn, raw, false, nil, 0)
	if l == nil {
		conn.Write(appendFrame(nil, frameRefuse, []byte{code}))
		return nil, hsErr(refuseReason(code), fmt.Errorf("refused %s", peer.Name))
	}
	if old != nil {
		old.fail(ReasonRestarted)
	}
	welcome := appendFrame(nil, frameWelcome, handshakeMAC(m.cookie, labelAcceptor, hbody, cbody))
	if _, err := conn.Write(welcome); err != nil {
		l.fail(ReasonClosed)
		return nil, hsErr(ioReason(m.ctx, err), err)
	}
	m.log.Debug("mesh: accepted", "node", peer.Name, "remote", raw.RemoteAddr().String())
	return l, nil
}

// clientHandshake runs the dialer side over conn up to and including the
// check of the acceptor's welcome. expect, if not empty, is the name the
// dialer meant to reach.
func clientHandshake(conn net.Conn, cookie []byte, self hello, expect string) (hello, error) {
	hbody := appendHello(nil, &self)
	if _, err := conn.Write(appendFrame(appendPreamble(nil), frameHello, hbody)); err != nil {
		return hello{}, err
	}
	var pre [preambleLen]byte
	if _, err := io.ReadFull(conn, pre[:]); err != nil {
		return hello{}, err
	}
	if [4]byte(pre[:4]) != magic {
		return hello{}, hsErr("bad_magic", fmt.Errorf("got % x", pre[:4]))
	}
	if pre[4] != protoVersion {
		return hello{}, hsErr("bad_version", fmt.Errorf("version %d", pre[4]))
	}
	fr := frameReader{r: conn, limit: handshakeFrameLimit}
	typ, cbody, err := fr.next()
	if err != nil {
		return hello{}, err
	}
	switch typ {
	case frameChallenge:
	case frameRefuse:
		code, err := parseRefuse(cbody)
		if err != nil {
			return hello{}, hsErr("malformed", err)
		}
		return hello{}, hsErr(refuseReason(code), errors.New("refused by peer"))
	default:
		return hello{}, hsErr("unexpected_frame", fmt.Errorf("frame type 0x%02x, want challenge", typ))
	}
	peer, err := parseHello(cbody)
	if err != nil {
		return hello{}, hsErr("malformed", err)
	}
	if expect != "" && peer.Name != expect {
		return hello{}, hsErr("wrong_node", fmt.Errorf("reached %s, want %s", peer.Name, expect))
	}
	if peer.Name == self.Name {
		return hello{}, hsErr("self", errors.New("reached a node with our own name"))
	}
	if peer.Nonce == self.Nonce {
		return hello{}, hsErr("malformed", errors.New("peer echoed our nonce"))
	}
	proof := appendFrame(nil, frameProof, handshakeMAC(cookie, labelDialer, hbody, cbody))
	if _, err := conn.Write(proof); err != nil {
		return hello{}, err
	}
	typ, body, err := fr.next()
	if err != nil {
		return hello{}, err
	}
	switch typ {
	case frameWelcome:
	case frameRefuse:
		code, err := parseRefuse(body)
		if err != nil {
			return hello{}, hsErr("malformed", err)
		}
		return hello{}, hsErr(refuseReason(code), errors.New("refused by peer"))
	default:
		return hello{}, hsErr("unexpected_frame", fmt.Errorf("frame type 0x%02x, want welcome", typ))
	}
	mac, err := parseMAC(body)
	if err != nil {
		return hello{}, hsErr("malformed", err)
	}
	if !hmac.Equal(mac, handshakeMAC(cookie, labelAcceptor, hbody, cbody)) {
		return hello{}, hsErr("bad_cookie", fmt.Errorf("welcome from %s did not verify", peer.Name))
	}
	return peer, nil
}

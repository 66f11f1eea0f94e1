package mesh

import (
	"cmp"
	"container/list"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/macula-io/cluster/internal/ratelimit"
)

// Link describes one live link.
type Link struct {
	Node        string    // peer name
	Addr        string    // peer's advertised address
	Incarnation uint64    // peer's incarnation
	Since       time.Time // when the link came up
	Outbound    bool      // this node dialled the connection

	// Tags are the peer's tags (its Config.Tags), a copy; nil = none.
	Tags map[string]string
}

// Stats are counters since Start, for metrics. Maps are copies. LinksDown,
// HandshakeFailures and ProtocolErrors hold every known reason from Start
// (at 0 until it first happens), so each metrics series exists before its
// first event.
type Stats struct {
	Links             uint64            // links up now
	LinksUp           uint64            // NodeUp events
	LinksDown         map[string]uint64 // NodeDown events by reason
	HandshakeFailures map[string]uint64 // failed handshakes (both directions) by reason; see doc.go
	ProtocolErrors    map[string]uint64 // links closed for a bad frame after the handshake, by reason
	DuplicateLinks    uint64            // connections dropped because the pair already had a link or a winning dial (crossed dials: normal; counted by the node that drops them, never in HandshakeFailures)
	LinkReplacements  uint64            // links replaced by a newer connection of the same peer incarnation, without NodeDown/NodeUp (crossed dials both committed, a peer re-dialling)
	PendingHandshakes uint64            // inbound handshakes in progress now
	Dials             uint64            // outbound TCP connection attempts
	DialFailures      uint64            // outbound TCP connection attempts that failed
	ConnectRestarts   uint64            // outbound TCP connects restarted because the peer was reported again while the connect waited on a SYN retransmission (not in DialFailures; see Connect)
	MessagesSent      uint64            // messages written to a link
	MessagesReceived  uint64            // messages read from a link
	BytesSent         uint64            // payload bytes of MessagesSent
	BytesReceived     uint64            // payload bytes of MessagesReceived
	Probes            ProbeStats        // the failure detector (probe.go)

	// Handshakes are the durations of the successful handshakes (hsstats.go).
	Handshakes HandshakeHistogram
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
	probes *prober         // nil: probes off (NoProbes, or the UDP port was busy)
	ctx    context.Context // cancelled by Close: ends dials, handshakes, backoffs
	cancel context.CancelFunc

	mu        sync.RWMutex
	closed    bool
	links     map[string]*link      // by peer name
	addrLinks map[string]*link      // by advertised and by dialled address
	peers     map[string]*peerState // dial targets, by name or (address-only) by address
	left      map[leftEntry]time.Time
	leftNames map[string]time.Time
	held      map[string]*held // members whose link broke, being relinked (flap.go)

	// dial scheduler (dial.go), guarded by mu
	freshQ        *list.List // fresh dial targets in arrival order
	dq            dialQueue  // retries by due time
	dialTurn      int
	dialSeq       uint64
	dialsInFlight int
	dialWake      chan struct{}
	addrDial      map[string]*addrDialState // per-address dial state (dial.go)

	peersFlush *time.Timer // pending peer deltas (table.go), guarded by mu

	isClosed  atomic.Bool
	pending   atomic.Int64
	adm       admission // fair share of pending handshakes, throttling (admission.go)
	wg        sync.WaitGroup
	closeOnce sync.Once
	st        counters
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
		cfg:       cfg,
		name:      cfg.Name,
		cookie:    []byte(cfg.Cookie),
		log:       cfg.Logger,
		warns:     ratelimit.New(warnPeriod, 0),
		links:     make(map[string]*link),
		addrLinks: make(map[string]*link),
		peers:     make(map[string]*peerState),
		left:      make(map[leftEntry]time.Time),
		leftNames: make(map[string]time.Time),
		held:      make(map[string]*held),
		dialWake:  make(chan struct{}, 1),
		freshQ:    list.New(),
		start:     time.Now().UnixNano(),
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.st.init()
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
	if !cfg.NoProbes {
		if err := m.startProbes(); err != nil {
			// Liveness falls back to the links' silence limit.
			m.log.Warn("mesh: probes disabled", "err", err)
		}
	}
	m.wg.Add(2)
	go m.acceptLoop()
	go m.dialScheduler()
	m.log.Info("mesh: listening", "node", m.name, "addr", m.addr, "listen", ln.Addr().String(),
		"incarnation", m.inc, "tls", cfg.TLS != nil)
	return m, nil
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
// Calling it again is harmless; a new addr replaces the old one. Called
// again for the same addr (the strategy hears the peer again: a partition
// healed), it moves a pending retry to now, lifts the address backoff this
// peer's failed dials earned, and restarts a TCP connect of ours that has
// waited 200 ms or more on a SYN retransmission (Stats.ConnectRestarts).
//
// name may be "": the mesh dials addr and links with whichever node answers
// there (its name is in the NodeUp event, Dialled is addr); a live link
// that was dialled at addr or that advertises addr satisfies it. Use this
// for peers known only by address (DNS records, "host:port" lists).
//
// Invalid arguments are logged and ignored; Connect to this node is
// ignored.
func (m *Mesh) Connect(name, addr string) {
	if name != "" {
		if err := validateName(name); err != nil {
			m.log.Warn("mesh: connect: ignored", "node", name, "err", err)
			return
		}
	}
	if err := validateAddr(addr); err != nil {
		m.log.Warn("mesh: connect: ignored", "node", name, "addr", addr, "err", err)
		return
	}
	if name == m.name || (name == "" && addr == m.addr) {
		return
	}
	key := name
	if key == "" {
		key = addr
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	ps := m.peers[key]
	if ps == nil {
		if len(m.peers) >= maxPeerStates {
			m.log.Warn("mesh: connect: peer table full, ignored", "peer", key, "limit", maxPeerStates)
			return
		}
		ps = newPeerState(key, name)
		m.peers[key] = ps
	}
	changed := ps.addr != addr
	ps.addr = addr
	ps.wanted = true
	m.addrFoundLocked(addr, key)
	if !changed {
		m.restartStuckConnectLocked(ps, time.Now())
	}
	if changed && !ps.dialing {
		// A new address: the first attempt at it goes first.
		ps.failures = 0
		ps.bo.reset()
		m.unscheduleLocked(ps)
	}
	if m.needDialLocked(ps) {
		m.scheduleLocked(ps, time.Time{})
	}
}

// Forget stops (re)dialling key: a name given to Connect, or the address of
// an address-only Connect. A live link stays up.
func (m *Mesh) Forget(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.forgetLocked(key)
}

func (m *Mesh) forgetLocked(key string) {
	ps := m.peers[key]
	if ps == nil {
		return
	}
	ps.wanted = false
	ps.transitive = 0
	ps.gen++
	m.gcPeerLocked(ps)
}

// Disconnect is Forget plus closing the link, if any: NodeDown with reason
// "disconnected" here, reason "closed" at the peer. The peer may connect
// again if it wants this node.
//
// key may also be an address given to an address-only Connect: the link
// dialled at or advertising that address is closed.
func (m *Mesh) Disconnect(key string) {
	m.mu.Lock()
	m.forgetLocked(key)
	l := m.links[key]
	if l == nil {
		l = m.addrLinks[key]
	}
	name := key
	if l != nil {
		name = l.peer.Name
		m.removeLocked(l, ReasonDisconnected)
	}
	if h := m.held[name]; h != nil {
		m.dropHeldLocked(h, ReasonDisconnected)
	}
	m.mu.Unlock()
	if l != nil {
		// Tell the peer first that we dropped it on purpose (a UDP
		// notice, flap.go): otherwise it would take the closed stream for
		// a flap under a live member and redial.
		if m.probes != nil {
			m.probes.tellNotice(l, probeDropped)
		}
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
	var prev *link
	for {
		m.mu.RLock()
		l := m.links[node]
		h := m.held[node]
		m.mu.RUnlock()
		if l == nil && h != nil {
			// The link is being re-established (flap.go): queue for
			// the new link.
			wait := h.q.push(payload)
			if wait == nil {
				return nil
			}
			select {
			case <-wait:
				continue
			case <-h.dropped:
				return fmt.Errorf("mesh: send to %s: %w", node, ErrNotConnected)
			case <-ctx.Done():
				return fmt.Errorf("mesh: send to %s: %w", node, ctx.Err())
			}
		}
		if l == nil || l == prev {
			// prev: the link we tried went down and was not replaced.
			if m.isClosed.Load() {
				return ErrClosed
			}
			return fmt.Errorf("mesh: send to %s: %w", node, ErrNotConnected)
		}
		if len(payload) > l.maxSend {
			return fmt.Errorf("mesh: send to %s: %w: %d bytes, peer's limit %d", node, ErrTooLarge, len(payload), l.maxSend)
		}
		select {
		case <-l.done:
			prev = l
			continue
		default:
		}
		wait := l.q.push(payload)
		if wait == nil {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("mesh: send to %s: %w", node, err)
		}
		select {
		case <-wait:
			// Room (or the queue was taken): try again.
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
	if m.probes != nil {
		s.Probes = m.probes.stats()
	}
	s.Probes.LinkReconnects = m.st.reconnects.Load()
	s.Probes.HeldSilent = m.st.heldSilent.Load()
	s.Probes.HeldExtended = m.st.heldExtended.Load()
	return s
}

// Close leaves the mesh: it stops accepting and dialling, sends goodbye on
// every link (peers report NodeDown reason "left" at once), reports NodeDown
// reason "shutdown" for each link, and returns once every goroutine has
// ended and every event has been delivered to OnEvent. It is idempotent.
func (m *Mesh) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		m.isClosed.Store(true)
		if m.peersFlush != nil {
			m.peersFlush.Stop()
			m.peersFlush = nil
		}
		ls := make([]*link, 0, len(m.links))
		for _, l := range m.links {
			l.removed = true
			ls = append(ls, l)
		}
		clear(m.links)
		clear(m.addrLinks)
		hs := make([]*held, 0, len(m.held))
		for _, h := range m.held {
			if h.timer != nil {
				h.timer.Stop()
			}
			close(h.dropped)
			hs = append(hs, h)
		}
		clear(m.held)
		m.mu.Unlock()
		m.wakeDialer()
		slices.SortFunc(ls, func(a, b *link) int { return cmp.Compare(a.peer.Name, b.peer.Name) })

		m.cancel()
		m.ln.Close()
		if m.probes != nil {
			m.probes.close()
		}
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
		slices.SortFunc(hs, func(a, b *held) int { return cmp.Compare(a.link.peer.Name, b.link.peer.Name) })
		for _, h := range hs {
			m.mu.Lock()
			m.emitDownLocked(h.link, ReasonShutdown)
			m.mu.Unlock()
		}
		m.log.Info("mesh: closed", "node", m.name)
	})
	return nil
}

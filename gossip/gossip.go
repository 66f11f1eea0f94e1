package gossip

import (
	"bytes"
	"cmp"
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/internal/mcast"
	"github.com/macula-io/cluster/internal/ratelimit"
)

// ErrClosed is returned by calls after Close (the module's one ErrClosed).
var ErrClosed = discovery.ErrClosed

// Tunables (variables so tests can shorten them).
var (
	// extraGap is the minimum time between two out-of-schedule heartbeats
	// (BroadcastNow, or the answer to a newly discovered node). Requests
	// inside the gap are coalesced into one heartbeat at its end, never
	// dropped.
	extraGap = 100 * time.Millisecond
	// warnPeriod is the per-source period of hostile-traffic warnings.
	warnPeriod = 10 * time.Second
	// answerSpreadPerNode: see answerDelay.
	answerSpreadPerNode = 2 * time.Millisecond
)

// Entry is one row of the discovered table.
type Entry struct {
	// Node is the node field as heard: "name@host:port", or "name@host"
	// for a node that cannot be dialled (an Erlang macula node).
	Node string
	discovery.Peer
	From      netip.AddrPort // source of the last heartbeat
	FirstSeen time.Time
	LastSeen  time.Time
}

// Stats are counters since Start. Rejected is keyed by reason: "too_long",
// "malformed", "bad_node", "unsigned", "bad_signature", "wrong_destination",
// "table_full", "undialable", "superseded" (every key is present).
type Stats struct {
	// HeartbeatsSent counts datagrams sent: one per interface per heartbeat.
	HeartbeatsSent uint64
	// SendErrors counts datagrams the kernel refused.
	SendErrors uint64
	// PacketsReceived counts every datagram read from the socket.
	PacketsReceived uint64
	// HeartbeatsReceived counts valid heartbeats of other nodes that
	// reached the table (not own, not rejected).
	HeartbeatsReceived uint64
	// OwnIgnored counts our own heartbeats heard back (same node field).
	OwnIgnored uint64
	// TwinsIgnored counts "name@host" heartbeats (no port) of a name heard
	// with a port: the Erlang-form twin of a node that also serves Erlang
	// distribution (Config.ErlangNode), not a peer of its own.
	TwinsIgnored uint64
	Rejected     map[string]uint64
	// Discovered and Lost count table changes; Peers is the current table
	// size.
	Discovered uint64
	Lost       uint64
	Peers      uint64
	// Evicted counts entries dropped to make room for a new node in a full
	// table (also counted in Lost).
	Evicted uint64
	// Linked is how many peers the caller reported linked (Linked); Quiet
	// how many heartbeats the kernel filter holds, dropped but one in 64:
	// the linked peers' and our own (Linked+1 when all fit; 0 where no
	// filter can be attached: every heartbeat is read). FilterUpdates
	// counts filters attached.
	Linked, Quiet, FilterUpdates uint64
	// Revived counts peers reported Found again because they were heard
	// after more than two intervals of silence while not linked.
	Revived uint64
	// NotAnswered counts newcomers (and revived peers) we did not answer:
	// three nodes whose names follow theirs did (answerPeer).
	NotAnswered uint64
}

var reasons = [...]string{ReasonTooLong, ReasonMalformed, ReasonBadNode, ReasonUnsigned,
	ReasonBadSignature, ReasonWrongDestination, ReasonTableFull, ReasonUndialable, ReasonSuperseded}

func reasonIndex(r string) int { return slices.Index(reasons[:], r) }

// Gossip is a running heartbeat announcer and listener.
type Gossip struct {
	s        settings
	conn     packetConn
	pkt      []byte // our heartbeat
	erlPkt   []byte // the Erlang-form twin of pkt (Config.ErlangNode); nil = none
	groupStr string

	ifaces   atomic.Pointer[ifaceSet]
	selfName string        // our name ("name@host"), as the mesh compares names
	nudge    chan struct{} // out-of-schedule heartbeat wanted
	urgent   atomic.Bool   // BroadcastNow: the next nudge goes at once
	rx       chan received
	done     chan struct{}
	wg       sync.WaitGroup
	close    sync.Once
	warn     *ratelimit.PerKey // hostile traffic, per source
	opWarn   *ratelimit.PerKey // local trouble: send, scan

	// table: written only by the table goroutine, read under mu by Peers
	// (table.go).
	mu          sync.Mutex
	table       map[string]*row   // by Node
	byName      map[string]string // Name -> Node
	probation   *list.List        // of *row, unverified, most recently heard first
	established *list.List        // of *row, verified, most recently heard first
	linkedRows  *list.List        // of *row, linked (quiet.go): never evicted, never expired
	own         atomic.Pointer[ownAddrs]

	// linked peers and the kernel filter (quiet.go): notes from Linked
	// under linkMu, the rest owned by the table goroutine
	linkMu      sync.Mutex
	linkNotes   map[string]bool // name -> linked, not yet applied
	linkWake    chan struct{}
	linkedNames map[string]bool
	quiet       quietState

	// host-name lookups (names.go), owned by the table goroutine
	names    map[string]*nameState
	lookups  int
	resolved chan nameResult
	ctx      context.Context // cancelled by Close: ends lookups
	cancel   context.CancelFunc

	// watcher state (watcher goroutine, or Start before it runs)
	joined     map[string]iface  // by name
	joinFailed map[string]string // name -> last error logged

	// counters (Stats)
	sent, sendErrs, packets, heard, ownHeard atomic.Uint64
	twins                                    atomic.Uint64
	discovered, lost, peers, evicted         atomic.Uint64
	linked, quietN, filterUpdates, revived   atomic.Uint64
	notAnswered                              atomic.Uint64
	rejected                                 [len(reasons)]atomic.Uint64
}

type received struct {
	pkt  []byte // the datagram (a copy)
	node string
	peer discovery.Peer
	from netip.AddrPort
	at   time.Time
}

// Start validates cfg, binds the port, joins the interfaces and starts
// announcing and listening. ctx bounds the start only.
func Start(ctx context.Context, cfg Config) (*Gossip, error) {
	s, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	g := &Gossip{
		s:           s,
		pkt:         AppendHeartbeat(nil, s.selfNode, s.keyring),
		erlPkt:      erlPacket(s),
		nudge:       make(chan struct{}, 1),
		rx:          make(chan received, 64),
		done:        make(chan struct{}),
		warn:        ratelimit.New(warnPeriod, 0),
		opWarn:      ratelimit.New(warnPeriod, 0),
		table:       make(map[string]*row),
		probation:   list.New(),
		names:       make(map[string]*nameState),
		resolved:    make(chan nameResult, maxLookups),
		established: list.New(),
		linkedRows:  list.New(),
		linkNotes:   make(map[string]bool),
		linkWake:    make(chan struct{}, 1),
		linkedNames: make(map[string]bool),
		quiet:       quietState{maxInsns: maxFilterInsns},
		byName:      make(map[string]string),
		joined:      make(map[string]iface),
		joinFailed:  make(map[string]string),
	}
	if p, err := discovery.ParseNode(s.selfNode); err == nil {
		g.selfName = p.Name
	}
	g.groupStr = netip.AddrPortFrom(s.group, uint16(s.port)).String()
	if s.broadcast {
		g.groupStr = fmt.Sprintf("255.255.255.255:%d", s.port)
	}
	g.s.log = s.log.With("gossip", g.groupStr)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Fail fast on named interfaces that do not exist, before binding.
	for _, name := range s.ifaces {
		if _, err := net.InterfaceByName(name); err != nil {
			return nil, fmt.Errorf("%w %q: %w", ErrNoSuchInterface, name, err)
		}
	}
	if g.conn, err = listen(ctx, &g.s); err != nil {
		return nil, err
	}
	g.refreshOwn()
	if err := g.rescan(true); err != nil {
		g.conn.close()
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		g.conn.close() // drops the memberships too
		return nil, err
	}
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.wg.Add(4)
	go g.readLoop()
	go g.tableLoop()
	go g.announceLoop()
	go g.watchLoop()
	g.s.log.Info("gossip started", "node", s.selfNode, "interfaces", g.Interfaces(),
		"signed", s.keyring.Len() > 0, "interval", s.interval, "expiry", s.expiry)
	return g, nil
}

// Group is the address heartbeats go to: "230.1.1.251:45892",
// "[ff02::4d41:1]:45892", or "255.255.255.255:45892" in broadcast mode
// (each interface's own broadcast address is used).
func (g *Gossip) Group() string { return g.groupStr }

// Interfaces returns the names of the interfaces currently joined, sorted.
func (g *Gossip) Interfaces() []string {
	set := g.ifaces.Load()
	if set == nil {
		return nil
	}
	names := make([]string, len(set.list))
	for i, f := range set.list {
		names[i] = f.name
	}
	return names
}

// BroadcastNow asks for a heartbeat now. It does not block; requests closer
// than 100 ms to the previous out-of-schedule heartbeat are coalesced into
// one sent when the 100 ms have passed.
func (g *Gossip) BroadcastNow() {
	g.urgent.Store(true)
	g.answer()
}

// answer asks for an out-of-schedule heartbeat: at once after BroadcastNow,
// else after answerDelay. It does not block.
func (g *Gossip) answer() {
	select {
	case g.nudge <- struct{}{}:
	default:
	}
}

// Peers returns a copy of the discovered table, sorted by Node.
func (g *Gossip) Peers() []Entry {
	g.mu.Lock()
	out := make([]Entry, 0, len(g.table))
	for _, e := range g.table {
		out = append(out, e.Entry)
	}
	g.mu.Unlock()
	slices.SortFunc(out, func(a, b Entry) int { return cmp.Compare(a.Node, b.Node) })
	return out
}

// Stats returns the counters.
func (g *Gossip) Stats() Stats {
	st := Stats{
		HeartbeatsSent: g.sent.Load(), SendErrors: g.sendErrs.Load(),
		PacketsReceived: g.packets.Load(), HeartbeatsReceived: g.heard.Load(),
		OwnIgnored: g.ownHeard.Load(), TwinsIgnored: g.twins.Load(), Discovered: g.discovered.Load(), Lost: g.lost.Load(),
		Peers: g.peers.Load(), Evicted: g.evicted.Load(), Rejected: make(map[string]uint64, len(reasons)),
		Linked: g.linked.Load(), Quiet: g.quietN.Load(), FilterUpdates: g.filterUpdates.Load(), Revived: g.revived.Load(),
		NotAnswered: g.notAnswered.Load(),
	}
	for i, r := range reasons {
		st.Rejected[r] = g.rejected[i].Load()
	}
	return st
}

// Close stops announcing and listening and waits for every goroutine. It
// reports no Lost events. It is idempotent. After Close, Peers returns the
// table as it was, Stats the final counters, and BroadcastNow does nothing.
func (g *Gossip) Close() error {
	var err error
	g.close.Do(func() {
		close(g.done)
		g.cancel()
		err = g.conn.close()
		g.wg.Wait()
		g.s.log.Info("gossip stopped")
	})
	return err
}

func (g *Gossip) closed() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

func (g *Gossip) reject(reason string, from netip.AddrPort, err error) {
	g.rejected[reasonIndex(reason)].Add(1)
	switch reason {
	case ReasonUnsigned, ReasonBadSignature:
		key := from.Addr().String()
		if ok, suppressed := g.warn.Allow(key); ok {
			g.s.log.Warn("gossip: dropped unauthenticated heartbeat (wrong or missing secret?)",
				"from", from, "reason", reason, "suppressed", suppressed)
		}
	case ReasonTableFull:
		if ok, suppressed := g.warn.Allow("\x00table_full"); ok {
			g.s.log.Warn("gossip: discovered table full, dropping new node",
				"max_peers", g.s.maxPeers, "from", from, "suppressed", suppressed)
		}
	default:
		if g.s.log.Enabled(context.Background(), slog.LevelDebug) {
			g.s.log.Debug("gossip: dropped packet", "from", from, "reason", reason, "err", err)
		}
	}
}

// readLoop reads datagrams, checks destination, decodes and verifies them,
// and hands valid heartbeats of other nodes to the table goroutine.
func (g *Gossip) readLoop() {
	defer g.wg.Done()
	// Larger than MaxPacketSize so longer datagrams are seen as too long
	// (anything longer than buf is truncated, still too long).
	buf := make([]byte, 2*MaxPacketSize)
	for {
		n, dst, ifIndex, from, err := g.conn.read(buf)
		if err != nil {
			return // closed: the socket retries the errors it survives
		}
		at := time.Now()
		g.packets.Add(1)
		if !g.wantDestination(dst, ifIndex) {
			g.reject(ReasonWrongDestination, from, fmt.Errorf("destination %s on interface %d", dst, ifIndex))
			continue
		}
		node, p, err := parseHeartbeat(buf[:n], g.s.keyring)
		if err != nil {
			g.reject(Reason(err), from, err)
			continue
		}
		if node == g.s.selfNode || (node == g.s.erlNode && node != "") {
			g.ownHeard.Add(1)
			continue
		}
		if g.s.log.Enabled(context.Background(), slog.LevelDebug) {
			g.s.log.Debug("gossip: heartbeat", "node", node, "from", from)
		}
		select {
		case g.rx <- received{pkt: bytes.Clone(buf[:n]), node: node, peer: p, from: from, at: at}:
		case <-g.done:
			return
		}
	}
}

// wantDestination checks the destination of a datagram: the group in
// multicast mode; in broadcast mode the arrival interface's broadcast
// address or 255.255.255.255, on a joined interface.
func (g *Gossip) wantDestination(dst netip.Addr, ifIndex int) bool {
	if !g.s.broadcast {
		return dst == g.s.group
	}
	f, ok := g.ifaces.Load().byIndex(ifIndex)
	return ok && (dst == f.bcast || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}))
}

// tableLoop owns the discovered table: it applies heartbeats, expires
// silent peers and emits events, in order.
func (g *Gossip) tableLoop() {
	defer g.wg.Done()
	// The sweep runs only while some row can expire: linked rows do not
	// (quiet.go), and a node whose every peer is linked is not woken for
	// nothing each second.
	period := min(max(g.s.expiry/5, 10*time.Millisecond), time.Second)
	sweep := time.NewTicker(period)
	defer sweep.Stop()
	sweeping := true
	refilter := time.NewTimer(time.Hour)
	refilter.Stop()
	defer refilter.Stop()
	for {
		select {
		case <-g.done:
			return
		case r := <-g.rx:
			g.apply(r)
		case res := <-g.resolved:
			g.resolvedName(res)
		case now := <-sweep.C:
			g.expire(now)
		case <-g.linkWake:
			g.applyLinkNotes()
		case <-refilter.C:
			g.refilter()
		}
		if due, moved := g.quiet.schedule(); moved {
			refilter.Reset(time.Until(due))
		}
		if want := g.probation.Len()+g.established.Len() > 0; want != sweeping {
			sweeping = want
			if want {
				sweep.Reset(period)
			} else {
				sweep.Stop()
			}
		}
	}
}

// announceLoop sends the first heartbeat at once, then one every Interval
// +-10%, plus out-of-schedule ones on nudges (at most one per extraGap):
// at once for BroadcastNow, after answerDelay for the answer to a newcomer.
func (g *Gossip) announceLoop() {
	defer g.wg.Done()
	g.send()
	tick := time.NewTimer(jitter(g.s.interval))
	defer tick.Stop()
	pending := time.NewTimer(time.Hour)
	pending.Stop()
	defer pending.Stop()
	var pendingAt time.Time // zero: no out-of-schedule heartbeat scheduled
	var lastExtra time.Time
	for {
		select {
		case <-g.done:
			return
		case <-tick.C:
			g.send()
			tick.Reset(jitter(g.s.interval))
		case <-g.nudge:
			now := time.Now()
			at := now
			if !g.urgent.Swap(false) {
				at = now.Add(g.answerDelay())
			}
			at = later(at, lastExtra.Add(extraGap))
			if !pendingAt.IsZero() && !at.Before(pendingAt) {
				continue // one is already scheduled, no later than this
			}
			if at.After(now) {
				pendingAt = at
				pending.Reset(at.Sub(now))
				continue
			}
			pending.Stop()
			pendingAt = time.Time{}
			g.send()
			lastExtra = now
		case <-pending.C:
			pendingAt = time.Time{}
			g.send()
			lastExtra = time.Now()
		}
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// answerDelay is how long we wait before answering a newcomer whose name
// sorts higher than ours (see answerPeer): random in [d, 2d] with d = 2 ms per
// node in our table, d at most an eighth of the interval. Every node that
// hears a newcomer answers it, and every node hears every answer (it is
// multicast): N answers at once cost N*N wake-ups (at 50 nodes, 2,500 of
// about 100 us of CPU each on a small VM) in the very milliseconds in which
// the newcomer runs its N mesh handshakes. The answers of the nodes that
// dial the newcomer themselves are not needed for its links: delayed past
// those handshakes and spread, they come at about one per 2 ms whatever N,
// and the newcomer still learns each node within about 4N ms (at most a
// quarter of the interval) instead of an interval.
func (g *Gossip) answerDelay() time.Duration {
	d := min(time.Duration(g.peers.Load())*answerSpreadPerNode, g.s.interval/8)
	return d + rand.N(d+1)
}

// jitter returns d +-10%.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + time.Duration(rand.Int64N(int64(d/5)+1))
}

// send sends one heartbeat copy per joined interface.
func (g *Gossip) send() {
	set := g.ifaces.Load()
	if set == nil {
		return
	}
	for _, f := range set.list {
		dst := netip.AddrPortFrom(g.s.group, uint16(g.s.port))
		if g.s.broadcast {
			dst = netip.AddrPortFrom(f.bcast, uint16(g.s.port))
		}
		if err := g.write(f, dst); err != nil {
			if g.closed() {
				return // Close closed the socket under us
			}
			g.sendErrs.Add(1)
			if ok, suppressed := g.opWarn.Allow(f.name); ok {
				g.s.log.Warn("gossip: send failed", "interface", f.name, "to", dst, "err", err, "suppressed", suppressed)
			}
			continue
		}
		g.sent.Add(1)
		if g.s.log.Enabled(context.Background(), slog.LevelDebug) {
			g.s.log.Debug("gossip: heartbeat sent", "interface", f.name, "to", dst)
		}
	}
}

// write sends our heartbeat, then the Erlang-form twin when there is one
// (in this order, so that a listener hears the dialable form first).
func (g *Gossip) write(f iface, dst netip.AddrPort) error {
	if err := g.conn.write(g.pkt, f, dst); err != nil {
		return err
	}
	if g.erlPkt != nil {
		return g.conn.write(g.erlPkt, f, dst)
	}
	return nil
}

// erlPacket is the heartbeat of the Erlang-form node field, nil without one.
func erlPacket(s settings) []byte {
	if s.erlNode == "" {
		return nil
	}
	return AppendHeartbeat(nil, s.erlNode, s.keyring)
}

// watchLoop rescans interfaces when they change (and once at its start).
func (g *Gossip) watchLoop() {
	defer g.wg.Done()
	w := mcast.Watch(context.Background())
	defer w.Close()
	for {
		select {
		case <-g.done:
			return // closing the socket drops the memberships
		case <-w.C:
			g.refreshOwn()
			if err := g.rescan(false); err != nil {
				if ok, _ := g.opWarn.Allow("\x00scan"); ok {
					g.s.log.Warn("gossip: interface scan", "err", err)
				}
			}
		}
	}
}

// rescan joins wanted interfaces not yet joined, leaves joined ones no
// longer wanted (or vanished), and publishes the new set. At start it
// returns the Start errors.
func (g *Gossip) rescan(initial bool) error {
	want, missing, err := scan(&g.s)
	if err != nil {
		return err
	}
	if initial && len(missing) > 0 {
		return fmt.Errorf("%w %q", ErrNoSuchInterface, missing[0])
	}
	wanted := make(map[string]candidate, len(want))
	for _, c := range want {
		wanted[c.info.name] = c
	}
	for name, f := range g.joined {
		if c, ok := wanted[name]; ok && c.info.index == f.index {
			continue
		}
		if !g.s.broadcast {
			// Fails harmlessly when the interface is gone (the kernel
			// dropped the membership with it).
			_ = g.conn.leave(&net.Interface{Index: f.index, Name: f.name})
		}
		delete(g.joined, name)
		g.s.log.Info("gossip: left interface", "interface", name)
	}
	for name := range g.joinFailed {
		if _, ok := wanted[name]; !ok {
			delete(g.joinFailed, name) // bounded by the interfaces present
		}
	}
	var failures []string
	for _, c := range want {
		if f, ok := g.joined[c.info.name]; ok {
			if !f.src.Equal(c.info.src) || f.bcast != c.info.bcast {
				g.joined[c.info.name] = c.info // addresses changed
			}
			continue
		}
		if !g.s.broadcast {
			if err := g.conn.join(&c.ifi); err != nil {
				msg := err.Error()
				failures = append(failures, c.info.name+": "+msg)
				if g.joinFailed[c.info.name] != msg {
					g.joinFailed[c.info.name] = msg
					g.s.log.Warn("gossip: cannot join group", "interface", c.info.name, "err", err)
				}
				continue
			}
		}
		delete(g.joinFailed, c.info.name)
		g.joined[c.info.name] = c.info
		if !initial {
			g.s.log.Info("gossip: joined interface", "interface", c.info.name)
		}
	}
	if initial && len(g.joined) == 0 {
		what := "group " + g.s.group.String()
		if g.s.broadcast {
			what = "broadcast (no interface with an IPv4 broadcast address)"
		}
		detail := "no candidate interface is up"
		if len(g.s.ifaces) == 0 {
			detail = "no up, running, multicast-capable, non-loopback interface with an address"
		}
		if len(failures) > 0 {
			detail = strings.Join(failures, "; ")
		}
		return fmt.Errorf("%w: %s: %s", ErrNoInterface, what, detail)
	}
	list := make([]iface, 0, len(g.joined))
	for _, f := range g.joined {
		list = append(list, f)
	}
	slices.SortFunc(list, func(a, b iface) int { return cmp.Compare(a.name, b.name) })
	g.ifaces.Store(&ifaceSet{list: list})
	return nil
}

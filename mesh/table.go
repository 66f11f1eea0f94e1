package mesh

import (
	"cmp"
	"container/list"
	"context"
	"net"
	"slices"
	"time"
)

// peerState is what the mesh knows about a peer it dials. Guarded by
// Mesh.mu. It is keyed in Mesh.peers by name, or by address for an
// address-only Connect (the name is learned in the handshake).
type peerState struct {
	key        string // Mesh.peers key: name, or addr when name is ""
	name       string // the name the handshake must show; "" = any
	addr       string
	wanted     bool // Connect: redial until linked and after a drop
	yielded    bool // the next fresh dial waited yieldDelay (dial.go); cleared on link up
	transitive int  // dial attempts left for a peer learned from a peer
	pendingOut bool // our outbound connection is connected and in its handshake
	gen        uint64

	// dial scheduler (see dial.go)
	dialing  bool          // a dial goroutine runs for it
	fresh    *list.Element // in Mesh.freshQ, nil when not there
	qidx     int           // index in Mesh.dq (retries), -1 when not there
	due      time.Time     // when the next dial may start
	seq      uint64        // arrival order in the queue
	failures int           // failed attempts since the last success
	bo       backoff
	// connecting: the TCP connect of our dial while it runs (cancelling it
	// restarts it: restartStuckConnectLocked), zero otherwise.
	connecting struct {
		since  time.Time
		cancel context.CancelCauseFunc
	}
}

func newPeerState(key, name string) *peerState {
	return &peerState{key: key, name: name, qidx: -1}
}

// --- link table (all *Locked methods need m.mu held) ---

// emitLocked hands e to the sink, in table order. The sink must not block
// (Config.OnEvent).
func (m *Mesh) emitLocked(e Event) {
	if e.Kind == NodeUp {
		m.log.Debug("mesh: link up", "node", e.Node, "addr", e.Addr, "incarnation", e.Incarnation)
	} else {
		m.log.Debug("mesh: link down", "node", e.Node, "incarnation", e.Incarnation, "reason", string(e.Reason))
	}
	if m.cfg.OnEvent != nil {
		m.cfg.OnEvent(e)
	}
}

func (m *Mesh) emitUpLocked(l *link) {
	m.st.linksUp.Add(1)
	m.emitLocked(Event{Kind: NodeUp, Node: l.peer.Name, Addr: l.peer.Addr, Dialled: l.dialled,
		Incarnation: l.peer.Incarnation, Tags: decodeTags(l.peer.Tags), Time: time.Now()})
}

func (m *Mesh) emitDownLocked(l *link, r Reason) {
	m.st.count(&m.st.linksDown, string(r))
	m.emitLocked(Event{Kind: NodeDown, Node: l.peer.Name, Addr: l.peer.Addr, Dialled: l.dialled,
		Incarnation: l.peer.Incarnation, Reason: r, Time: time.Now()})
}

// removeLocked takes l out of the table and reports NodeDown(r). The caller
// closes l (l.fail) after releasing m.mu.
func (m *Mesh) removeLocked(l *link, r Reason) {
	if l.removed {
		return
	}
	m.unlinkLocked(l)
	if r == ReasonLeft {
		m.rememberLeftLocked(l.peer)
	}
	m.probeLinkDownLocked(l)
	m.emitDownLocked(l, r)
}

// unlinkLocked takes l out of the table without an event.
func (m *Mesh) unlinkLocked(l *link) {
	l.removed = true
	if m.links[l.peer.Name] == l {
		delete(m.links, l.peer.Name)
	}
	for _, a := range [2]string{l.peer.Addr, l.dialled} {
		if a != "" && m.addrLinks[a] == l {
			delete(m.addrLinks, a)
		}
	}
}

// linkDown is called once per link when it fails. If the link is still in
// the table it is removed with NodeDown(r), and the peers that wanted it
// (by name, or by one of its addresses) are redialled; unless the failure
// may be a flap under a live member (flap.go).
func (m *Mesh) linkDown(l *link, r Reason) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l.removed {
		return
	}
	if m.flapCandidateLocked(l, r) {
		m.holdLocked(l, r) // flap.go: NodeDown only if the member is gone
		return
	}
	m.removeLocked(l, r)
	m.redialLocked(l, false)
}

// leftEntry is a node incarnation that said goodbye.
type leftEntry struct {
	name string
	inc  uint64
}

// rememberLeftLocked records that the incarnation of peer said goodbye, so
// a connection from it that was already in flight (or a transitive dial to
// it from a peer list older than the goodbye) does not bring it back as a
// ghost. Bounded: at most maxPeerStates entries, each kept for leftMemory.
func (m *Mesh) rememberLeftLocked(peer hello) {
	now := time.Now()
	pruneOld(m.left, now)
	pruneOld(m.leftNames, now)
	m.left[leftEntry{peer.Name, peer.Incarnation}] = now
	m.leftNames[peer.Name] = now
}

// pruneOld keeps a goodbye table below maxPeerStates: expired entries go
// first, then arbitrary ones.
func pruneOld[K comparable](tab map[K]time.Time, now time.Time) {
	if len(tab) < maxPeerStates {
		return
	}
	for k, t := range tab {
		if now.Sub(t) > leftMemory || len(tab) >= maxPeerStates {
			delete(tab, k)
		}
	}
}

// hasLeftLocked reports whether this incarnation of peer said goodbye
// recently.
func (m *Mesh) hasLeftLocked(name string, inc uint64) bool {
	t, ok := m.left[leftEntry{name, inc}]
	return ok && time.Since(t) <= leftMemory
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
//
// dialled is the address we dialled (outbound), "" for an inbound
// connection; ps and gen are the dialled peer's state (nil inbound).
func (m *Mesh) admit(peer hello, conn, raw net.Conn, dialled string, ps *peerState, gen uint64) (l, old *link, refuse byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	outbound := ps != nil
	if outbound {
		ps.pendingOut = false
	}
	if m.closed {
		return nil, nil, refuseShutdown
	}
	if outbound && ps.gen != gen {
		// Forgotten or disconnected while we dialled.
		return nil, nil, refuseForgotten
	}
	if m.hasLeftLocked(peer.Name, peer.Incarnation) {
		// This process said goodbye; a connection of it that was in
		// flight must not bring it back.
		return nil, nil, refuseLeft
	}
	reason := Reason("")
	var adopt *held
	if h := m.held[peer.Name]; h != nil {
		// The member's link broke and it is being relinked (flap.go).
		switch c := compareIncarnation(peer, h.link.peer); {
		case c < 0:
			return nil, nil, refuseStale
		case c > 0:
			m.dropHeldLocked(h, ReasonRestarted)
		default:
			adopt = h
		}
	}
	// silent: a link of the same incarnation replaced by a newer connection
	// (crossed dials that both acceptors committed to, a peer re-dialling a
	// link it gave up): the member did not change, only its TCP connection,
	// so no NodeDown/NodeUp. A new incarnation is a restart: both events.
	silent := false
	if cur := m.links[peer.Name]; cur != nil {
		switch c := compareIncarnation(peer, cur.peer); {
		case c < 0:
			return nil, nil, refuseStale
		case c > 0:
			reason = ReasonRestarted
		case outbound:
			silent = true
			reason = ReasonClosed
		default:
			curWins := cur.outbound && m.name < peer.Name
			if curWins {
				m.st.duplicates.Add(1)
				return nil, nil, refuseDuplicate
			}
			silent = true
			reason = ReasonClosed
		}
		old = cur
	} else if adopt == nil && !outbound && m.name < peer.Name && m.dialingLocked(peer) {
		// (A held member takes the first connection that works: our own
		// dial may be stuck where the old link broke.)
		m.st.duplicates.Add(1)
		return nil, nil, refuseDuplicate
	}
	if old != nil && silent {
		// Same process, new connection: swap links under the member; the
		// new link takes over the queue.
		m.unlinkLocked(old)
		m.st.relinks.Add(1)
	} else if old != nil {
		m.removeLocked(old, reason)
	}
	if p := m.peers[peer.Name]; p != nil {
		p.yielded = false // the next fresh dial after this link yields again
	}
	l = newLink(m, peer, conn, raw, outbound)
	l.dialled = dialled
	m.links[peer.Name] = l
	m.addrLinks[peer.Addr] = l
	if dialled != "" {
		m.addrLinks[dialled] = l
	}
	switch {
	case adopt != nil:
		m.adoptLocked(adopt, l)
	case old != nil && silent:
		l.q, l.prev = old.q, old
		m.st.reconnects.Add(1)
	default:
		m.emitUpLocked(l)
	}
	m.probeLinkUpLocked(l)
	m.peersChangedLocked(l)
	return l, old, 0
}

// dialingLocked reports whether our own outbound handshake to peer is in
// progress: dialled by name, or by the address the peer advertises.
func (m *Mesh) dialingLocked(peer hello) bool {
	if p := m.peers[peer.Name]; p != nil && p.pendingOut {
		return true
	}
	p := m.peers[peer.Addr]
	return p != nil && p.name == "" && p.pendingOut
}

// compareIncarnation orders two incarnations of one name: by start time,
// then by incarnation number.
func compareIncarnation(a, b hello) int {
	if c := cmp.Compare(a.Start, b.Start); c != 0 {
		return c
	}
	return cmp.Compare(a.Incarnation, b.Incarnation)
}

// peersChangedLocked: the link added was admitted. It gets our whole peer
// list at once. A peer that dials what lists name (featTransitive) then
// dials every link of ours it lacks: the list is taken when its writer
// runs, after the admission, so of any two of our links the later one is
// told of the earlier one. Any other peer is also announced to our other
// links (a delta), with the other deltas of the next peerDeltaDelay (see
// flushPeerDeltas), so that they dial it.
func (m *Mesh) peersChangedLocked(added *link) {
	if m.cfg.NoTransitive {
		return
	}
	added.peersFull, added.peersNew = true, nil
	if added.peer.Features&featTransitive == 0 {
		m.queueDeltasLocked(added)
	}
	added.kickPeers()
}

// queueDeltasLocked announces added to every other link, with the other
// deltas of the next peerDeltaDelay.
func (m *Mesh) queueDeltasLocked(added *link) {
	info := peerInfo{Name: added.peer.Name, Addr: added.peer.Addr}
	queued := false
	for _, l := range m.links {
		if l == added {
			continue
		}
		if !l.peersFull {
			if len(l.peersNew) >= maxPeersPerFrame {
				l.peersFull, l.peersNew = true, nil
			} else {
				l.peersNew = append(l.peersNew, info)
			}
		}
		queued = true
	}
	if queued && m.peersFlush == nil && !m.closed {
		m.peersFlush = time.AfterFunc(peerDeltaDelay, m.flushPeerDeltas)
	}
}

// kickPeers has l's writer send what peersToSend holds for it.
func (l *link) kickPeers() {
	l.peersDirty.Store(true)
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// peerDeltaDelay is how long the deltas of new links wait before they are
// sent (a variable so tests can change it). They are a fallback, and only
// for peers that do not dial what lists name (see peersChangedLocked):
// a node that links to us gets our whole list at once and dials what it
// lacks, and nodes that discover each other (gossip, mDNS, DNS) dial each
// other anyway. Sent at once, deltas cost, when a node joins a full mesh of
// N, N-1 frames at each of the N old nodes (N^2 wake-ups) in the very
// milliseconds the newcomer's handshakes need the CPU; held, they are
// coalesced (one frame per link for all the links added meanwhile) and sent
// after the join. Before the transitive bit every new link had deltas, and
// while links kept coming (a cluster forming, a partition healing: 2,500
// links at 100 nodes) every node sent a frame to every link per delay:
// 250 ms made that 40,000 frames a second at 100 nodes.
var peerDeltaDelay = 2 * time.Second

// flushPeerDeltas wakes the writer of every link with deltas to send.
func (m *Mesh) flushPeerDeltas() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.peersFlush = nil
	if m.closed {
		return
	}
	for _, l := range m.links {
		if l.peersFull || len(l.peersNew) > 0 {
			l.kickPeers()
		}
	}
}

// peersToSend takes what l's writer has to tell its peer about our links:
// the whole list (but the peer itself) or the entries added since that are
// still linked.
func (m *Mesh) peersToSend(l *link) []peerInfo {
	m.mu.Lock()
	defer m.mu.Unlock()
	full, added := l.peersFull, l.peersNew
	l.peersFull, l.peersNew = false, nil
	if !full {
		// A link gone since it was queued is not worth a dial.
		return slices.DeleteFunc(added, func(p peerInfo) bool {
			o := m.links[p.Name]
			return o == nil || o.peer.Addr != p.Addr || p.Name == l.peer.Name
		})
	}
	out := make([]peerInfo, 0, len(m.links))
	for name, o := range m.links {
		if name != l.peer.Name {
			out = append(out, peerInfo{Name: name, Addr: o.peer.Addr})
		}
	}
	slices.SortFunc(out, func(a, b peerInfo) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// learnPeers handles a peers frame from l: dial the ones we lack, a bounded
// number of times, without making them wanted. A name that said goodbye
// recently is skipped: the list may predate the goodbye.
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
		if p.Name == m.name || m.links[p.Name] != nil || m.addrLinks[p.Addr] != nil {
			continue
		}
		if byAddr := m.peers[p.Addr]; byAddr != nil && byAddr.name == "" {
			continue // an address-only target will link it: one dial, not two
		}
		if t, ok := m.leftNames[p.Name]; ok {
			if time.Since(t) <= leftMemory {
				continue
			}
			delete(m.leftNames, p.Name)
		}
		st := m.peers[p.Name]
		if st == nil {
			if len(m.peers) >= maxPeerStates {
				continue
			}
			st = newPeerState(p.Name, p.Name)
			m.peers[p.Name] = st
		}
		if st.dialing || st.qidx >= 0 || st.fresh != nil {
			continue
		}
		if !st.wanted {
			st.addr = p.Addr
			st.transitive = transitiveTries
		}
		m.log.Debug("mesh: learned peer", "node", p.Name, "addr", p.Addr, "from", from.peer.Name)
		m.scheduleLocked(st, time.Time{})
	}
}

// gcPeerLocked forgets a peer state nobody needs.
func (m *Mesh) gcPeerLocked(ps *peerState) {
	if !ps.wanted && !ps.dialing && ps.transitive <= 0 && m.peers[ps.key] == ps {
		m.unscheduleLocked(ps)
		delete(m.peers, ps.key)
	}
}

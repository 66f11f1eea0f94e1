package mesh

import (
	"cmp"
	"net"
	"slices"
	"time"
)

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

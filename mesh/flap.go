package mesh

import (
	"time"

	"github.com/macula-io/cluster/internal/swim"
)

// A link flap: the TCP link of a live member broke. Membership (NodeUp,
// NodeDown) follows the failure detector, not the stream, so the member is
// held (no event) while the mesh checks it and re-establishes the link:
//
//  1. The link fails with reason closed or timeout (not left, restarted,
//     disconnected, shutdown, a protocol error or the detector's dead
//     verdict) while the detector does not hold the peer dead: the member
//     is held, out of Links, and urgent pings go to it at once, from a
//     connected UDP socket (checkSchedule). A crashed process's host
//     answers with ICMP port unreachable within a round trip, so the crash
//     is still reported at once: NodeDown closed. So is a redial refused
//     by the peer's host (TCP RST: no listener).
//  2. The peer acked: we tell it (one UDP notice, twice) that the link
//     broke, since it may not notice a stall while it sends nothing; it
//     drops its end, which goes through 1 too; both sides redial. A new link of
//     the same incarnation replaces the held one without NodeDown/NodeUp
//     and counts in Stats.Probes.LinkReconnects; a newer incarnation
//     reports NodeDown restarted, then NodeUp. No answer at all (lost
//     packets, a cut cable, a stopped process) is no verdict: the member
//     stays held and redialled, and the detector decides.
//     The notice is sent again whenever the peer refuses a redial as a
//     duplicate: a connection the kernel aborted (TCP_USER_TIMEOUT) sends
//     no FIN, so a peer whose notices were all lost would otherwise keep
//     its dead end, and refuse every redial, until the member is dropped.
//     A peer that closes the link on purpose (Disconnect) says so first
//     (probeDropped): its link is no flap, and goes down closed.
//  3. The member stays held while the detector hears it: at the end of
//     each relinkGrace (3 LinkTimeout) a member heard within that grace is
//     held for another one (a TCP link can take that long to come back
//     under heavy loss: SYNs and handshake frames lost in turn, and the
//     dial backoff), up to maxHeld (12 LinkTimeout, 60 s by default) in
//     all; a member not heard for a whole grace, a member held that long,
//     or one the detector declares dead goes down: NodeDown reports the
//     link's original reason (timeout for the detector's verdict).
//
// Messages: those still queued on the broken link (not yet taken by its
// writer) and those Sent while the member is held go, in order, on the new
// link: the new link adopts the queue, and its writer numbers it for its
// own records, opening what Send sealed under the broken link's key and
// sealing it again (sendQueue.rekey). Messages already written to the
// broken connection, or taken by its writer, may be lost (TCP gives no
// delivery receipt): Send is at-most-once across a flap, as across a
// NodeDown. If the member ends held (NodeDown), its queue is dropped.
type held struct {
	link    *link
	reason  Reason
	q       *sendQueue
	dropped chan struct{} // closed when the member goes down
	timer   *time.Timer
	since   time.Time
}

func (m *Mesh) relinkGrace() time.Duration { return 3 * m.cfg.LinkTimeout }
func (m *Mesh) maxHeld() time.Duration     { return 12 * m.cfg.LinkTimeout }

// flapCandidateLocked: may the failure of l be a flap?
func (m *Mesh) flapCandidateLocked(l *link, r Reason) bool {
	if m.closed || m.probes == nil || l.noFlap.Load() || (r != ReasonClosed && r != ReasonTimeout) {
		return false
	}
	// A peer not (yet) a member of the detector counts too: a link that
	// breaks before the first probe packet arrived (a crossed connection
	// replaced at the peer while a cluster forms) is checked like any
	// other. A peer that does not probe answers the check with ICMP port
	// unreachable: NodeDown closed at once, as without the detector.
	st, ok := m.probes.state(l.peer.Name)
	return !ok || st != swim.Dead
}

// holdLocked takes l out of the table without NodeDown and starts the
// urgent check.
func (m *Mesh) holdLocked(l *link, r Reason) {
	m.unlinkLocked(l)
	h := &held{link: l, reason: r, q: l.q, dropped: make(chan struct{}), since: time.Now()}
	m.held[l.peer.Name] = h
	m.log.Debug("mesh: link broke, checking the member", "node", l.peer.Name, "reason", string(r))
	m.wg.Add(1)
	go m.checkHeld(h)
}

func (m *Mesh) checkHeld(h *held) {
	defer m.wg.Done()
	alive, refused := m.probes.check(h.link)
	m.mu.Lock()
	defer m.mu.Unlock()
	name := h.link.peer.Name
	if m.held[name] != h || m.closed {
		return // relinked meanwhile, or resolved otherwise
	}
	if refused {
		// The host says no process is there: a crash.
		m.dropHeldLocked(h, ReasonClosed)
		return
	}
	if alive {
		m.log.Debug("mesh: member alive, relinking", "node", name)
	} else {
		// Silent: lost packets, a stalled or cut network, a stopped
		// process. That is the detector's question, not this check's:
		// the member stays held while we redial, and goes down only on
		// the detector's verdict, a refused redial, or relinkGrace.
		m.st.heldSilent.Add(1)
		m.log.Debug("mesh: member silent after its link broke, held for the detector", "node", name)
	}
	h.timer = time.AfterFunc(m.relinkGrace(), func() { m.graceEnded(h) })
	m.probes.tellNotice(h.link, probeBroken)
	m.redialLocked(h.link, true)
}

// graceEnded: a relinkGrace of h passed without a new link. A member the
// detector heard within it stays held for another grace (up to maxHeld in
// all); otherwise it goes down with the link's reason.
func (m *Mesh) graceEnded(h *held) {
	m.mu.Lock()
	defer m.mu.Unlock()
	name := h.link.peer.Name
	if m.held[name] != h || m.closed {
		return
	}
	grace := m.relinkGrace()
	if left := m.maxHeld() - time.Since(h.since); left > 0 &&
		m.probes.heardWithin(name, h.link.peer.Incarnation, grace) {
		m.st.heldExtended.Add(1)
		m.log.Debug("mesh: member alive but not relinked yet, still held", "node", name,
			"held", time.Since(h.since).Round(time.Millisecond).String())
		h.timer.Reset(min(grace, left))
		m.redialLocked(h.link, true)
		return
	}
	m.dropHeldLocked(h, h.reason)
}

// redialLocked schedules dials to the peer of l: the states that wanted it
// and, for a flap, the peer's advertised address even if we never wanted
// it (it dialled us), a bounded number of times.
func (m *Mesh) redialLocked(l *link, flap bool) {
	if m.closed {
		return
	}
	for _, key := range [3]string{l.peer.Name, l.peer.Addr, l.dialled} {
		if ps := m.peers[key]; key != "" && ps != nil && ps.wanted && m.needDialLocked(ps) {
			m.scheduleLocked(ps, time.Time{})
			flap = false
		}
	}
	if !flap {
		return
	}
	ps := m.peers[l.peer.Name]
	if ps == nil {
		if len(m.peers) >= maxPeerStates {
			return
		}
		ps = newPeerState(l.peer.Name, l.peer.Name)
		m.peers[l.peer.Name] = ps
	}
	if ps.dialing || ps.qidx >= 0 || ps.fresh != nil {
		return
	}
	if !ps.wanted {
		ps.addr = l.peer.Addr
		ps.transitive = max(ps.transitive, transitiveTries)
	}
	m.scheduleLocked(ps, time.Time{})
}

// dropHeldLocked ends a held member with NodeDown(r).
func (m *Mesh) dropHeldLocked(h *held, r Reason) {
	name := h.link.peer.Name
	if m.held[name] != h {
		return
	}
	delete(m.held, name)
	if h.timer != nil {
		h.timer.Stop()
	}
	close(h.dropped)
	m.probeLinkDownLocked(h.link)
	if r == ReasonLeft {
		m.rememberLeftLocked(h.link.peer)
	}
	m.emitDownLocked(h.link, r)
	m.redialLocked(h.link, false)
}

// adoptLocked: the new link l of the same incarnation replaces the held
// member h: no events; l takes over h's queue once the old writer is gone.
func (m *Mesh) adoptLocked(h *held, l *link) {
	delete(m.held, h.link.peer.Name)
	if h.timer != nil {
		h.timer.Stop()
	}
	l.q = h.q
	l.prev = h.link
	m.st.reconnects.Add(1)
	m.log.Debug("mesh: link re-established", "node", l.peer.Name)
}

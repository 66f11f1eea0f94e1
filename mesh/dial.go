package mesh

import (
	"container/heap"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"time"
)

// yieldDelay: of two nodes that learn of each other at once (gossip, a
// static list, peer lists, both ends of a broken link) both would dial, and
// one of the two connections is refused as a duplicate (the smaller name's
// own dial wins, table.go): a TCP connection and half a handshake wasted at
// both ends, for most pairs while a cluster forms (30 nodes told of each
// other at once: 721 dials for 435 links). So a node dials a peer whose
// name is smaller than its own only yieldDelay after it learnt of it, unless
// the peer's connection came first; the peer dials at once. A peer that
// does not dial (it does not know us, or cannot reach us) costs the link
// yieldDelay once. A variable for the tests.
var yieldDelay = 300 * time.Millisecond

// stuckConnect: a TCP connect of ours that has run this long to a peer the
// strategy reports again (Connect) is restarted at once, without backoff.
// On a LAN a connect takes well under a millisecond; one this old is
// waiting on a SYN retransmission (Linux 6.7+ resends every second for the
// first four, older kernels after 1, 3 and 7 s): it was started while the
// peer was out of reach (a partition, a cut cable) and the peer is heard
// now. Without the restart such a dial held the pair until that SYN, or
// until the connect timeout (2 s) and then a backoff of up to 5 s more.
// A variable for the tests.
var stuckConnect = 200 * time.Millisecond

// errHeardAgain is the cause of a connect cancelled by Connect (see
// stuckConnect); the dial is redone at once.
var errHeardAgain = errors.New("mesh: peer heard again, connect restarted")

// backoff is exponential backoff with "equal jitter": the n-th delay is
// uniformly random in [d/2, d] with d = min(100ms * 2^n, 5s).
type backoff struct{ n int }

func (b *backoff) next() time.Duration {
	d := backoffBase << min(b.n, 16)
	if d > backoffCap || d <= 0 {
		d = backoffCap
	}
	b.n++
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }

// The dial scheduler: every peer the mesh should dial waits in one queue
// (a heap under m.mu); one goroutine starts at most MaxDials dials at a
// time. Goroutines and memory are bounded by MaxDials and by the peer table
// (maxPeerStates), however many peers a strategy reports.
//
// Fairness: two queues. Fresh targets (a first attempt, or the re-link of
// a peer that was linked) wait in arrival order; retries after a failure
// wait in a heap by due time (backoff). Free dial slots go in turn to the
// oldest fresh target, the newest fresh target and the earliest due retry
// (skipping an empty choice). So a real newcomer reported after a flood of
// unreachable addresses is dialled within a few slots, the flood still
// drains in order, and retries are never starved by fresh targets.

// Per address: dials to one address run one at a time, and after a failed
// attempt (connect or handshake) the address backs off like a peer does,
// whatever name the next attempt is for. So many names announced at one
// address (a hostile gossip flood naming a victim) cost one connection per
// backoff step, not one per name. A target whose address is busy or backing
// off waits in the retry heap until the address is free. The table is
// swept of entries neither dialling nor backing off when it reaches
// maxPeerStates; what stays is bounded by MaxDials and the dials of the
// last backoffCap (5 s).

type addrDialState struct {
	dialing bool
	until   time.Time // no dial before this
	bo      backoff
	key     string // the peer of the last dial (Connect may lift the backoff it earned)
}

// addrWaitLocked reports how long a dial to addr must wait (0: it may start).
func (m *Mesh) addrWaitLocked(addr string, now time.Time) time.Duration {
	a := m.addrDial[addr]
	switch {
	case a == nil:
		return 0
	case a.dialing:
		return backoffBase
	}
	return max(a.until.Sub(now), 0)
}

// addrStartLocked marks a dial to addr as running.
func (m *Mesh) addrStartLocked(addr, key string, now time.Time) {
	if m.addrDial == nil {
		m.addrDial = make(map[string]*addrDialState)
	}
	a := m.addrDial[addr]
	if a == nil {
		if len(m.addrDial) >= maxPeerStates {
			for k, v := range m.addrDial {
				if !v.dialing && !now.Before(v.until) {
					delete(m.addrDial, k)
				}
			}
		}
		a = &addrDialState{}
		m.addrDial[addr] = a
	}
	a.dialing, a.key = true, key
}

// addrFoundLocked: the strategy reports key at addr (again). If the
// address is backing off for this very peer's failed dials, the peer was
// out of reach (a partition, a restart) and is heard again: its next dial
// need not wait out a backoff of up to 5 s (after a partition of more than
// a few seconds, the cap). A backoff earned by another name stays: many
// names announced at one address still cost one dial per backoff step.
func (m *Mesh) addrFoundLocked(addr, key string) {
	if a := m.addrDial[addr]; a != nil && !a.dialing && a.key == key && !a.until.IsZero() {
		a.until = time.Time{}
		a.bo.reset()
	}
}

// restartStuckConnectLocked cancels ps's TCP connect if it has run for
// stuckConnect or more (the strategy reports the peer again: see
// stuckConnect); the dial then starts again at once.
func (m *Mesh) restartStuckConnectLocked(ps *peerState, now time.Time) {
	if c := ps.connecting; c.cancel != nil && now.Sub(c.since) >= stuckConnect {
		c.cancel(errHeardAgain)
	}
}

// addrDoneLocked records the end of a dial to addr.
func (m *Mesh) addrDoneLocked(addr string, failed bool, now time.Time) {
	a := m.addrDial[addr]
	if a == nil {
		return
	}
	a.dialing = false
	if !failed {
		delete(m.addrDial, addr)
		return
	}
	a.until = now.Add(a.bo.next())
}

// dialQueue is the retry heap, by (due time, arrival).
type dialQueue []*peerState

func (q dialQueue) Len() int { return len(q) }
func (q dialQueue) Less(i, j int) bool {
	a, b := q[i], q[j]
	if !a.due.Equal(b.due) {
		return a.due.Before(b.due)
	}
	return a.seq < b.seq
}
func (q dialQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].qidx, q[j].qidx = i, j
}
func (q *dialQueue) Push(x any) {
	ps := x.(*peerState)
	ps.qidx = len(*q)
	*q = append(*q, ps)
}
func (q *dialQueue) Pop() any {
	old := *q
	ps := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	ps.qidx = -1
	return ps
}

// scheduleLocked queues ps for a dial at due (now when zero), or moves it
// earlier if it is already queued. A peer being dialled is left alone: the
// dial's end reschedules it if still needed.
func (m *Mesh) scheduleLocked(ps *peerState, due time.Time) {
	if m.closed || ps.dialing || ps.fresh != nil {
		return
	}
	if due.IsZero() && ps.failures == 0 && ps.name != "" && ps.name < m.name && !ps.yielded {
		// The peer's name is smaller: it dials us first (see yieldDelay).
		ps.yielded = true
		due = time.Now().Add(yieldDelay)
	}
	if due.IsZero() && ps.failures == 0 {
		m.unscheduleLocked(ps)
		ps.fresh = m.freshQ.PushBack(ps)
		m.wakeDialer()
		return
	}
	if due.IsZero() {
		due = time.Now()
	}
	if ps.qidx >= 0 {
		if due.Before(ps.due) {
			ps.due = due
			heap.Fix(&m.dq, ps.qidx)
			m.wakeDialer()
		}
		return
	}
	m.dialSeq++
	ps.due, ps.seq = due, m.dialSeq
	heap.Push(&m.dq, ps)
	m.wakeDialer()
}

// unscheduleLocked takes ps out of the queue.
func (m *Mesh) unscheduleLocked(ps *peerState) {
	if ps.qidx >= 0 {
		heap.Remove(&m.dq, ps.qidx)
	}
	if ps.fresh != nil {
		m.freshQ.Remove(ps.fresh)
		ps.fresh = nil
	}
}

// nextDialLocked takes the next target whose turn it is, or returns nil
// and how long until a retry is due.
func (m *Mesh) nextDialLocked(now time.Time) (*peerState, time.Duration) {
	wait := time.Hour
	for range 3 {
		m.dialTurn = (m.dialTurn + 1) % 3
		switch {
		case m.dialTurn == 0 && m.freshQ.Len() > 0:
			ps := m.freshQ.Remove(m.freshQ.Front()).(*peerState)
			ps.fresh = nil
			return ps, 0
		case m.dialTurn == 1 && m.freshQ.Len() > 0:
			ps := m.freshQ.Remove(m.freshQ.Back()).(*peerState)
			ps.fresh = nil
			return ps, 0
		case m.dialTurn == 2 && m.dq.Len() > 0:
			if d := m.dq[0].due.Sub(now); d > 0 {
				wait = d
				continue
			}
			return heap.Pop(&m.dq).(*peerState), 0
		}
	}
	return nil, wait
}

func (m *Mesh) wakeDialer() {
	select {
	case m.dialWake <- struct{}{}:
	default:
	}
}

// needDialLocked reports whether ps still wants a dial.
func (m *Mesh) needDialLocked(ps *peerState) bool {
	return !m.closed && (ps.wanted || ps.transitive > 0) && !m.linkedLocked(ps)
}

// linkedLocked reports whether ps has a live link: by name, or for an
// address-only peer, a link dialled at or advertising that address.
func (m *Mesh) linkedLocked(ps *peerState) bool {
	if ps.name != "" {
		return m.links[ps.name] != nil
	}
	return m.addrLinks[ps.addr] != nil
}

// dialScheduler starts due dials, at most MaxDials at once.
func (m *Mesh) dialScheduler() {
	defer m.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		m.mu.Lock()
		wait := time.Hour
		now := time.Now()
		for m.dialsInFlight < m.cfg.MaxDials && !m.closed {
			ps, w := m.nextDialLocked(now)
			if ps == nil {
				wait = w
				break
			}
			if !m.needDialLocked(ps) {
				m.gcPeerLocked(ps)
				continue
			}
			if w := m.addrWaitLocked(ps.addr, now); w > 0 {
				m.scheduleLocked(ps, now.Add(w))
				continue
			}
			m.addrStartLocked(ps.addr, ps.key, now)
			if !ps.wanted {
				ps.transitive--
			}
			ps.dialing = true
			m.dialsInFlight++
			m.wg.Add(1)
			go m.dial(ps, ps.addr, ps.gen)
		}
		closed := m.closed
		m.mu.Unlock()
		if closed {
			return
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-m.dialWake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		case <-m.ctx.Done():
			return
		}
	}
}

// dial runs one attempt for ps and reschedules it if it is still needed.
func (m *Mesh) dial(ps *peerState, addr string, gen uint64) {
	defer m.wg.Done()
	err := m.dialOnce(ps, addr, gen)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dialsInFlight--
	ps.dialing = false
	restart := errors.Is(err, errHeardAgain)
	m.addrDoneLocked(addr, err != nil && !restart, time.Now())
	m.wakeDialer()
	switch {
	case restart:
		// Not a failure of the peer: redialled at once (see stuckConnect).
	case err == nil:
		ps.failures = 0
		ps.bo.reset()
	default:
		ps.failures++
		m.log.Debug("mesh: dial failed", "peer", ps.key, "addr", addr, "err", err)
		if h := m.held[ps.name]; h != nil && ps.name != "" && connRefused(err) {
			// The held member's host refused the redial: no listener,
			// the process is gone (flap.go).
			m.dropHeldLocked(h, ReasonClosed)
		}
		if ps.name == "" && reasonOf(m.ctx, err) == HSSelf {
			// An address-only target that is this node (DNS lists every
			// pod, us included, perhaps under another spelling): stop.
			m.log.Debug("mesh: address is this node, not dialling it again", "addr", addr)
			ps.wanted, ps.transitive = false, 0
		}
	}
	if !m.needDialLocked(ps) {
		m.gcPeerLocked(ps)
		return
	}
	due := time.Time{}
	switch {
	case restart:
		due = time.Now()
	case err != nil:
		due = time.Now().Add(ps.bo.next())
	}
	m.scheduleLocked(ps, due)
}

// connectTimeout bounds the TCP connect of a dial. With probes it is at
// most max(2 s, 5 probe periods) (2 s with lan): a connect to a host that
// is unreachable (a partition, a cut cable) otherwise holds one of the
// MaxDials slots for the whole HandshakeTimeout while the kernel
// retransmits its SYN, and after a partition of 100 nodes heals, 50 such
// dials per node, 16 at a time, delayed the new links by seconds.
func (m *Mesh) connectTimeout() time.Duration {
	if m.cfg.NoProbes {
		return m.cfg.HandshakeTimeout
	}
	return min(m.cfg.HandshakeTimeout, max(2*time.Second, 5*m.cfg.ProbeInterval))
}

// dialOnce makes one connection attempt. nil means linked, or that a link
// appeared meanwhile.
func (m *Mesh) dialOnce(ps *peerState, addr string, gen uint64) error {
	label := ps.key
	m.st.dials.Add(1)
	d := net.Dialer{Timeout: m.connectTimeout()}
	ctx, cancel := context.WithCancelCause(m.ctx)
	defer cancel(nil)
	m.mu.Lock()
	ps.connecting.since, ps.connecting.cancel = time.Now(), cancel
	m.mu.Unlock()
	raw, err := d.DialContext(ctx, "tcp", addr)
	m.mu.Lock()
	ps.connecting.since, ps.connecting.cancel = time.Time{}, nil
	m.mu.Unlock()
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errHeardAgain) && m.ctx.Err() == nil {
			m.st.connectRestarts.Add(1)
			return fmt.Errorf("mesh: dial %s at %s: %w", label, addr, cause)
		}
		m.st.dialFailures.Add(1)
		return fmt.Errorf("mesh: dial %s at %s: %w", label, addr, err)
	}
	m.mu.Lock()
	if m.closed || m.linkedLocked(ps) {
		if !m.closed {
			// A crossed dial: the peer's connection won while we
			// connected. We drop ours before its handshake (the peer does
			// not count it), so we count it here.
			m.st.duplicates.Add(1)
		}
		m.mu.Unlock()
		raw.Close()
		return nil
	}
	ps.pendingOut = true
	m.mu.Unlock()

	raw.SetDeadline(time.Now().Add(m.cfg.HandshakeTimeout))
	stop := m.watchShutdown(raw)
	hsStart := time.Now()
	l, old, err := m.dialHandshake(raw, addr, ps, gen)
	stop()
	if err != nil {
		m.mu.Lock()
		ps.pendingOut = false
		linked := m.linkedLocked(ps)
		h := m.held[ps.name]
		m.mu.Unlock()
		raw.Close()
		reason := reasonOf(m.ctx, err)
		switch {
		case reason == HSDuplicate:
			if linked {
				return nil
			}
			if h != nil && ps.name != "" {
				// Our link to this member broke but the peer still
				// holds its end (a connection the kernel aborted sends
				// no FIN) and our notice was lost: tell it again, or it
				// refuses every redial until the member is dropped.
				m.probes.tellNotice(h.link, probeBroken)
			}
		case reason == HSSelf && ps.name == "":
			// Dialled ourselves by address: not a failure (see dial).
		default:
			m.failHandshake(raw.RemoteAddr(), true, reason, err)
		}
		return fmt.Errorf("mesh: handshake with %s at %s: %w", label, addr, err)
	}
	m.st.hs.observe(time.Since(hsStart))
	if old != nil {
		old.fail(ReasonRestarted)
	}
	m.log.Debug("mesh: dialled", "node", l.peer.Name, "addr", addr)
	l.start()
	return nil
}

func (m *Mesh) dialHandshake(raw net.Conn, addr string, ps *peerState, gen uint64) (l, old *link, err error) {
	conn := raw
	if m.cfg.TLS != nil {
		cfg := m.cfg.TLS
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(m.ctx); err != nil {
			return nil, nil, tlsErr(err)
		}
		conn = tc
	}
	self, err := m.selfHello()
	if err != nil {
		return nil, nil, hsErr(HSIO, err)
	}
	peer, err := clientHandshake(conn, m.cookie, self, ps.name)
	if err != nil {
		return nil, nil, err
	}
	l, old, code := m.admit(peer, conn, raw, addr, ps, gen)
	if l == nil {
		return nil, nil, hsErr(refuseReason(code), fmt.Errorf("not admitted %s", peer.Name))
	}
	return l, old, nil
}

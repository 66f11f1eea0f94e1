package mesh

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"time"
)

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

// startDialerLocked starts the dial goroutine of a peer. Callers are either
// counted in m.wg or hold m.mu with m.closed false, so the Add never races
// with Close's Wait.
func (m *Mesh) startDialerLocked(name string, ps *peerState) {
	ps.dialing = true
	m.wg.Add(1)
	go m.dialLoop(name, ps)
}

// dialLoop dials name until it is linked, no longer wanted (and out of
// transitive attempts), or the mesh closes.
func (m *Mesh) dialLoop(name string, ps *peerState) {
	defer m.wg.Done()
	var bo backoff
	for {
		m.mu.Lock()
		if m.closed || m.links[name] != nil || (!ps.wanted && ps.transitive <= 0) {
			ps.dialing = false
			m.gcPeerLocked(name, ps)
			m.mu.Unlock()
			return
		}
		if !ps.wanted {
			ps.transitive--
		}
		addr, gen := ps.addr, ps.gen
		m.mu.Unlock()

		err := m.dialOnce(name, addr, ps, gen)
		if err == nil {
			bo.reset()
			continue
		}
		m.log.Debug("mesh: dial failed", "node", name, "addr", addr, "err", err)
		m.mu.Lock()
		last := !ps.wanted && ps.transitive <= 0
		m.mu.Unlock()
		if last {
			continue // the check at the top ends the loop
		}
		t := time.NewTimer(bo.next())
		select {
		case <-t.C:
		case <-ps.kick:
		case <-m.ctx.Done():
		}
		t.Stop()
	}
}

// dialOnce makes one connection attempt. nil means linked, or that a link
// appeared meanwhile.
func (m *Mesh) dialOnce(name, addr string, ps *peerState, gen uint64) error {
	m.st.dials.Add(1)
	d := net.Dialer{Timeout: m.cfg.HandshakeTimeout}
	raw, err := d.DialContext(m.ctx, "tcp", addr)
	if err != nil {
		m.st.dialFailures.Add(1)
		return fmt.Errorf("mesh: dial %s at %s: %w", name, addr, err)
	}
	m.mu.Lock()
	if m.closed || m.links[name] != nil {
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
	l, old, err := m.dialHandshake(raw, name, addr, ps, gen)
	stop()
	if err != nil {
		m.mu.Lock()
		ps.pendingOut = false
		linked := m.links[name] != nil
		m.mu.Unlock()
		raw.Close()
		reason := reasonOf(m.ctx, err)
		if reason == HSDuplicate {
			if linked {
				return nil
			}
		} else {
			m.failHandshake(raw.RemoteAddr(), true, reason, err)
		}
		return fmt.Errorf("mesh: handshake with %s at %s: %w", name, addr, err)
	}
	if old != nil {
		old.fail(ReasonRestarted)
	}
	m.log.Debug("mesh: dialled", "node", name, "addr", addr)
	l.start()
	return nil
}

func (m *Mesh) dialHandshake(raw net.Conn, name, addr string, ps *peerState, gen uint64) (l, old *link, err error) {
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
	peer, err := clientHandshake(conn, m.cookie, self, name)
	if err != nil {
		return nil, nil, err
	}
	l, old, code := m.admit(peer, conn, raw, true, ps, gen)
	if l == nil {
		return nil, nil, hsErr(refuseReason(code), fmt.Errorf("not admitted %s", peer.Name))
	}
	return l, old, nil
}

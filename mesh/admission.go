package mesh

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// Fair admission of inbound handshakes (accept.go). Tunables are variables
// so tests can shorten them.
var (
	// pendingPerSource is the share of MaxPendingHandshakes one source IP
	// that is not a known peer's may hold (at least 1, at most the
	// stranger pool).
	pendingPerSource = 8
	// throttleFree is the number of wrong-cookie handshakes a source may
	// fail before its next handshakes are refused for a while.
	throttleFree = 3
	// throttleBase and throttleCap bound the refusal: throttleBase doubled
	// per further failure, at most throttleCap.
	throttleBase = 200 * time.Millisecond
	throttleCap  = 30 * time.Second
	// throttleForget drops a source's failure count after this long without
	// a failure.
	throttleForget = 5 * time.Minute
	// maxThrottled bounds the throttle table.
	maxThrottled = 4096
	// knownTTL is how long the set of known peer IPs is cached.
	knownTTL = 500 * time.Millisecond
)

// admission shares the pending-handshake budget: MaxPendingHandshakes in
// all; sources that are not a known peer's address (strangers) share at
// most three quarters of it, pendingPerSource each, so a re-link of a known
// peer always finds a slot; sources that failed the cookie check too often
// are refused for an exponentially growing time.
type admission struct {
	mu        sync.Mutex
	perSource map[netip.Addr]int // pending handshakes by source; bounded by MaxPendingHandshakes
	throttle  map[netip.Addr]*throttleState
	known     map[netip.Addr]struct{} // IPs of links and dial targets (cache)
	knownAt   time.Time
}

type throttleState struct {
	fails int
	last  time.Time // last failure
	until time.Time // refused before this
}

type admitVerdict int

const (
	admitOK admitVerdict = iota
	admitFull
	admitThrottled
)

// remoteIP is the source IP of c (the zero Addr if it has none).
func remoteIP(c net.Conn) netip.Addr {
	if t, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(t.IP); ok {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// admitInbound decides whether a new connection from ip may start its
// handshake; on admitOK the caller must call m.releaseInbound(ip) when the
// handshake ends.
func (m *Mesh) admitInbound(ip netip.Addr, now time.Time) admitVerdict {
	a := &m.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.perSource == nil {
		a.perSource = make(map[netip.Addr]int)
		a.throttle = make(map[netip.Addr]*throttleState)
	}
	if t := a.throttle[ip]; t != nil && now.Before(t.until) {
		return admitThrottled
	}
	limit := int64(m.cfg.MaxPendingHandshakes)
	total := m.pending.Load()
	if total >= limit {
		return admitFull
	}
	strangers := max(limit-limit/4, 1)
	perSource := min(int64(pendingPerSource), strangers)
	if n := int64(a.perSource[ip]); n >= perSource || total >= strangers {
		if !m.knownSourceLocked(ip, now) {
			return admitFull
		}
	}
	a.perSource[ip]++
	m.pending.Add(1)
	return admitOK
}

// releaseInbound ends a pending handshake admitted by admitInbound.
func (m *Mesh) releaseInbound(ip netip.Addr) {
	a := &m.adm
	a.mu.Lock()
	if n := a.perSource[ip]; n <= 1 {
		delete(a.perSource, ip)
	} else {
		a.perSource[ip] = n - 1
	}
	m.pending.Add(-1)
	a.mu.Unlock()
}

// knownSourceLocked reports whether ip is the address of a link or of a dial
// target (a.mu held; takes m.mu for reading to refresh the cache).
func (m *Mesh) knownSourceLocked(ip netip.Addr, now time.Time) bool {
	a := &m.adm
	if a.known == nil || now.Sub(a.knownAt) > knownTTL {
		known := make(map[netip.Addr]struct{})
		add := func(addr string) {
			if ap, err := netip.ParseAddrPort(addr); err == nil {
				known[ap.Addr().Unmap()] = struct{}{}
			}
		}
		m.mu.RLock()
		for _, l := range m.links {
			add(l.peer.Addr)
			add(l.dialled)
			if ip := remoteIP(l.raw); ip.IsValid() {
				known[ip] = struct{}{}
			}
		}
		for _, ps := range m.peers {
			add(ps.addr)
		}
		m.mu.RUnlock()
		a.known, a.knownAt = known, now
	}
	_, ok := a.known[ip]
	return ok
}

// handshakeDone records the outcome of an inbound handshake from ip: a
// wrong cookie counts towards throttling the source, a success clears it.
func (m *Mesh) handshakeDone(ip netip.Addr, reason HandshakeReason, ok bool, now time.Time) {
	if !ip.IsValid() || (!ok && reason != HSBadCookie) {
		return
	}
	a := &m.adm
	a.mu.Lock()
	defer a.mu.Unlock()
	if ok {
		delete(a.throttle, ip)
		return
	}
	t := a.throttle[ip]
	if t == nil {
		if len(a.throttle) >= maxThrottled {
			for k, v := range a.throttle {
				if now.Sub(v.last) > throttleForget || now.After(v.until) {
					delete(a.throttle, k)
				}
			}
			if len(a.throttle) >= maxThrottled {
				return // full of sources refused right now: this one waits its turn
			}
		}
		t = &throttleState{}
		a.throttle[ip] = t
	}
	if now.Sub(t.last) > throttleForget {
		t.fails = 0
	}
	t.fails++
	t.last = now
	if t.fails > throttleFree {
		d := throttleBase << min(t.fails-throttleFree-1, 20)
		if d > throttleCap || d <= 0 {
			d = throttleCap
		}
		t.until = now.Add(d)
		if ok, suppressed := m.warns.Allow("throttle:" + ip.String()); ok {
			m.log.Warn("mesh: throttling a source after wrong-cookie handshakes", "remote", ip.String(),
				"failures", t.fails, "refused_for", d, "suppressed", suppressed)
		}
	}
}

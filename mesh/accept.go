package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

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
		ip := remoteIP(c)
		switch m.admitInbound(ip, time.Now()) {
		case admitFull:
			m.failHandshake(c.RemoteAddr(), false, HSTooManyPending, nil)
			c.Close()
			continue
		case admitThrottled:
			m.failHandshake(c.RemoteAddr(), false, HSThrottled, nil)
			c.Close()
			continue
		}
		m.wg.Add(1)
		go m.serveInbound(c, ip)
	}
}

// failHandshake counts a failed handshake and logs it: a rate-limited
// warning for hostile-looking inbound traffic, Debug otherwise.
//
// A duplicate connection (a crossed dial: both nodes dialled each other at
// once) is normal, not a failure: admit counts it in Stats.DuplicateLinks on
// the node that refuses it, and neither side counts it here.
func (m *Mesh) failHandshake(remote net.Addr, outbound bool, reason HandshakeReason, err error) {
	ra := ""
	if remote != nil {
		ra = remote.String()
	}
	if reason == HSSelf {
		// This node dialled its own address (an address-only target
		// such as a DNS record of our own pod): both ends are us.
		m.log.Debug("mesh: reached self", "remote", ra, "outbound", outbound)
		return
	}
	if reason == HSDuplicate {
		m.log.Debug("mesh: duplicate connection refused", "remote", ra, "outbound", outbound, "err", err)
		return
	}
	m.st.count(&m.st.hsFail, string(reason))
	hostile := false
	switch reason {
	case HSBadCookie, HSBadMagic, HSBadVersion, HSMalformed, HSFrameTooLarge,
		HSUnexpectedFrame, HSTooManyPending, HSNameConflict, HSTLS:
		hostile = true
	case HSThrottled:
		return // counted; admission logs once per window per source
	}
	if outbound {
		// Worth a warning from our own dials: a peer with another cookie,
		// protocol or certificate, or another live incarnation of our name.
		switch reason {
		case HSBadCookie, HSBadVersion, HSTLS, HSStale, HSNameConflict, HSSelf, HSWrongNode:
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

func (m *Mesh) serveInbound(raw net.Conn, ip netip.Addr) {
	defer m.wg.Done()
	pendingDone := false
	donePending := func() {
		if !pendingDone {
			pendingDone = true
			m.releaseInbound(ip)
		}
	}
	defer donePending()
	raw.SetDeadline(time.Now().Add(m.cfg.HandshakeTimeout))
	stop := m.watchShutdown(raw)
	hsStart := time.Now()
	l, err := m.acceptHandshake(raw)
	stop()
	donePending()
	if errors.Is(err, errEmptyConn) {
		m.log.Debug("mesh: connection closed before its handshake", "remote", raw.RemoteAddr().String())
		raw.Close()
		return
	}
	if err != nil {
		reason := reasonOf(m.ctx, err)
		m.handshakeDone(ip, reason, false, time.Now())
		m.failHandshake(raw.RemoteAddr(), false, reason, err)
		raw.Close()
		return
	}
	m.st.hs.observe(time.Since(hsStart))
	m.handshakeDone(ip, "", true, time.Now())
	l.start()
}

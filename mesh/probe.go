package mesh

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/macula-io/cluster/internal/swim"
)

// Probe envelope (UDP, on the mesh port): see doc.go.
//
//	0  1  kind: probeVersion (a SWIM packet follows), probeBroken (the
//	      sender's name follows: its link to the receiver broke; see
//	      flap.go), probeHello (empty: the sender probes; see
//	      probeLinkUpLocked) or probeDropped (the sender's name follows: it
//	      closes its link to the receiver on purpose, Disconnect)
//	1  8  sender's incarnation (the mesh's, not SWIM's)
//	9  8  sequence, per sender, strictly increasing
//	17 .  SWIM packet (internal/swim)
//	.  16 MAC: HMAC-SHA256(probe key, everything before it), first 16 bytes
const (
	probeVersion   = 1
	probeBroken    = 2
	probeHello     = 3
	probeDropped   = 4
	probeHeaderLen = 17
	probeMACLen    = 16
	probeMaxPacket = 1500
	replayWindow   = 64
	probeKeyInfo   = "macula mesh probe v1"
	maxProbeSeen   = maxPeerStates // replay windows kept (one per sender incarnation)
)

var errProbeAuth = errors.New("mesh: probe: bad MAC")

// probeKey derives the probe MAC key from the cookie (HKDF-SHA256), so the
// cookie itself never keys anything that crosses the wire in the clear.
func probeKey(cookie []byte) []byte {
	k, err := hkdf.Key(sha256.New, cookie, nil, probeKeyInfo, 32)
	if err != nil {
		panic(err) // only for lengths out of range
	}
	return k
}

func sealProbe(key []byte, inc, seq uint64, body []byte) []byte {
	return sealKind(key, probeVersion, inc, seq, body)
}

func sealKind(key []byte, kind byte, inc, seq uint64, body []byte) []byte {
	b := make([]byte, 0, probeHeaderLen+len(body)+probeMACLen)
	b = append(b, kind)
	b = binary.BigEndian.AppendUint64(b, inc)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = append(b, body...)
	mac := hmac.New(sha256.New, key)
	mac.Write(b)
	return mac.Sum(b)[:len(b)+probeMACLen]
}

// openProbe checks version, length and MAC and returns the sender's
// incarnation, sequence and the SWIM body.
func openProbe(key, b []byte) (inc, seq uint64, body []byte, err error) {
	if len(b) < probeHeaderLen+probeMACLen || len(b) > probeMaxPacket {
		return 0, 0, nil, fmt.Errorf("%w: length %d", swim.ErrBadPacket, len(b))
	}
	if b[0] < probeVersion || b[0] > probeDropped {
		return 0, 0, nil, fmt.Errorf("%w: version %d", swim.ErrBadPacket, b[0])
	}
	n := len(b) - probeMACLen
	mac := hmac.New(sha256.New, key)
	mac.Write(b[:n])
	if !hmac.Equal(mac.Sum(nil)[:probeMACLen], b[n:]) {
		return 0, 0, nil, errProbeAuth
	}
	return binary.BigEndian.Uint64(b[1:9]), binary.BigEndian.Uint64(b[9:17]), b[probeHeaderLen:n], nil
}

// window is a sliding replay window (RFC 4303 style) for one sender.
type window struct {
	top  uint64
	bits uint64 // bit i: top-i seen
}

// accept reports whether seq is new, and records it.
func (w *window) accept(seq uint64) bool {
	switch {
	case seq > w.top:
		if d := seq - w.top; d >= replayWindow {
			w.bits = 1
		} else {
			w.bits = w.bits<<d | 1
		}
		w.top = seq
		return true
	case w.top-seq >= replayWindow:
		return false
	default:
		bit := uint64(1) << (w.top - seq)
		if w.bits&bit != 0 {
			return false
		}
		w.bits |= bit
		return true
	}
}

// ProbeStats are the failure detector's counters (Stats.Probes).
type ProbeStats struct {
	Enabled        bool   // probes run (false: the UDP port could not be bound)
	Sent           uint64 // direct probes of our own
	Acked          uint64 // our probes answered (directly or through a relay)
	Indirect       uint64 // indirect probe requests sent
	Failed         uint64 // our probes with no answer at all
	Suspicions     uint64 // members that became suspect here
	Refutes        uint64 // suspicions of this node it refuted
	Dead           uint64 // members declared dead here (NodeDown timeout)
	LateTicks      uint64 // detector timers that fired late (this process was starved)
	Health         int    // local health score now: 0 healthy, higher = timeouts stretched by Health+1
	BadPackets     uint64 // UDP packets dropped: short, bad version, bad MAC, undecodable
	Replayed       uint64 // authentic packets dropped as replays
	LinkReconnects uint64 // links re-established under a live member, without NodeDown/NodeUp
	HeldSilent     uint64 // broken links whose member did not answer the urgent check (held for the detector's verdict)
	HeldExtended   uint64 // relink graces that ended with the member heard by the detector (held for another grace)
}

// prober runs the failure detector over UDP on the mesh port.
type prober struct {
	m    *Mesh
	conn *net.UDPConn
	key  []byte
	seq  atomic.Uint64

	mu      sync.Mutex
	d       *swim.Detector
	seen    map[uint64]*window
	timer   *time.Timer
	timerAt time.Time // the deadline timer is set for (zero: set it anew)
	out     []outPkt
	bad     atomic.Uint64
	replays atomic.Uint64
	deaths  atomic.Uint64

	// Test hooks: pauseUntil (Unix ns) stalls the reader and the timer as a
	// stopped process would (packets wait in the socket buffer, timers fire
	// late); dropAll makes the node deaf and mute on UDP; dropBroken
	// ignores that many "link broke" notices.
	pauseUntil atomic.Int64
	dropAll    atomic.Bool
	dropBroken atomic.Int32
}

// stall waits out a test pause, bounded by Close.
func (p *prober) stall() {
	if d := time.Until(time.Unix(0, p.pauseUntil.Load())); d > 0 {
		select {
		case <-time.After(d):
		case <-p.m.ctx.Done():
		}
	}
}

type outPkt struct {
	to  netip.AddrPort
	pkt []byte
}

// startProbes binds UDP on the listener's address and port and starts the
// detector. The caller holds no lock; m.wg counts the goroutines.
func (m *Mesh) startProbes() error {
	la := m.ln.Addr().(*net.TCPAddr)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: la.IP, Port: la.Port, Zone: la.Zone})
	if err != nil {
		return fmt.Errorf("mesh: probes: listen udp %s: %w", la, err)
	}
	p := &prober{m: m, conn: conn, key: probeKey(m.cookie), seen: make(map[uint64]*window)}
	p.seq.Store(uint64(time.Now().UnixNano()))
	pc := m.cfg.probeConfig()
	p.d = swim.New(swim.Config{
		Name: m.name, ID: m.inc,
		ProbeInterval: pc.interval, ProbeTimeout: pc.timeout,
		IndirectChecks: pc.indirect, SuspicionMult: pc.mult,
		OnlyMembers: true, Send: p.queue,
		Rand: rand.New(rand.NewPCG(m.inc, uint64(m.start))),
	})
	p.timer = time.NewTimer(0)
	m.probes = p
	m.wg.Add(2)
	go p.readLoop()
	go p.tickLoop()
	return nil
}

// queue is swim's Send: packets are sent after the detector's lock is
// released (flush).
func (p *prober) queue(addr string, pkt []byte) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return
	}
	p.out = append(p.out, outPkt{ap, pkt})
}

// flush sends the queued packets and applies the detector's changes. Call
// with p.mu held; it releases it.
func (p *prober) flushUnlock(changes []swim.Change) {
	out := p.out
	p.out = nil
	// Most packets leave the deadline as it was (a ping answered, an ack
	// for a probe of someone else's): setting it again from the wall clock
	// can move it a few nanoseconds earlier, and a timer moved earlier
	// than the poller's sleep wakes the runtime's poller, a wake-up of
	// its own (2-3 per second per node).
	if next := p.d.Next(); !next.Equal(p.timerAt) {
		p.timerAt = next
		p.timer.Reset(max(time.Until(next), 0))
	}
	p.mu.Unlock()
	if p.dropAll.Load() {
		out = nil
	}
	for _, o := range out {
		b := sealProbe(p.key, p.m.inc, p.seq.Add(1), o.pkt)
		p.conn.WriteToUDPAddrPort(b, o.to)
	}
	for _, c := range changes {
		p.m.probeChange(c)
	}
}

func (p *prober) tickLoop() {
	defer p.m.wg.Done()
	for {
		select {
		case <-p.m.ctx.Done():
			p.timer.Stop()
			return
		case <-p.timer.C:
		}
		p.stall()
		p.mu.Lock()
		p.timerAt = time.Time{} // fired: set it again whatever Next says
		ch := p.d.Tick(time.Now())
		p.flushUnlock(ch)
	}
}

func (p *prober) readLoop() {
	defer p.m.wg.Done()
	buf := make([]byte, probeMaxPacket+1)
	for {
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if p.m.isClosed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.stall()
		if p.dropAll.Load() {
			continue
		}
		p.handle(from, buf[:n])
	}
}

func (p *prober) hostile(from netip.AddrPort, err error) {
	p.bad.Add(1)
	if ok, suppressed := p.m.warns.Allow("probe:" + from.Addr().String()); ok {
		p.m.log.Warn("mesh: probe: dropped packet", "from", from.String(), "err", err, "suppressed", suppressed)
	}
}

func (p *prober) handle(from netip.AddrPort, b []byte) {
	inc, seq, body, err := openProbe(p.key, b)
	if err != nil {
		p.hostile(from, err)
		return
	}
	p.mu.Lock()
	w := p.seen[inc]
	if w == nil {
		if len(p.seen) >= maxProbeSeen {
			for k := range p.seen { // evict one arbitrary sender
				delete(p.seen, k)
				break
			}
		}
		w = &window{}
		p.seen[inc] = w
	}
	if !w.accept(seq) {
		p.mu.Unlock()
		p.replays.Add(1)
		return
	}
	if w.top == seq && w.bits == 1 {
		// First packet from this incarnation: make its link's peer a
		// member before handling the packet (a ping from it is then
		// answered).
		p.mu.Unlock()
		p.m.probeHeard(inc)
		p.mu.Lock()
	}
	switch b[0] {
	case probeHello:
		p.mu.Unlock()
		return
	case probeBroken:
		p.mu.Unlock()
		if p.dropBroken.Load() > 0 && p.dropBroken.Add(-1) >= 0 {
			return
		}
		p.m.peerLinkBroken(string(body), inc)
		return
	case probeDropped:
		p.mu.Unlock()
		p.m.peerDropped(string(body), inc)
		return
	}
	ch, err := p.d.Handle(time.Now(), from.String(), body)
	p.flushUnlock(ch)
	if err != nil {
		// Authentic but undecodable: a peer of a later version or a bug.
		p.hostile(from, err)
	}
}

func (p *prober) add(name string, inc uint64, addr netip.AddrPort) {
	p.mu.Lock()
	p.d.Add(name, inc, addr.String())
	p.flushUnlock(nil)
}

func (p *prober) remove(name string) {
	p.mu.Lock()
	p.d.Remove(name)
	p.flushUnlock(nil)
}

// member reports whether the peer is a member of our detector; acked,
// whether it answered our ping itself (so it counts us as a member).
func (p *prober) member(name string, inc uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.d.Member(name, inc)
}

func (p *prober) acked(name string, inc uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.d.Acked(name, inc)
}

// heardWithin reports whether the detector heard member (name, inc) within
// the last d and does not hold it dead.
func (p *prober) heardWithin(name string, inc uint64, d time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	at, ok := p.d.Heard(name, inc)
	st, _ := p.d.State(name)
	return ok && st != swim.Dead && time.Since(at) < d
}

// heard reports whether a packet from incarnation inc has been accepted.
func (p *prober) heard(inc uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[inc] != nil
}

func (p *prober) state(name string) (swim.State, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.d.State(name)
}

func (p *prober) stats() ProbeStats {
	p.mu.Lock()
	s, h := p.d.Stats(), p.d.Health()
	p.mu.Unlock()
	return ProbeStats{Enabled: true, Sent: s.ProbesSent, Acked: s.ProbesAcked, Indirect: s.IndirectProbes,
		Failed: s.ProbesFailed, Suspicions: s.Suspicions, Refutes: s.Refutes, Dead: p.deaths.Load(),
		LateTicks: s.LateTicks, Health: h, BadPackets: p.bad.Load() + s.BadPackets, Replayed: p.replays.Load()}
}

func (p *prober) close() { p.conn.Close() }

// tellNotice sends the peer of l a notice about our link to it, twice (it
// is one UDP packet): probeBroken, our end of the link broke, so that it
// drops its end too (it may not notice a stall while it sends nothing) and
// both redial; probeDropped, we close the link on purpose (Disconnect), so
// that it reports NodeDown closed at once instead of holding the member
// and redialling (flap.go). If both are lost, the peer's detector or its
// own link finds out.
func (p *prober) tellNotice(l *link, kind byte) {
	ap, ok := probeAddr(l)
	if !ok || p.dropAll.Load() {
		return
	}
	for range 2 {
		p.conn.WriteToUDPAddrPort(sealKind(p.key, kind, p.m.inc, p.seq.Add(1), []byte(p.m.name)), ap)
	}
}

// peerDropped: the peer name (incarnation inc) closes its link to us on
// purpose. Its link is no flap: NodeDown closed once the stream ends (or
// now, if the member is already held).
func (m *Mesh) peerDropped(name string, inc uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h := m.held[name]; h != nil && h.link.peer.Incarnation == inc {
		m.dropHeldLocked(h, ReasonClosed)
		return
	}
	if l := m.links[name]; l != nil && l.peer.Incarnation == inc {
		l.noFlap.Store(true)
	}
}

// peerLinkBroken: the peer name (incarnation inc) says its end of our link
// broke. A link of ours to it older than the news is failed (and then,
// the peer being alive, relinked: flap.go).
func (m *Mesh) peerLinkBroken(name string, inc uint64) {
	m.mu.RLock()
	l := m.links[name]
	m.mu.RUnlock()
	if l == nil || l.peer.Incarnation != inc || time.Since(l.since) < brokenNoticeMinAge {
		return
	}
	m.log.Debug("mesh: peer reports our link broken", "node", name)
	l.fail(ReasonTimeout)
}

// brokenNoticeMinAge: a link younger than this is already the replacement.
const brokenNoticeMinAge = 500 * time.Millisecond

// checkSchedule: when the urgent pings of check go out, from its start. A
// process being killed closes its TCP sockets (we see EOF) a moment before
// its UDP socket: a ping that arrives in between is swallowed, and only a
// later one draws the ICMP port unreachable. So the first pings are close
// together; a live peer answers the first.
var checkSchedule = [...]time.Duration{0, 5 * time.Millisecond, 15 * time.Millisecond,
	35 * time.Millisecond, 75 * time.Millisecond}

// check is the urgent probe of a member whose link broke: pings from a
// connected UDP socket, so that an ICMP port unreachable (the process is
// gone, its host is up) ends the wait at once. It reports whether the
// member acked within ProbeTimeout (pings at checkSchedule, then one more
// at half the timeout), and whether the member's host refused it (ICMP
// port unreachable: the process is gone) rather than staying silent or
// unreachable.
func (p *prober) check(l *link) (alive, refused bool) {
	ap, ok := probeAddr(l)
	if !ok || p.dropAll.Load() {
		return false, false
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return false, false
	}
	defer conn.Close()
	stop := context.AfterFunc(p.m.ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	p.mu.Lock()
	swimInc := p.d.Incarnation()
	p.mu.Unlock()
	seq := rand.Uint32()
	ping := swim.EncodePing(p.m.name, p.m.inc, swimInc, l.peer.Name, l.peer.Incarnation, seq)
	timeout := p.m.cfg.ProbeTimeout
	start := time.Now()
	sends := append(checkSchedule[:], max(timeout/2, checkSchedule[len(checkSchedule)-1]+time.Millisecond))
	buf := make([]byte, probeMaxPacket+1)
	for i := range sends {
		if _, err := conn.Write(sealProbe(p.key, p.m.inc, p.seq.Add(1), ping)); err != nil {
			return false, connRefused(err)
		}
		next := start.Add(timeout)
		if i+1 < len(sends) {
			next = start.Add(sends[i+1])
		}
		conn.SetReadDeadline(next)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && i+1 < len(sends) && p.m.ctx.Err() == nil {
					break // send again
				}
				// refused (no process there), unreachable, closed, or out of time
				return false, connRefused(err)
			}
			_, _, body, err := openProbe(p.key, buf[:n])
			if err == nil && swim.IsAck(body, seq, l.peer.Name, l.peer.Incarnation) {
				return true, false
			}
		}
	}
	return false, false
}

// connRefused reports whether err says the peer's host refused us: no process
// at that port.
func connRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// probeAddr is where a linked peer answers probes: the IP the link
// connects to (the peer's advertised address may be a host name) and the
// port it advertises.
func probeAddr(l *link) (netip.AddrPort, bool) {
	_, ps, err := net.SplitHostPort(l.peer.Addr)
	if err != nil {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	if ip, err := netip.ParseAddr(hostOf(l.peer.Addr)); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), uint16(port)), true
	}
	ra, ok := l.raw.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ip, ok := netip.AddrFromSlice(ra.IP)
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)), true
}

func hostOf(hp string) string {
	h, _, _ := net.SplitHostPort(hp)
	return h
}

// probeLinkUp and probeLinkDown keep the detector's members equal to the
// link table. Called with m.mu held (lock order: m.mu, then prober.mu).
//
// A peer becomes a member of the detector only once it has been heard on
// UDP (any authenticated packet from its incarnation): a peer that does
// not probe (NoProbes) is never probed, never declared dead by probes, and
// its link keeps the link-level liveness (ticks, LinkTimeout). At link up
// we say hello (twice) so that the peer hears us.
func (m *Mesh) probeLinkUpLocked(l *link) {
	if m.probes == nil {
		return
	}
	ap, ok := probeAddr(l)
	if !ok {
		return
	}
	if m.probes.heard(l.peer.Incarnation) {
		m.probes.add(l.peer.Name, l.peer.Incarnation, ap)
		return
	}
	for range 2 {
		m.probes.conn.WriteToUDPAddrPort(sealKind(m.probes.key, probeHello, m.inc, m.probes.seq.Add(1), nil), ap)
	}
}

// probeHeard: the first authenticated packet from incarnation inc arrived;
// a link of that incarnation makes it a member of the detector.
func (m *Mesh) probeHeard(inc uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.links {
		if l.peer.Incarnation == inc {
			m.probeLinkUpLocked(l)
			return
		}
	}
}

func (m *Mesh) probeLinkDownLocked(l *link) {
	if m.probes != nil {
		m.probes.remove(l.peer.Name)
	}
}

// probeChange acts on the detector's verdicts: a dead member's link is
// closed with NodeDown reason timeout (and redialled if wanted).
func (m *Mesh) probeChange(c swim.Change) {
	switch c.State {
	case swim.Dead:
		m.mu.Lock()
		l := m.links[c.Name]
		if h := m.held[c.Name]; h != nil && h.link.peer.Incarnation == c.ID {
			m.probes.deaths.Add(1)
			m.dropHeldLocked(h, ReasonTimeout)
		}
		m.mu.Unlock()
		if l == nil || l.peer.Incarnation != c.ID {
			return
		}
		m.probes.deaths.Add(1)
		m.log.Debug("mesh: probes: member dead", "node", c.Name)
		l.noFlap.Store(true)
		l.fail(ReasonTimeout)
	case swim.Suspect:
		m.log.Debug("mesh: probes: member suspect", "node", c.Name, "incarnation", c.Inc)
	case swim.Alive:
		m.log.Debug("mesh: probes: member alive again", "node", c.Name, "incarnation", c.Inc)
	}
}

package mesh

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// HandshakeReason says why a handshake failed. Its string is the key of
// Stats.HandshakeFailures (and, for the three frame reasons, of
// Stats.ProtocolErrors) and the "reason" label of the CLI's metrics; doc.go
// lists them all.
type HandshakeReason string

// Handshake failure reasons.
const (
	HSBadMagic        HandshakeReason = "bad_magic"        // the peer's preamble did not start with "MCLA"
	HSBadVersion      HandshakeReason = "bad_version"      // the peer speaks another wire version, or no common record cipher
	HSMalformed       HandshakeReason = "malformed"        // a frame or its body did not parse (also: the peer echoed our nonce)
	HSFrameTooLarge   HandshakeReason = "frame_too_large"  // a frame claimed a length over the limit
	HSUnexpectedFrame HandshakeReason = "unexpected_frame" // a frame of a type not allowed at this step
	HSBadCookie       HandshakeReason = "bad_cookie"       // the proof or welcome did not verify: wrong cookie or a replay
	HSWrongNode       HandshakeReason = "wrong_node"       // the dialled address answered with another name
	HSTimeout         HandshakeReason = "timeout"          // HandshakeTimeout passed (connect, TLS or mesh handshake)
	HSClosed          HandshakeReason = "closed"           // the connection ended or was reset mid-handshake
	HSTooManyPending  HandshakeReason = "too_many_pending" // MaxPendingHandshakes inbound handshakes were already running, or the source's share of them
	HSThrottled       HandshakeReason = "throttled"        // the source failed the cookie check too often and is refused for a while
	HSTLS             HandshakeReason = "tls"              // the TLS handshake failed
	HSStale           HandshakeReason = "stale"            // an older incarnation than the linked one
	HSSelf            HandshakeReason = "self"             // a node reached itself
	HSNameConflict    HandshakeReason = "name_conflict"    // another live node has the same name
	HSForgotten       HandshakeReason = "forgotten"        // Forget or Disconnect ran while we dialled
	HSLeft            HandshakeReason = "left"             // this incarnation of the peer said goodbye (a late connection of a leaving node)
	HSShutdown        HandshakeReason = "shutdown"         // this node or the peer is closing
	HSIO              HandshakeReason = "io"               // any other I/O error
	HSRefused         HandshakeReason = "refused"          // the peer refused with a code this node does not know
	// HSDuplicate: the pair already has a link, or a dial that wins (both
	// nodes dialled at once). Normal: counted in Stats.DuplicateLinks, never
	// in Stats.HandshakeFailures.
	HSDuplicate HandshakeReason = "duplicate"
)

// handshakeFailureReasons are the keys of Stats.HandshakeFailures, present
// (at 0) from Start so that metrics show every series before its first
// event. HSDuplicate is not one: it is counted in Stats.DuplicateLinks.
var handshakeFailureReasons = []HandshakeReason{
	HSBadMagic, HSBadVersion, HSMalformed, HSFrameTooLarge, HSUnexpectedFrame,
	HSBadCookie, HSWrongNode, HSTimeout, HSClosed, HSTooManyPending, HSThrottled, HSTLS,
	HSStale, HSNameConflict, HSForgotten, HSLeft, HSShutdown, HSIO, HSRefused,
}

// protocolErrorReasons are the keys of Stats.ProtocolErrors, present from
// Start: the reasons link.readLoop passes to protocolError.
var protocolErrorReasons = []HandshakeReason{HSFrameTooLarge, HSMalformed, HSUnexpectedFrame, HSTampered}

// errEmptyConn: an inbound connection closed before sending its first byte.
// That is a dial the peer abandoned because a link came up meanwhile (the
// other half of a crossed dial), or a port probe: not a handshake attempt,
// so it is not counted as a failure.
var errEmptyConn = errors.New("mesh: connection closed before its first byte")

// handshakeError carries the reason counted in Stats.HandshakeFailures.
type handshakeError struct {
	reason HandshakeReason
	err    error
}

func (e *handshakeError) Error() string {
	if e.err == nil {
		return "mesh handshake: " + string(e.reason)
	}
	return "mesh handshake: " + string(e.reason) + ": " + e.err.Error()
}

func (e *handshakeError) Unwrap() error { return e.err }

func hsErr(reason HandshakeReason, err error) error { return &handshakeError{reason: reason, err: err} }

// tlsErr classifies a failed TLS handshake: a deadline is a timeout like any
// other silent handshake.
func tlsErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return hsErr(HSTimeout, err)
	}
	return hsErr(HSTLS, err)
}

// ioReason classifies a read or write error during the handshake.
func ioReason(ctx context.Context, err error) HandshakeReason {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return HSShutdown
	case errors.Is(err, errFrameTooLarge):
		return HSFrameTooLarge
	case errors.Is(err, errMalformed):
		return HSMalformed
	case errors.As(err, &ne) && ne.Timeout():
		return HSTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.EPIPE):
		return HSClosed
	}
	return HSIO
}

// reasonOf is the Stats.HandshakeFailures reason of a handshake error.
func reasonOf(ctx context.Context, err error) HandshakeReason {
	var he *handshakeError
	if ctx.Err() != nil {
		return HSShutdown
	}
	if errors.As(err, &he) {
		return he.reason
	}
	return ioReason(ctx, err)
}

// selfHello is our hello with a fresh nonce.
func (m *Mesh) selfHello() (hello, error) {
	h := hello{Incarnation: m.inc, Start: m.start, MaxMessage: uint32(m.cfg.MaxMessageSize),
		Name: m.name, Addr: m.addr, Features: sealFeatures, Tags: encodeTags(m.cfg.Tags)}
	if m.cfg.TLS != nil {
		h.Features = 0 // TLS protects the stream; see chooseSuite
	}
	if !m.cfg.NoTransitive {
		h.Features |= featTransitive
	}
	if _, err := rand.Read(h.Nonce[:]); err != nil {
		return h, err
	}
	return h, nil
}

// watchShutdown makes blocked I/O on c fail when the mesh closes.
func (m *Mesh) watchShutdown(c net.Conn) (stop func() bool) {
	return context.AfterFunc(m.ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
}

// acceptHandshake runs the acceptor side; on success the link is admitted
// and the welcome sent.
func (m *Mesh) acceptHandshake(raw net.Conn) (*link, error) {
	conn := raw
	if m.cfg.TLS != nil {
		tc := tls.Server(raw, m.cfg.TLS)
		if err := tc.HandshakeContext(m.ctx); err != nil {
			if m.ctx.Err() == nil && errors.Is(err, io.EOF) {
				// crypto/tls reports io.EOF only when no byte arrived.
				return nil, errEmptyConn
			}
			return nil, tlsErr(err)
		}
		conn = tc
	}
	var pre [preambleLen]byte
	if _, err := io.ReadFull(conn, pre[:]); err != nil {
		if m.cfg.TLS == nil && m.ctx.Err() == nil && err == io.EOF {
			// io.ReadFull returns io.EOF only when no byte arrived.
			return nil, errEmptyConn
		}
		return nil, hsErr(ioReason(m.ctx, err), err)
	}
	if [4]byte(pre[:4]) != magic {
		return nil, hsErr(HSBadMagic, fmt.Errorf("got % x", pre[:4]))
	}
	if _, err := negotiateVersion(pre[4]); err != nil {
		conn.Write(appendFrame(appendPreamble(nil), frameRefuse, []byte{refuseBadVersion}))
		return nil, hsErr(HSBadVersion, err)
	}
	fr := frameReader{r: conn, limit: handshakeFrameLimit}
	typ, hbody, err := fr.next()
	if err != nil {
		return nil, hsErr(ioReason(m.ctx, err), err)
	}
	if typ != frameHello {
		return nil, hsErr(HSUnexpectedFrame, fmt.Errorf("frame %v, want %v", typ, frameHello))
	}
	peer, err := parseHello(hbody)
	if err != nil {
		return nil, hsErr(HSMalformed, err)
	}
	if peer.Name == m.name {
		code, reason := refuseSelf, HSSelf
		if peer.Incarnation != m.inc {
			code, reason = refuseNameConflict, HSNameConflict
		}
		conn.Write(appendFrame(appendPreamble(nil), frameRefuse, []byte{code}))
		return nil, hsErr(reason, fmt.Errorf("peer %s incarnation %d", peer.Name, peer.Incarnation))
	}
	self, err := m.selfHello()
	if err != nil {
		return nil, hsErr(HSIO, err)
	}
	exporter, overTLS, err := tlsExporter(conn)
	if err != nil {
		return nil, err
	}
	st, err := chooseSuite(peer.Features, self.Features, overTLS)
	if err != nil {
		conn.Write(appendFrame(appendPreamble(nil), frameRefuse, []byte{refuseBadVersion}))
		return nil, hsErr(HSBadVersion, err)
	}
	cbody := appendHello(nil, &self)
	if _, err := conn.Write(appendFrame(appendPreamble(nil), frameChallenge, cbody)); err != nil {
		return nil, hsErr(ioReason(m.ctx, err), err)
	}
	typ, pbody, err := fr.next()
	if err != nil {
		return nil, hsErr(ioReason(m.ctx, err), err)
	}
	if typ != frameProof {
		return nil, hsErr(HSUnexpectedFrame, fmt.Errorf("frame %v, want %v", typ, frameProof))
	}
	proof, err := parseMAC(pbody)
	if err != nil {
		return nil, hsErr(HSMalformed, err)
	}
	tr := transcript{vD: pre[4], vA: wireVersion, h: hbody, c: cbody, exporter: exporter}
	th := tr.hash()
	if !hmac.Equal(proof, handshakeMAC(m.cookie, labelDialer, th)) {
		conn.Write(appendFrame(nil, frameRefuse, []byte{refuseBadCookie}))
		return nil, hsErr(HSBadCookie, fmt.Errorf("proof from %s did not verify", peer.Name))
	}
	if peer.sess, err = newSession(m.cookie, th, st, false); err != nil {
		return nil, hsErr(HSIO, err)
	}
	l, old, code := m.admit(peer, conn, raw, "", nil, 0)
	if l == nil {
		conn.Write(appendFrame(nil, frameRefuse, []byte{code}))
		return nil, hsErr(refuseReason(code), fmt.Errorf("refused %s", peer.Name))
	}
	if old != nil {
		old.fail(ReasonRestarted)
	}
	welcome := appendFrame(nil, frameWelcome, handshakeMAC(m.cookie, labelAcceptor, th))
	if _, err := conn.Write(welcome); err != nil {
		l.fail(ReasonClosed)
		return nil, hsErr(ioReason(m.ctx, err), err)
	}
	m.log.Debug("mesh: accepted", "node", peer.Name, "remote", raw.RemoteAddr().String())
	return l, nil
}

// clientHandshake runs the dialer side over conn up to and including the
// check of the acceptor's welcome. expect, if not empty, is the name the
// dialer meant to reach.
func clientHandshake(conn net.Conn, cookie []byte, self hello, expect string) (hello, error) {
	hbody := appendHello(nil, &self)
	if _, err := conn.Write(appendFrame(appendPreamble(nil), frameHello, hbody)); err != nil {
		return hello{}, err
	}
	var pre [preambleLen]byte
	if _, err := io.ReadFull(conn, pre[:]); err != nil {
		return hello{}, err
	}
	if [4]byte(pre[:4]) != magic {
		return hello{}, hsErr(HSBadMagic, fmt.Errorf("got % x", pre[:4]))
	}
	if _, err := negotiateVersion(pre[4]); err != nil {
		return hello{}, hsErr(HSBadVersion, err)
	}
	fr := frameReader{r: conn, limit: handshakeFrameLimit}
	typ, cbody, err := fr.next()
	if err != nil {
		return hello{}, err
	}
	switch typ {
	case frameChallenge:
	case frameRefuse:
		code, err := parseRefuse(cbody)
		if err != nil {
			return hello{}, hsErr(HSMalformed, err)
		}
		return hello{}, hsErr(refuseReason(code), errors.New("refused by peer"))
	default:
		return hello{}, hsErr(HSUnexpectedFrame, fmt.Errorf("frame %v, want %v", typ, frameChallenge))
	}
	peer, err := parseHello(cbody)
	if err != nil {
		return hello{}, hsErr(HSMalformed, err)
	}
	if expect != "" && peer.Name != expect {
		return hello{}, hsErr(HSWrongNode, fmt.Errorf("reached %s, want %s", peer.Name, expect))
	}
	if peer.Name == self.Name {
		return hello{}, hsErr(HSSelf, errors.New("reached a node with our own name"))
	}
	if peer.Nonce == self.Nonce {
		return hello{}, hsErr(HSMalformed, errors.New("peer echoed our nonce"))
	}
	exporter, overTLS, err := tlsExporter(conn)
	if err != nil {
		return hello{}, err
	}
	st, err := chooseSuite(self.Features, peer.Features, overTLS)
	if err != nil {
		return hello{}, hsErr(HSBadVersion, err)
	}
	tr := transcript{vD: wireVersion, vA: pre[4], h: hbody, c: cbody, exporter: exporter}
	th := tr.hash()
	proof := appendFrame(nil, frameProof, handshakeMAC(cookie, labelDialer, th))
	if _, err := conn.Write(proof); err != nil {
		return hello{}, err
	}
	typ, body, err := fr.next()
	if err != nil {
		return hello{}, err
	}
	switch typ {
	case frameWelcome:
	case frameRefuse:
		code, err := parseRefuse(body)
		if err != nil {
			return hello{}, hsErr(HSMalformed, err)
		}
		return hello{}, hsErr(refuseReason(code), errors.New("refused by peer"))
	default:
		return hello{}, hsErr(HSUnexpectedFrame, fmt.Errorf("frame %v, want %v", typ, frameWelcome))
	}
	mac, err := parseMAC(body)
	if err != nil {
		return hello{}, hsErr(HSMalformed, err)
	}
	if !hmac.Equal(mac, handshakeMAC(cookie, labelAcceptor, th)) {
		return hello{}, hsErr(HSBadCookie, fmt.Errorf("welcome from %s did not verify", peer.Name))
	}
	if peer.sess, err = newSession(cookie, th, st, true); err != nil {
		return hello{}, hsErr(HSIO, err)
	}
	return peer, nil
}

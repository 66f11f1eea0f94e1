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

// handshakeError carries the reason counted in Stats.HandshakeFailures.
type handshakeError struct {
	reason string
	err    error
}

func (e *handshakeError) Error() string {
	if e.err == nil {
		return "mesh handshake: " + e.reason
	}
	return "mesh handshake: " + e.reason + ": " + e.err.Error()
}

func (e *handshakeError) Unwrap() error { return e.err }

func hsErr(reason string, err error) error { return &handshakeError{reason: reason, err: err} }

// tlsErr classifies a failed TLS handshake: a deadline is a timeout like any
// other silent handshake.
func tlsErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return hsErr("timeout", err)
	}
	return hsErr("tls", err)
}

// ioReason classifies a read or write error during the handshake.
func ioReason(ctx context.Context, err error) string {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return "shutdown"
	case errors.Is(err, errFrameTooLarge):
		return "frame_too_large"
	case errors.Is(err, errMalformed):
		return "malformed"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.EPIPE):
		return "closed"
	}
	return "io"
}

// reasonOf is the Stats.HandshakeFailures reason of a handshake error.
func reasonOf(ctx context.Context, err error) string {
	var he *handshakeError
	if ctx.Err() != nil {
		return "shutdown"
	}
	if errors.As(err, &he) {
		return he.reason
	}
	return ioReason(ctx, err)
}

// selfHello is our hello with a fresh nonce.
func (m *Mesh) selfHello() (hello, error) {
	h := hello{Incarnation: m.inc, Start: m.start, MaxMessage: uint32(m.cfg.MaxMessageSize),
		Name: m.name, Addr: m.addr}
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
			return nil, tlsErr(err)
		}
		conn = tc
	}
	var pre [preambleLen]byte
	if _, err := io.ReadFull(conn, pre[:]); err != nil {
		return nil, hsErr(ioReason(m.ctx, err), err)
	}
	if [4]byte(pre[:4]) != magic {
		return nil, hsErr("bad_magic", fmt.Errorf("got % x", pre[:4]))
	}
	if pre[4] != protoVersion {
		conn.Write(appendFrame(appendPreamble(nil), frameRefuse, []byte{refuseBadVersion}))
		return nil, hsErr("bad_version", fmt.Errorf("version %d", pre[4]))
	}
	fr := frameReader{r: conn, limit: handshakeFrameLimit}
	typ, hbody, err := fr.next()
	if err != nil {
		return nil, hsErr(ioReason(m.ctx, err), err)
	}
	if typ != frameHello {
		return nil, hsErr("unexpected_frame", fmt.Errorf("frame type 0x%02x, want hello", typ))
	}
	peer, err := parseHello(hbody)
	if err != nil {
		return nil, hsErr("malformed", err)
	}
	if peer.Name == m.name {
		code, reason := refuseSelf, "self"
		if peer.Incarnation != m.inc {
			code, reason = refuseNameConflict, "name_conflict"
		}
		conn.Write(appendFrame(appendPreamble(nil), frameRefuse, []byte{code}))
		return nil, hsErr(reason, fmt.Errorf("peer %s incarnation %d", peer.Name, peer.Incarnation))
	}
	self, err := m.selfHello()
	if err != nil {
		return nil, hsErr("io", err)
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
		return nil, hsErr("unexpected_frame", fmt.Errorf("frame type 0x%02x, want proof", typ))
	}
	proof, err := parseMAC(pbody)
	if err != nil {
		return nil, hsErr("malformed", err)
	}
	if !hmac.Equal(proof, handshakeMAC(m.cookie, labelDialer, hbody, cbody)) {
		conn.Write(appendFrame(nil, frameRefuse, []byte{refuseBadCookie}))
		return nil, hsErr("bad_cookie", fmt.Errorf("proof from %s did not verify", peer.Name))
	}
	l, old, code := m.admit(peer, conn, raw, false, nil, 0)
	if l == nil {
		conn.Write(appendFrame(nil, frameRefuse, []byte{code}))
		return nil, hsErr(refuseReason(code), fmt.Errorf("refused %s", peer.Name))
	}
	if old != nil {
		old.fail(ReasonRestarted)
	}
	welcome := appendFrame(nil, frameWelcome, handshakeMAC(m.cookie, labelAcceptor, hbody, cbody))
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
		return hello{}, hsErr("bad_magic", fmt.Errorf("got % x", pre[:4]))
	}
	if pre[4] != protoVersion {
		return hello{}, hsErr("bad_version", fmt.Errorf("version %d", pre[4]))
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
			return hello{}, hsErr("malformed", err)
		}
		return hello{}, hsErr(refuseReason(code), errors.New("refused by peer"))
	default:
		return hello{}, hsErr("unexpected_frame", fmt.Errorf("frame type 0x%02x, want challenge", typ))
	}
	peer, err := parseHello(cbody)
	if err != nil {
		return hello{}, hsErr("malformed", err)
	}
	if expect != "" && peer.Name != expect {
		return hello{}, hsErr("wrong_node", fmt.Errorf("reached %s, want %s", peer.Name, expect))
	}
	if peer.Name == self.Name {
		return hello{}, hsErr("self", errors.New("reached a node with our own name"))
	}
	if peer.Nonce == self.Nonce {
		return hello{}, hsErr("malformed", errors.New("peer echoed our nonce"))
	}
	proof := appendFrame(nil, frameProof, handshakeMAC(cookie, labelDialer, hbody, cbody))
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
			return hello{}, hsErr("malformed", err)
		}
		return hello{}, hsErr(refuseReason(code), errors.New("refused by peer"))
	default:
		return hello{}, hsErr("unexpected_frame", fmt.Errorf("frame type 0x%02x, want welcome", typ))
	}
	mac, err := parseMAC(body)
	if err != nil {
		return hello{}, hsErr("malformed", err)
	}
	if !hmac.Equal(mac, handshakeMAC(cookie, labelAcceptor, hbody, cbody)) {
		return hello{}, hsErr("bad_cookie", fmt.Errorf("welcome from %s did not verify", peer.Name))
	}
	return peer, nil
}

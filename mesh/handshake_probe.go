package mesh

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"time"
)

// ProbeResult is what Probe learned about the node at an address.
type ProbeResult struct {
	// Node is the name the node announced ("" when the handshake failed
	// before its challenge).
	Node string
	// Reason classifies a failed handshake (HSBadCookie: the node refused
	// our cookie proof, or its welcome did not verify with our cookie);
	// empty on success.
	Reason HandshakeReason
}

// Probe dials addr and runs the dialer's side of the handshake with
// cookie, as the throwaway node name (advertising advertise, "host:port"),
// to learn whether the node there accepts the cookie; on success it says
// goodbye at once, so the node logs the prober up and then left. tlsCfg is
// the mesh's TLS configuration, nil for none. The error, if any, is the
// handshake's; errors.Is does not classify it: use Reason. It is meant for
// diagnostics (macula doctor), not for membership.
func Probe(ctx context.Context, addr, name, advertise, cookie string, tlsCfg *tls.Config) (ProbeResult, error) {
	var res ProbeResult
	d := net.Dialer{}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return res, fmt.Errorf("mesh: probe %s: %w", addr, err)
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	conn := net.Conn(raw)
	if tlsCfg != nil {
		cfg := tlsCfg
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		tc := tls.Client(raw, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			res.Reason = reasonOf(ctx, tlsErr(err))
			return res, fmt.Errorf("mesh: probe %s: %w", addr, err)
		}
		conn = tc
	}
	var inc [8]byte
	rand.Read(inc[:])
	self := hello{Incarnation: binary.BigEndian.Uint64(inc[:]) | 1, Start: time.Now().UnixNano(),
		MaxMessage: DefaultMaxMessageSize, Name: name, Addr: advertise, Features: sealFeatures}
	if tlsCfg != nil {
		self.Features = 0
	}
	rand.Read(self.Nonce[:])
	peer, err := clientHandshake(conn, []byte(cookie), self, "")
	res.Node = peer.Name
	if err != nil {
		res.Reason = reasonOf(ctx, err)
		return res, fmt.Errorf("mesh: probe %s: %w", addr, err)
	}
	q := newSendQueue(1, peer.sess.sendAEAD())
	q.pushFrame(frameGoodbye, nil)
	w := &queueWriter{q: q, dw: &deadlineWriter{c: conn, d: time.Second}, aead: q.aead, st: new(counters)}
	if w.flush() == nil {
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		var b [1]byte
		conn.SetReadDeadline(time.Now().Add(time.Second))
		conn.Read(b[:]) // until the node closes (bounded)
	}
	return res, nil
}

package mesh

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
)

// Record layer constants. doc.go describes the construction.
const (
	recordHeaderLen = 4
	sealOverhead    = 16 // the AEAD tag (both ciphers)
	// maxRecordPlain bounds the plaintext of one record: the writer seals
	// what it has at every flush, or whenever this much is buffered, and
	// seals large message bodies (directSeal) in records of at most this
	// size. 128 KiB holds a 64 KiB body whole (one seal, one open, one
	// reader wake-up); 64 KiB records measured 10-20% slower for such
	// messages.
	maxRecordPlain = 128 << 10
	maxRecordBody  = maxRecordPlain + sealOverhead
	keyLen         = 32
	exporterLen    = 32
)

// exporterLabel is the TLS exporter label (RFC 8446 section 7.5) whose
// output binds the cookie proof to the TLS session.
const exporterLabel = "EXPORTER-macula-mesh cookie binding"

// Labels of the handshake MACs and the HKDF outputs.
const (
	labelTranscript = "macula-mesh/2 transcript\x00"
	labelDialer     = "macula-mesh/2 dialer proof\x00"
	labelAcceptor   = "macula-mesh/2 acceptor proof\x00"
	labelKeyDA      = "macula-mesh/2 key dialer to acceptor "
	labelKeyAD      = "macula-mesh/2 key acceptor to dialer "
)

// HSTampered is the Stats.ProtocolErrors reason of a link closed because a
// sealed record did not open.
const HSTampered HandshakeReason = "tampered"

// errTampered: a sealed record did not open. Never a network accident:
// TCP delivers bytes in order or fails, so a record that does not open was
// altered, injected, replayed, reordered or cut by someone on the path.
var errTampered = errors.New("mesh: sealed record did not open (tampered, injected or replayed)")

// transcript is what both handshake MACs and the link keys depend on.
type transcript struct {
	vD, vA   byte   // preamble version bytes as sent by the dialer and the acceptor
	h, c     []byte // hello and challenge bodies as sent
	exporter []byte // TLS exporter of this connection; nil over plain TCP
}

// hash is SHA-256(labelTranscript || vD || vA || u16 len H || H ||
// u16 len C || C || u8 len X || X).
func (t *transcript) hash() []byte {
	s := sha256.New()
	s.Write([]byte(labelTranscript))
	s.Write([]byte{t.vD, t.vA})
	var n [2]byte
	binary.BigEndian.PutUint16(n[:], uint16(len(t.h)))
	s.Write(n[:])
	s.Write(t.h)
	binary.BigEndian.PutUint16(n[:], uint16(len(t.c)))
	s.Write(n[:])
	s.Write(t.c)
	s.Write([]byte{byte(len(t.exporter))})
	s.Write(t.exporter)
	return s.Sum(nil)
}

// handshakeMAC is HMAC-SHA256(cookie, label || th), th the transcript hash.
// The transcript holds both versions, names, incarnations, nonces, start
// times, addresses and features, and the TLS exporter, so the MAC binds all
// of them; the label binds the direction.
func handshakeMAC(cookie []byte, label string, th []byte) []byte {
	mac := hmac.New(sha256.New, cookie)
	mac.Write([]byte(label))
	mac.Write(th)
	return mac.Sum(nil)
}

// tlsExporter returns the exporter of conn if it is a TLS connection, nil
// otherwise. Both ends of one TLS session compute the same value; the two
// sessions of a relay that terminates TLS on both sides do not.
func tlsExporter(conn net.Conn) ([]byte, bool, error) {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return nil, false, nil
	}
	cs := tc.ConnectionState()
	x, err := cs.ExportKeyingMaterial(exporterLabel, nil, exporterLen)
	if err != nil {
		return nil, true, hsErr(HSTLS, fmt.Errorf("TLS exporter: %w", err))
	}
	return x, true, nil
}

// session is the record protection of a verified link: nil AEADs over TLS.
type session struct {
	suite      suite
	send, recv cipher.AEAD
}

// newSession derives the per-direction keys of a link:
//
//	prk   = HKDF-Extract(SHA-256, salt = th, ikm = cookie)
//	k_D2A = HKDF-Expand(prk, "macula-mesh/2 key dialer to acceptor " || suite name, 32)
//	k_A2D = HKDF-Expand(prk, "macula-mesh/2 key acceptor to dialer " || suite name, 32)
//
// th, the transcript hash, holds both fresh nonces, so every link (and
// every direction) has keys of its own.
func newSession(cookie, th []byte, s suite, dialer bool) (*session, error) {
	ss := &session{suite: s}
	if s == suiteNone {
		return ss, nil
	}
	prk := hkdf.Extract(sha256.New, cookie, th)
	da, err := newAEAD(s, expand(prk, labelKeyDA+s.String()))
	if err != nil {
		return nil, err
	}
	ad, err := newAEAD(s, expand(prk, labelKeyAD+s.String()))
	if err != nil {
		return nil, err
	}
	if dialer {
		ss.send, ss.recv = da, ad
	} else {
		ss.send, ss.recv = ad, da
	}
	return ss, nil
}

// sendAEAD is the key records are sealed with; nil over TLS and wire
// version 1 (s nil or suite none).
func (s *session) sendAEAD() cipher.AEAD {
	if s == nil {
		return nil
	}
	return s.send
}

func expand(prk []byte, info string) []byte {
	k := make([]byte, keyLen)
	if _, err := io.ReadFull(hkdf.Expand(sha256.New, prk, []byte(info)), k); err != nil {
		panic(err) // 32 bytes of HKDF-SHA256 cannot fail
	}
	return k
}

func newAEAD(s suite, key []byte) (cipher.AEAD, error) {
	switch s {
	case suiteAESGCM:
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	case suiteChaCha:
		return chacha20poly1305.New(key)
	}
	return nil, fmt.Errorf("mesh: no AEAD for %v", s)
}

// recordNonce is the 96-bit nonce of record number ctr: 4 zero bytes, then
// ctr big-endian. Each direction has its own key, so (key, nonce) never
// repeats while ctr does not wrap, and ctr never wraps: a writer stops
// before (errCounter).
func recordNonce(n *[12]byte, ctr uint64) []byte {
	binary.BigEndian.PutUint64(n[4:], ctr)
	return n[:]
}

var errCounter = errors.New("mesh: record counter exhausted")

// openReader reads sealed records from src and returns their plaintext, in
// order. Records are opened in place in its buffer, or straight into the
// caller's buffer when the whole plaintext fits there. A record that does not
// open, or the record after counter 2^64-1, is errTampered; a length out of
// range is errFrameTooLarge or errMalformed, checked before reading the body.
// io.EOF means the stream ended between records.
type openReader struct {
	src   io.Reader
	aead  cipher.AEAD
	ctr   uint64
	nonce [12]byte
	buf   []byte
	r, w  int    // buf[r:w]: bytes read and not yet opened
	plain []byte // opened plaintext not yet returned (in buf)
	err   error
}

// The reader's buffer: openBufInit bytes until a record needs more, then
// openBufSize (a whole record and readBufSize behind it). Most links only
// ever carry small records (ticks, peers, small messages): a link costs
// 16 KiB of buffer, not 196 KiB, and no more time to set up.
const (
	openBufInit = 16 << 10
	openBufSize = recordHeaderLen + maxRecordBody + readBufSize
)

func newOpenReader(src io.Reader, aead cipher.AEAD) *openReader {
	return &openReader{src: src, aead: aead, buf: make([]byte, openBufInit)}
}

// Read returns opened plaintext. A record whose plaintext fits in p (a
// message body sealed directly) is opened straight into p, not in place and
// then copied.
func (o *openReader) Read(p []byte) (int, error) {
	for len(o.plain) == 0 {
		if o.err != nil {
			return 0, o.err
		}
		var n int
		n, o.err = o.next(p)
		if n > 0 {
			return n, nil
		}
	}
	n := copy(p, o.plain)
	o.plain = o.plain[n:]
	return n, nil
}

// Buffered, Peek and Discard give the opened plaintext not yet returned
// (bufferedReader): Peek never reads, n is at most Buffered().
func (o *openReader) Buffered() int { return len(o.plain) }

func (o *openReader) Peek(n int) ([]byte, error) { return o.plain[:n], nil }

func (o *openReader) Discard(n int) (int, error) {
	o.plain = o.plain[n:]
	return n, nil
}

// next opens the next record: into p when its plaintext fits there (and
// returns its length), else in place into o.plain (and returns 0).
func (o *openReader) next(p []byte) (int, error) {
	if err := o.fill(recordHeaderLen); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint32(o.buf[o.r:]))
	switch {
	case n > maxRecordBody:
		return 0, fmt.Errorf("%w: record of %d bytes > %d", errFrameTooLarge, n, maxRecordBody)
	case n <= sealOverhead:
		return 0, fmt.Errorf("%w: record of %d bytes", errMalformed, n)
	}
	if err := o.fill(recordHeaderLen + n); err != nil {
		return 0, unexpected(err)
	}
	if o.ctr == math.MaxUint64 {
		return 0, errTampered
	}
	hdr := o.buf[o.r : o.r+recordHeaderLen]
	body := o.buf[o.r+recordHeaderLen : o.r+recordHeaderLen+n]
	dst, direct := body[:0], n-sealOverhead <= len(p)
	if direct {
		dst = p[:0]
	}
	pt, err := o.aead.Open(dst, recordNonce(&o.nonce, o.ctr), body, hdr)
	if err != nil {
		return 0, fmt.Errorf("%w: record %d", errTampered, o.ctr)
	}
	o.ctr++
	o.r += recordHeaderLen + n
	if direct {
		return len(pt), nil
	}
	o.plain = pt
	return 0, nil
}

// fill reads until buf[r:w] holds at least need bytes. Called only when
// o.plain is empty, so unread plaintext is never moved.
func (o *openReader) fill(need int) error {
	for o.w-o.r < need {
		if len(o.buf)-o.r < need {
			buf := o.buf
			if need > len(buf) {
				// The first record larger than the initial buffer:
				// full size from now on.
				buf = make([]byte, openBufSize)
			}
			o.w = copy(buf, o.buf[o.r:o.w])
			o.r, o.buf = 0, buf
		}
		k, err := o.src.Read(o.buf[o.w:])
		o.w += k
		if err != nil {
			if o.w-o.r >= need {
				return nil
			}
			if err == io.EOF && o.w > o.r {
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

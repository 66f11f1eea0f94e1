package mesh

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
)

// Wire constants. doc.go describes the format byte by byte.
const (
	preambleLen    = 5  // magic (4) + version (1)
	nonceLen       = 32 // bytes of fresh randomness per side per handshake
	macLen         = sha256.Size
	frameHeaderLen = 5 // 4-byte big-endian length + 1-byte type
	// handshakeFrameLimit bounds the length field of every frame read before
	// the peer has proved it holds the cookie. A hello is at most
	// helloFixedLen+2+255+255+8 bytes plus extensions.
	handshakeFrameLimit = 1024
	helloFixedLen       = 8 + 8 + 4 + nonceLen // incarnation, start, max message, nonce
	featuresLen         = 8
	maxFieldLen         = 255
	// maxPeersPerFrame bounds the entries of one peers frame.
	maxPeersPerFrame = 4096
)

// magic opens every mesh connection, in both directions.
var magic = [4]byte{'M', 'C', 'L', 'A'}

// frameType is the type byte of a frame.
type frameType byte

// Frame types.
const (
	frameHello     frameType = 0x01 // dialer -> acceptor: hello
	frameChallenge frameType = 0x02 // acceptor -> dialer: hello of the acceptor
	frameProof     frameType = 0x03 // dialer -> acceptor: dialer's HMAC
	frameWelcome   frameType = 0x04 // acceptor -> dialer: acceptor's HMAC, link is up
	frameRefuse    frameType = 0x05 // either way during the handshake: 1-byte reason code
	frameTick      frameType = 0x10 // keepalive, empty body
	frameMessage   frameType = 0x11 // user payload
	framePeers     frameType = 0x12 // the sender's links: (name, addr) list
	frameGoodbye   frameType = 0x13 // the sender is shutting down, empty body
	// lastHandshakeFrame: types up to here are handshake frames, a protocol
	// error after the handshake. Other unknown types after the handshake
	// are ignored, so a later version may add frames.
	lastHandshakeFrame frameType = 0x0f
)

// String names a frame type for error messages and logs: "hello (0x01)",
// or "0x7f" for an unknown type.
func (t frameType) String() string {
	name := ""
	switch t {
	case frameHello:
		name = "hello"
	case frameChallenge:
		name = "challenge"
	case frameProof:
		name = "proof"
	case frameWelcome:
		name = "welcome"
	case frameRefuse:
		name = "refuse"
	case frameTick:
		name = "tick"
	case frameMessage:
		name = "message"
	case framePeers:
		name = "peers"
	case frameGoodbye:
		name = "goodbye"
	default:
		return fmt.Sprintf("0x%02x", byte(t))
	}
	return fmt.Sprintf("%s (0x%02x)", name, byte(t))
}

// Refuse codes carried by a refuse frame.
const (
	refuseDuplicate    byte = 1 // a link (or a winning dial) for this pair exists
	refuseStale        byte = 2 // the dialer is an older incarnation than the current link
	refuseSelf         byte = 3 // the dialer reached itself
	refuseNameConflict byte = 4 // another live node uses the acceptor's name
	refuseShutdown     byte = 5 // the acceptor is closing
	refuseBadVersion   byte = 6 // protocol version not supported
	refuseBadCookie    byte = 7 // the dialer's proof did not verify
	refuseLeft         byte = 8 // this incarnation of the dialer said goodbye
	// refuseForgotten is local only (never on the wire): the dialer was
	// told to Forget the peer while the handshake ran.
	refuseForgotten byte = 0x80
)

// refuseReason maps a refuse code to the handshake failure reason.
func refuseReason(code byte) HandshakeReason {
	switch code {
	case refuseDuplicate:
		return HSDuplicate
	case refuseStale:
		return HSStale
	case refuseSelf:
		return HSSelf
	case refuseNameConflict:
		return HSNameConflict
	case refuseShutdown:
		return HSShutdown
	case refuseBadVersion:
		return HSBadVersion
	case refuseBadCookie:
		return HSBadCookie
	case refuseLeft:
		return HSLeft
	case refuseForgotten:
		return HSForgotten
	}
	return HSRefused
}

var (
	errFrameTooLarge = errors.New("frame length over limit")
	errMalformed     = errors.New("malformed message")
)

// appendPreamble appends magic and the highest version this node speaks.
func appendPreamble(dst []byte) []byte {
	dst = append(dst, magic[:]...)
	return append(dst, wireVersion)
}

// appendFrame appends one frame: length (1 + len(body)), type, body.
func appendFrame(dst []byte, typ frameType, body []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(1+len(body)))
	dst = append(dst, byte(typ))
	return append(dst, body...)
}

// frameReader reads frames from r. limit bounds the length field (type byte
// plus body); a larger claimed length is refused before anything is
// allocated, so a frame never costs more than limit bytes of memory.
type frameReader struct {
	r     io.Reader
	limit int
	hdr   [frameHeaderLen]byte
}

// next reads one frame. The body is freshly allocated (nil when empty) and
// owned by the caller. io.EOF means the stream ended cleanly between frames;
// io.ErrUnexpectedEOF means it ended inside one.
func (fr *frameReader) next() (typ frameType, body []byte, err error) {
	if br, ok := fr.r.(bufferedReader); ok {
		if typ, body, ok := fr.buffered(br); ok {
			return typ, body, nil
		}
	}
	if _, err := io.ReadFull(fr.r, fr.hdr[:4]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(fr.hdr[:4])
	if n == 0 {
		return 0, nil, fmt.Errorf("%w: zero frame length", errMalformed)
	}
	if uint64(n) > uint64(fr.limit) {
		return 0, nil, fmt.Errorf("%w: %d > %d", errFrameTooLarge, n, fr.limit)
	}
	if _, err := io.ReadFull(fr.r, fr.hdr[4:5]); err != nil {
		return 0, nil, unexpected(err)
	}
	typ = frameType(fr.hdr[4])
	if n == 1 {
		return typ, nil, nil
	}
	body = make([]byte, n-1)
	if _, err := io.ReadFull(fr.r, body); err != nil {
		return 0, nil, unexpected(err)
	}
	return typ, body, nil
}

// bufferedReader is a reader whose buffered bytes can be read in place:
// bufio.Reader, openReader.
type bufferedReader interface {
	Buffered() int
	Peek(n int) ([]byte, error)
	Discard(n int) (int, error)
}

// buffered returns the next frame if it is buffered whole and valid (else
// next reads it the long way, and reports what is wrong with it): one
// copy out of the buffer, no Read calls.
func (fr *frameReader) buffered(br bufferedReader) (frameType, []byte, bool) {
	b := br.Buffered()
	if b < frameHeaderLen {
		return 0, nil, false
	}
	h, _ := br.Peek(frameHeaderLen)
	n := int(binary.BigEndian.Uint32(h))
	if n == 0 || n > fr.limit || b < 4+n {
		return 0, nil, false
	}
	f, _ := br.Peek(4 + n)
	var body []byte
	if n > 1 {
		body = append([]byte(nil), f[frameHeaderLen:]...)
	}
	br.Discard(4 + n)
	return frameType(f[4]), body, true
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// hello is the identity message each side sends during the handshake
// (type hello from the dialer, type challenge from the acceptor).
type hello struct {
	Incarnation uint64         // random, never 0, fresh at every Start
	Start       int64          // Unix nanoseconds of Start: orders incarnations of one name
	MaxMessage  uint32         // largest payload the sender accepts
	Nonce       [nonceLen]byte // fresh random bytes
	Name        string         // "name@host"
	Addr        string         // advertised "host:port"
	Features    uint64         // feature bits offered (featSeal...)

	// Tags is the value of the extTags extension (tags.go), "" = none: a
	// string, so that a hello stays comparable.
	Tags string

	// sess is set on the peer's hello once the handshake verified: the
	// negotiated record protection and keys. Never on the wire.
	sess *session
}

// appendHello appends the body of a hello or challenge frame.
func appendHello(dst []byte, h *hello) []byte {
	dst = binary.BigEndian.AppendUint64(dst, h.Incarnation)
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.Start))
	dst = binary.BigEndian.AppendUint32(dst, h.MaxMessage)
	dst = append(dst, h.Nonce[:]...)
	dst = append(dst, byte(len(h.Name)))
	dst = append(dst, h.Name...)
	dst = append(dst, byte(len(h.Addr)))
	dst = append(dst, h.Addr...)
	return appendExtensions(binary.BigEndian.AppendUint64(dst, h.Features), h)
}

// parseHello parses and validates a hello or challenge body. Bytes after
// the features are ignored: later versions append fields there, and the
// handshake MAC covers the whole body as sent, so they cannot be altered.
func parseHello(b []byte) (hello, error) {
	var h hello
	if len(b) < helloFixedLen+2 {
		return h, fmt.Errorf("%w: hello of %d bytes", errMalformed, len(b))
	}
	h.Incarnation = binary.BigEndian.Uint64(b[0:8])
	h.Start = int64(binary.BigEndian.Uint64(b[8:16]))
	h.MaxMessage = binary.BigEndian.Uint32(b[16:20])
	copy(h.Nonce[:], b[20:20+nonceLen])
	rest := b[helloFixedLen:]
	name, rest, ok := cutField(rest)
	if !ok {
		return h, fmt.Errorf("%w: hello name", errMalformed)
	}
	addr, rest, ok := cutField(rest)
	if !ok {
		return h, fmt.Errorf("%w: hello addr", errMalformed)
	}
	if len(rest) < featuresLen {
		return h, fmt.Errorf("%w: hello features", errMalformed)
	}
	h.Features = binary.BigEndian.Uint64(rest)
	parseExtensions(rest[featuresLen:], &h)
	h.Name, h.Addr = string(name), string(addr)
	if h.Incarnation == 0 {
		return h, fmt.Errorf("%w: zero incarnation", errMalformed)
	}
	if h.MaxMessage == 0 {
		return h, fmt.Errorf("%w: zero max message size", errMalformed)
	}
	if err := validateName(h.Name); err != nil {
		return h, fmt.Errorf("%w: %w", errMalformed, err)
	}
	if err := validateAddr(h.Addr); err != nil {
		return h, fmt.Errorf("%w: %w", errMalformed, err)
	}
	return h, nil
}

// cutField splits a 1-byte-length-prefixed, non-empty field off b.
func cutField(b []byte) (field, rest []byte, ok bool) {
	if len(b) < 1 {
		return nil, nil, false
	}
	n := int(b[0])
	if n == 0 || len(b) < 1+n {
		return nil, nil, false
	}
	return b[1 : 1+n], b[1+n:], true
}

// parseMAC checks the body of a proof or welcome frame.
func parseMAC(b []byte) ([]byte, error) {
	if len(b) != macLen {
		return nil, fmt.Errorf("%w: proof of %d bytes", errMalformed, len(b))
	}
	return b, nil
}

// parseRefuse checks the body of a refuse frame: the code, then bytes that
// later versions may add (ignored).
func parseRefuse(b []byte) (byte, error) {
	if len(b) < 1 {
		return 0, fmt.Errorf("%w: refuse of %d bytes", errMalformed, len(b))
	}
	return b[0], nil
}

// peerInfo is one entry of a peers frame.
type peerInfo struct{ Name, Addr string }

// appendPeers appends a peers body: u16 count, then per entry a
// 1-byte-length name and a 1-byte-length addr. Entries that would make the
// body longer than limit bytes are left out.
func appendPeers(dst []byte, ps []peerInfo, limit int) []byte {
	start := len(dst)
	dst = append(dst, 0, 0)
	n := 0
	for _, p := range ps {
		if n == maxPeersPerFrame || len(p.Name) == 0 || len(p.Name) > maxFieldLen ||
			len(p.Addr) == 0 || len(p.Addr) > maxFieldLen {
			continue
		}
		if len(dst)-start+2+len(p.Name)+len(p.Addr) > limit {
			break
		}
		dst = append(dst, byte(len(p.Name)))
		dst = append(dst, p.Name...)
		dst = append(dst, byte(len(p.Addr)))
		dst = append(dst, p.Addr...)
		n++
	}
	binary.BigEndian.PutUint16(dst[start:], uint16(n))
	return dst
}

// parsePeers parses and validates a peers body. Trailing bytes are ignored
// (later versions may append to the frame; it travels inside a sealed
// record or TLS).
func parsePeers(b []byte) ([]peerInfo, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: peers of %d bytes", errMalformed, len(b))
	}
	n := int(binary.BigEndian.Uint16(b))
	if n > maxPeersPerFrame {
		return nil, fmt.Errorf("%w: %d peers", errMalformed, n)
	}
	// Each entry takes at least 4 bytes: do not trust n for the allocation.
	if n > (len(b)-2)/4 {
		return nil, fmt.Errorf("%w: %d peers in %d bytes", errMalformed, n, len(b))
	}
	out := make([]peerInfo, 0, n)
	rest := b[2:]
	for range n {
		var name, addr []byte
		var ok bool
		if name, rest, ok = cutField(rest); !ok {
			return nil, fmt.Errorf("%w: peer name", errMalformed)
		}
		if addr, rest, ok = cutField(rest); !ok {
			return nil, fmt.Errorf("%w: peer addr", errMalformed)
		}
		p := peerInfo{Name: string(name), Addr: string(addr)}
		if err := validateName(p.Name); err != nil {
			return nil, fmt.Errorf("%w: %w", errMalformed, err)
		}
		if err := validateAddr(p.Addr); err != nil {
			return nil, fmt.Errorf("%w: %w", errMalformed, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// validateAddr checks a dialable "host:port".
func validateAddr(addr string) error {
	if len(addr) == 0 || len(addr) > maxFieldLen {
		return fmt.Errorf("%w %q: length", ErrInvalidAddr, addr)
	}
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w %q: byte 0x%02x", ErrInvalidAddr, addr, c)
		}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w %q: %w", ErrInvalidAddr, addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 || host == "" {
		return fmt.Errorf("%w %q: want host:port with port 1-65535", ErrInvalidAddr, addr)
	}
	return nil
}

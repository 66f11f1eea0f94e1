package erldist

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
)

// Distribution capability flags (erts "Distribution Protocol", DFLAG_*).
const (
	flagPublished          = 0x1
	flagExtendedReferences = 0x4
	flagDistMonitor        = 0x8
	flagFunTags            = 0x10
	flagDistMonitorName    = 0x20
	flagNewFunTags         = 0x80
	flagExtendedPidsPorts  = 0x100
	flagExportPtrTag       = 0x200
	flagBitBinaries        = 0x400
	flagNewFloats          = 0x800
	flagUnicodeIO          = 0x1000
	flagSmallAtomTags      = 0x4000
	flagUTF8Atoms          = 0x10000
	flagMapTag             = 0x20000
	flagBigCreation        = 0x40000
	flagSendSender         = 0x80000
	flagBigSeqtraceLabels  = 0x100000
	flagExitPayload        = 0x400000
	flagHandshake23        = 0x1000000
	flagUnlinkID           = 0x2000000
	flagV4NC               = 1 << 34
	flagAlias              = 1 << 35

	// What this implementation speaks; no atom cache, no fragments, no spawn requests.
	ourFlags = flagExtendedReferences | flagDistMonitor | flagFunTags | flagDistMonitorName |
		flagNewFunTags | flagExtendedPidsPorts | flagExportPtrTag | flagBitBinaries | flagNewFloats |
		flagUnicodeIO | flagSmallAtomTags | flagUTF8Atoms | flagMapTag | flagBigCreation |
		flagSendSender | flagBigSeqtraceLabels | flagExitPayload | flagHandshake23 | flagUnlinkID |
		flagV4NC | flagAlias
	// What a peer must offer (the OTP 23+ handshake and the term forms we decode).
	requiredFlags = flagExtendedReferences | flagExtendedPidsPorts | flagUTF8Atoms | flagBigCreation |
		flagNewFloats | flagHandshake23
)

// Handshake errors, matched with errors.Is.
var (
	ErrAuth         = errors.New("erldist: cookie mismatch")
	ErrHandshake    = errors.New("erldist: handshake failed")
	errSimultaneous = errors.New("erldist: simultaneous connect lost to the peer's attempt")
)

// simultaneousMsg is the debug log message of each simultaneous connect the node sees, with
// the winner: the attempt of the greater name goes on, the other is dropped.
const simultaneousMsg = "erldist: simultaneous connect"

const maxHandshakeMsg = 4096

func readHS(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n == 0 || n > maxHandshakeMsg {
		return nil, fmt.Errorf("%w: message length %d", ErrHandshake, n)
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r, b)
	return b, err
}

func writeHS(w io.Writer, msg []byte) error {
	_, err := w.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...))
	return err
}

func digest(cookie string, challenge uint32) [16]byte {
	return md5.Sum([]byte(cookie + strconv.FormatUint(uint64(challenge), 10)))
}

func newChallenge() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

// nameMsg is the 'N' message: flags, [challenge,] creation, name.
func nameMsg(flags uint64, challenge *uint32, creation uint32, name Atom) []byte {
	b := binary.BigEndian.AppendUint64([]byte{'N'}, flags)
	if challenge != nil {
		b = binary.BigEndian.AppendUint32(b, *challenge)
	}
	b = binary.BigEndian.AppendUint32(b, creation)
	b = binary.BigEndian.AppendUint16(b, uint16(len(name)))
	return append(b, name...)
}

type peerInfo struct {
	name      Atom
	flags     uint64
	creation  uint32
	challenge uint32
	accepted  bool // acceptor: decideAccept counted the handshake (acceptDone must follow)
}

func parseNameMsg(b []byte, withChallenge bool) (peerInfo, error) {
	var p peerInfo
	need := 1 + 8 + 4 + 2
	if withChallenge {
		need += 4
	}
	if len(b) < need || b[0] != 'N' {
		if len(b) > 0 && b[0] == 'n' {
			return p, fmt.Errorf("%w: peer uses the pre-OTP-23 handshake (version 5)", ErrHandshake)
		}
		return p, fmt.Errorf("%w: bad name message", ErrHandshake)
	}
	p.flags = binary.BigEndian.Uint64(b[1:])
	off := 9
	if withChallenge {
		p.challenge = binary.BigEndian.Uint32(b[off:])
		off += 4
	}
	p.creation = binary.BigEndian.Uint32(b[off:])
	nl := int(binary.BigEndian.Uint16(b[off+4:]))
	if off+6+nl > len(b) || nl == 0 {
		return p, fmt.Errorf("%w: bad name length", ErrHandshake)
	}
	p.name = Atom(b[off+6 : off+6+nl])
	if p.flags&requiredFlags != requiredFlags {
		return p, fmt.Errorf("%w: peer %s lacks flags %#x", ErrHandshake, p.name, requiredFlags&^p.flags)
	}
	return p, nil
}

// handshakeInitiator runs the initiating side on c (already dialled to the node named want).
func (n *Node) handshakeInitiator(c net.Conn, want Atom) (peerInfo, error) {
	if err := writeHS(c, nameMsg(n.flags(), nil, n.creation, n.name)); err != nil {
		return peerInfo{}, err
	}
	st, err := readHS(c)
	if err != nil {
		return peerInfo{}, err
	}
	if st[0] != 's' {
		return peerInfo{}, fmt.Errorf("%w: expected status, got %q", ErrHandshake, st[0])
	}
	switch status := string(st[1:]); {
	case status == "ok":
	case status == "ok_simultaneous":
		n.log.Debug(simultaneousMsg, "peer", want, "winner", n.name)
	case status == "nok":
		n.log.Debug(simultaneousMsg, "peer", want, "winner", want)
		return peerInfo{}, errSimultaneous
	case status == "alive":
		// The peer has a link to this node's name. If it is ours (up, or the peer's own
		// attempt that crossed this one and that we are accepting), this attempt is the
		// extra one: false, and the other link stays (OTP answers by is_pending). Otherwise
		// it is the link of an earlier instance of this name: true, the peer drops it.
		if n.linkedOrAccepting(want) {
			n.log.Debug(simultaneousMsg, "peer", want, "winner", want, "status", status)
			writeHS(c, []byte("sfalse"))
			return peerInfo{}, errSimultaneous
		}
		if err := writeHS(c, []byte("strue")); err != nil {
			return peerInfo{}, err
		}
	default:
		return peerInfo{}, fmt.Errorf("%w: status %q", ErrHandshake, status)
	}
	msg, err := readHS(c)
	if err != nil {
		return peerInfo{}, err
	}
	p, err := parseNameMsg(msg, true)
	if err != nil {
		return p, err
	}
	if p.name != want {
		return p, fmt.Errorf("%w: dialled %s, peer says %s", ErrHandshake, want, p.name)
	}
	mine := newChallenge()
	d := digest(n.cfg.Cookie, p.challenge)
	reply := binary.BigEndian.AppendUint32([]byte{'r'}, mine)
	if err := writeHS(c, append(reply, d[:]...)); err != nil {
		return p, err
	}
	ack, err := readHS(c)
	if err != nil {
		return p, fmt.Errorf("%w (the peer closed: a wrong cookie?): %v", ErrAuth, err)
	}
	want16 := digest(n.cfg.Cookie, mine)
	if len(ack) != 17 || ack[0] != 'a' || !bytes.Equal(ack[1:], want16[:]) {
		return p, ErrAuth
	}
	return p, nil
}

// acceptDecision is what the node table says about an incoming name.
type acceptDecision int

const (
	acceptOK acceptDecision = iota
	acceptOKSimultaneous
	acceptNok
	acceptAlive
	acceptNotAllowed
)

// handshakeAcceptor runs the accepting side on c.
func (n *Node) handshakeAcceptor(c net.Conn) (peerInfo, error) {
	msg, err := readHS(c)
	if err != nil {
		return peerInfo{}, err
	}
	p, err := parseNameMsg(msg, false)
	if err != nil {
		writeHS(c, []byte("snot_allowed"))
		return p, err
	}
	decision := n.decideAccept(p.name)
	p.accepted = decision != acceptNok && decision != acceptNotAllowed
	switch decision {
	case acceptOK:
		err = writeHS(c, []byte("sok"))
	case acceptOKSimultaneous:
		err = writeHS(c, []byte("sok_simultaneous"))
	case acceptNok:
		writeHS(c, []byte("snok"))
		return p, errSimultaneous
	case acceptNotAllowed:
		writeHS(c, []byte("snot_allowed"))
		return p, fmt.Errorf("%w: %s not allowed", ErrHandshake, p.name)
	case acceptAlive:
		if err = writeHS(c, []byte("salive")); err != nil {
			return p, err
		}
		ans, err := readHS(c)
		if err != nil {
			return p, err
		}
		if string(ans) != "strue" {
			return p, fmt.Errorf("%w: %s already connected", ErrHandshake, p.name)
		}
		n.dropConn(p.name, ErrRestarted)
	}
	if err != nil {
		return p, err
	}
	mine := newChallenge()
	if err := writeHS(c, nameMsg(n.flags(), &mine, n.creation, n.name)); err != nil {
		return p, err
	}
	rep, err := readHS(c)
	if err != nil {
		return p, err
	}
	want := digest(n.cfg.Cookie, mine)
	if len(rep) != 21 || rep[0] != 'r' || !bytes.Equal(rep[5:], want[:]) {
		return p, fmt.Errorf("%w from %s", ErrAuth, p.name)
	}
	d := digest(n.cfg.Cookie, binary.BigEndian.Uint32(rep[1:]))
	if err := writeHS(c, append([]byte{'a'}, d[:]...)); err != nil {
		return p, err
	}
	return p, nil
}

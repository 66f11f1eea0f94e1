package swim

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Packet types.
const (
	typePing    byte = 1 // direct probe: answer with an ack
	typePingReq byte = 2 // indirect probe request: probe Target, relay the ack or send a nack
	typeAck     byte = 3 // the probe with Seq was answered
	typeNack    byte = 4 // the relay sent its probe but got no ack in time
	typeGossip  byte = 5 // updates only: news pushed at once (a new suspicion, a dead verdict)
)

// Update kinds (piggybacked gossip).
const (
	KindAlive   byte = 1
	KindSuspect byte = 2
	KindDead    byte = 3
)

// Wire limits.
const (
	MaxNameLen    = 255  // names and addresses are length-prefixed with one byte
	MaxUpdates    = 32   // piggybacked updates per packet (decoder bound)
	MaxPacketSize = 1400 // encoder budget: fits one Ethernet frame with IP/UDP and the mesh envelope
)

// ErrBadPacket wraps every decode error.
var ErrBadPacket = errors.New("swim: bad packet")

// node names a member: its name and the process identity (a restarted
// process is a different ID, so stale news about the old one cannot touch
// the new one).
type node struct {
	Name string
	ID   uint64
}

// update is one piggybacked membership assertion.
type update struct {
	Kind byte
	Node node
	Inc  uint64 // the member's refutation counter (SWIM incarnation)
	From string // KindSuspect: the accuser (counts as an independent confirmation)
}

// packet is one decoded probe packet. Layout (big-endian):
//
//	0  1  type
//	1  4  seq
//	5  .  sender: name (1-byte length + bytes), id (8), incarnation (8)
//	.  .  ping, ping-req: target name, target id
//	      ack, nack, gossip: nothing
//	.  1  update count (at most MaxUpdates)
//	.  .  per update: kind (1), name, id (8), incarnation (8), from (1-byte length + bytes)
//
// Nothing may follow the last update.
type packet struct {
	Type    byte
	Seq     uint32
	From    node
	FromInc uint64 // the sender's incarnation: any packet refutes older suspicions of it
	Target  node   // ping, ping-req
	Updates []update
}

func appendStr(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

func appendNode(b []byte, n node) []byte {
	b = appendStr(b, n.Name)
	return binary.BigEndian.AppendUint64(b, n.ID)
}

// updateSize is the encoded size of u.
func updateSize(u update) int { return 1 + 1 + len(u.Node.Name) + 8 + 8 + 1 + len(u.From) }

// encodeHeader appends everything but the updates; the caller appends the
// count and the updates (encodeUpdates).
func encodeHeader(b []byte, p *packet) []byte {
	b = append(b, p.Type)
	b = binary.BigEndian.AppendUint32(b, p.Seq)
	b = appendNode(b, p.From)
	b = binary.BigEndian.AppendUint64(b, p.FromInc)
	switch p.Type {
	case typePing, typePingReq:
		b = appendNode(b, p.Target)
	}
	return b
}

func encodeUpdates(b []byte, us []update) []byte {
	b = append(b, byte(len(us)))
	for _, u := range us {
		b = append(b, u.Kind)
		b = appendNode(b, u.Node)
		b = binary.BigEndian.AppendUint64(b, u.Inc)
		b = appendStr(b, u.From)
	}
	return b
}

func encode(p *packet) []byte {
	return encodeUpdates(encodeHeader(nil, p), p.Updates)
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: short or invalid %s", ErrBadPacket, what)
	}
}

func (r *reader) byte(what string) byte {
	if r.err != nil || len(r.b) < 1 {
		r.fail(what)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u32(what string) uint32 {
	if r.err != nil || len(r.b) < 4 {
		r.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64(what string) uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) str(what string, nonEmpty bool) string {
	n := int(r.byte(what))
	if r.err != nil || len(r.b) < n || (nonEmpty && n == 0) {
		r.fail(what)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *reader) node(what string) node {
	return node{Name: r.str(what, true), ID: r.u64(what)}
}

// decode parses one packet. It never allocates more than the packet's own
// length and rejects unknown types and kinds, too many updates and trailing
// bytes.
func decode(b []byte) (*packet, error) {
	r := &reader{b: b}
	p := &packet{Type: r.byte("type")}
	if r.err == nil && (p.Type < typePing || p.Type > typeGossip) {
		return nil, fmt.Errorf("%w: type %d", ErrBadPacket, p.Type)
	}
	p.Seq = r.u32("seq")
	p.From = r.node("sender")
	p.FromInc = r.u64("sender incarnation")
	switch p.Type {
	case typePing, typePingReq:
		p.Target = r.node("target")
	}
	n := int(r.byte("update count"))
	if r.err == nil && n > MaxUpdates {
		return nil, fmt.Errorf("%w: %d updates", ErrBadPacket, n)
	}
	if r.err == nil && n > 0 {
		p.Updates = make([]update, 0, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		u := update{Kind: r.byte("update kind")}
		if r.err == nil && (u.Kind < KindAlive || u.Kind > KindDead) {
			return nil, fmt.Errorf("%w: update kind %d", ErrBadPacket, u.Kind)
		}
		u.Node = r.node("update node")
		u.Inc = r.u64("update incarnation")
		u.From = r.str("update sender", false)
		p.Updates = append(p.Updates, u)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadPacket, len(r.b))
	}
	return p, nil
}

// EncodePing is a ping from (from, fromID, fromInc) to (target, targetID)
// outside any detector's probe: the owner's urgent check of a member. The
// member's detector answers with an ack to the packet's source.
func EncodePing(from string, fromID, fromInc uint64, target string, targetID uint64, seq uint32) []byte {
	return encode(&packet{Type: typePing, Seq: seq, From: node{from, fromID}, FromInc: fromInc,
		Target: node{target, targetID}})
}

// IsAck reports whether b is an ack for seq from (name, id).
func IsAck(b []byte, seq uint32, name string, id uint64) bool {
	p, err := decode(b)
	return err == nil && p.Type == typeAck && p.Seq == seq && p.From == node{name, id}
}

package gossip

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"

	"github.com/macula-io/cluster/discovery"
)

// Prefix starts every heartbeat.
const Prefix = "MACULA_GOSSIP:"

// MaxPacketSize is the largest heartbeat accepted; longer datagrams are
// dropped with reason "too_long".
const MaxPacketSize = 1024

// macHexLen is the length of the hex HMAC-SHA256 suffix.
const macHexLen = 2 * sha256.Size

// Sentinel errors returned (possibly wrapped) by ParseHeartbeat, one per
// reject reason. Reason maps them to the Stats.Rejected keys.
var (
	// ErrTooLong: the datagram is longer than MaxPacketSize ("too_long").
	ErrTooLong = errors.New("gossip: packet too long")
	// ErrMalformed: the datagram does not start with Prefix ("malformed").
	ErrMalformed = errors.New("gossip: malformed packet")
	// ErrBadNode: the node field is not a valid node ("bad_node").
	ErrBadNode = errors.New("gossip: bad node field")
	// ErrUnsigned: a secret is set but the packet carries no HMAC ("unsigned").
	ErrUnsigned = errors.New("gossip: unsigned packet")
	// ErrBadSignature: the HMAC is malformed or matches no secret of the
	// keyring ("bad_signature").
	ErrBadSignature = errors.New("gossip: bad signature")
)

// Reject reasons, the keys of Stats.Rejected.
const (
	ReasonTooLong          = "too_long"
	ReasonMalformed        = "malformed"
	ReasonBadNode          = "bad_node"
	ReasonUnsigned         = "unsigned"
	ReasonBadSignature     = "bad_signature"
	ReasonWrongDestination = "wrong_destination"
	ReasonTableFull        = "table_full"
	// ReasonUndialable counts nodes whose advertised host is not the
	// packet's source (see Config.AcceptForeignHosts): discovered, not
	// dialled. Counted once per new table entry.
	ReasonUndialable = "undialable"
	// ReasonSuperseded counts heartbeats of a node field that a newer one of
	// the same name replaced while the newer one is still heard (a replay
	// or a stale copy): ignored.
	ReasonSuperseded = "superseded"
)

// Reason returns the Stats.Rejected key for an error from ParseHeartbeat,
// or "" when err is nil or not a parse error.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrTooLong):
		return ReasonTooLong
	case errors.Is(err, ErrMalformed):
		return ReasonMalformed
	case errors.Is(err, ErrBadNode):
		return ReasonBadNode
	case errors.Is(err, ErrUnsigned):
		return ReasonUnsigned
	case errors.Is(err, ErrBadSignature):
		return ReasonBadSignature
	}
	return ""
}

// Keyring holds the gossip secrets: the first signs, any verifies, so a
// cluster can rotate its secret by rolling restarts (see the package
// documentation, "Secret rotation"). A nil or empty Keyring means
// unsigned heartbeats: outgoing packets carry no HMAC and incoming ones are
// accepted signed or unsigned, the HMAC ignored. A Keyring is immutable and
// safe for concurrent use.
type Keyring struct {
	keys []*macKey
}

// macKey is one secret with a pool of keyed HMAC states, so signing and
// verifying do not allocate.
type macKey struct {
	pool sync.Pool // of *macState
}

type macState struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// NewKeyring returns a keyring of the given secrets, in order. Empty
// secrets are skipped; with none left the keyring is unsigned.
func NewKeyring(secrets ...string) *Keyring {
	k := &Keyring{}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		key := []byte(s)
		mk := &macKey{}
		mk.pool.New = func() any { return &macState{h: hmac.New(sha256.New, key)} }
		k.keys = append(k.keys, mk)
	}
	return k
}

// Len is the number of secrets; 0 means unsigned.
func (k *Keyring) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// mac computes HMAC-SHA256(key, msg) and passes it to f (the slice is only
// valid during f).
func (mk *macKey) mac(msg []byte, f func(sum []byte)) {
	st := mk.pool.Get().(*macState)
	st.h.Reset()
	st.h.Write(msg)
	f(st.h.Sum(st.sum[:0]))
	mk.pool.Put(st)
}

const upperHex = "0123456789ABCDEF"

// AppendHeartbeat appends the heartbeat for node to dst and returns the
// extended slice: "MACULA_GOSSIP:<node>", followed by "|" and the 64
// uppercase hex digits of HMAC-SHA256(first secret, "MACULA_GOSSIP:<node>")
// when k has a secret. node is not validated here (Start validates
// Config.Node); see discovery.ParseNode.
func AppendHeartbeat(dst []byte, node string, k *Keyring) []byte {
	start := len(dst)
	dst = append(dst, Prefix...)
	dst = append(dst, node...)
	if k.Len() == 0 {
		return dst
	}
	// Copy the signed part: dst may be reallocated by the appends below.
	var sig [macHexLen]byte
	k.keys[0].mac(dst[start:], func(sum []byte) {
		for i, b := range sum {
			sig[2*i] = upperHex[b>>4]
			sig[2*i+1] = upperHex[b&0x0f]
		}
	})
	dst = append(dst, '|')
	return append(dst, sig[:]...)
}

// ParseHeartbeat decodes one datagram and returns its node field. It never
// panics, allocates nothing sized by the packet beyond the returned node
// (at most discovery.MaxNodeLen bytes), and compares HMACs in constant time
// (hmac.Equal). Checks, in order: length (ErrTooLong), prefix
// (ErrMalformed), signature when k has a secret (ErrUnsigned,
// ErrBadSignature; hex accepted in either case), node field
// (ErrBadNode: discovery.ValidateField and discovery.ParseNode). With no
// secret any "|..." suffix is ignored.
func ParseHeartbeat(pkt []byte, k *Keyring) (node string, err error) {
	node, _, err = parseHeartbeat(pkt, k)
	return node, err
}

// parseHeartbeat is ParseHeartbeat also returning the parsed peer.
func parseHeartbeat(pkt []byte, k *Keyring) (string, discovery.Peer, error) {
	if len(pkt) > MaxPacketSize {
		return "", discovery.Peer{}, ErrTooLong
	}
	if !bytes.HasPrefix(pkt, []byte(Prefix)) {
		return "", discovery.Peer{}, ErrMalformed
	}
	signed := pkt
	field := pkt[len(Prefix):]
	var sig []byte
	hasSig := false
	if i := bytes.IndexByte(field, '|'); i >= 0 {
		sig = field[i+1:]
		field = field[:i]
		signed = pkt[:len(Prefix)+i]
		hasSig = true
	}
	if k.Len() > 0 {
		if !hasSig {
			return "", discovery.Peer{}, ErrUnsigned
		}
		if !k.verify(signed, sig) {
			return "", discovery.Peer{}, ErrBadSignature
		}
	}
	if len(field) == 0 || len(field) > discovery.MaxNodeLen {
		return "", discovery.Peer{}, ErrBadNode
	}
	node := string(field)
	if err := discovery.ValidateField(node); err != nil {
		return "", discovery.Peer{}, fmt.Errorf("%w: %w", ErrBadNode, err)
	}
	p, err := discovery.ParseNode(node)
	if err != nil {
		return "", discovery.Peer{}, fmt.Errorf("%w: %w", ErrBadNode, err)
	}
	return node, p, nil
}

// verify reports whether sig is the hex HMAC of msg under any secret.
func (k *Keyring) verify(msg, sig []byte) bool {
	if len(sig) != macHexLen {
		return false
	}
	var want [sha256.Size]byte
	if _, err := hex.Decode(want[:], sig); err != nil {
		return false
	}
	ok := false
	for _, mk := range k.keys {
		mk.mac(msg, func(sum []byte) {
			if hmac.Equal(sum, want[:]) {
				ok = true
			}
		})
	}
	return ok
}

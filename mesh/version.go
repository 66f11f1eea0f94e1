package mesh

import (
	"fmt"

	"golang.org/x/sys/cpu"
)

// Wire versions. The preamble's version byte is the highest version the
// sender speaks; a connection uses min(dialer's, acceptor's), and both
// version bytes are in the handshake MAC, so an on-path rewrite of either
// fails the handshake. A node refuses a peer whose highest version is below
// minWireVersion with a message naming both.
//
// Version 1 (up to commit e7c572f) authenticated the handshake only and
// sent every later frame in clear. Version 2 seals every frame after the
// handshake (or binds the cookie proof to TLS). A version-2 node does not
// speak version 1: linking in plaintext with a version-1 peer during a
// rolling upgrade would let any on-path attacker downgrade every link to
// plaintext by rewriting one byte (the version-1 side cannot authenticate
// a version it does not know). So upgrading from version 1 needs every
// node upgraded; from version 2 on, the hello is extensible (features,
// trailing bytes) and later versions can link with version-2 nodes.
const (
	wireVersion    = 2 // highest version this node speaks
	minWireVersion = 2 // lowest version this node speaks
)

// negotiateVersion is the version a connection uses when the peer's
// preamble says peer, or an error naming both.
func negotiateVersion(peer byte) (byte, error) {
	if peer < minWireVersion {
		return 0, fmt.Errorf("peer speaks mesh wire version %d, this node speaks versions %d to %d: "+
			"upgrade the peer (version 1 links were plaintext and are not spoken any more)",
			peer, minWireVersion, wireVersion)
	}
	return min(peer, wireVersion), nil
}

// Feature bits of a hello. A link uses the features both hellos offer.
// Unknown bits are ignored, so a later version may add features that older
// peers simply do not use.
const (
	// featSealAESGCM: records sealed with AES-256-GCM. Offered only where
	// the CPU has AES and carry-less multiply instructions.
	featSealAESGCM uint64 = 1 << 0
	// featSealChaCha: records sealed with ChaCha20-Poly1305. Always
	// offered on plain TCP.
	featSealChaCha uint64 = 1 << 1
	// featTransitive: the node dials the links named in the peer lists it
	// gets (not Config.NoTransitive). Not a record cipher: offered over TLS
	// too. A node that offers it needs no later deltas about the others'
	// new links (peersChangedLocked).
	featTransitive uint64 = 1 << 2
)

// hasAESHardware reports whether AES-GCM runs in constant time and fast
// here (AES-NI and PCLMULQDQ, or the ARMv8 crypto extensions).
func hasAESHardware() bool {
	return (cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ) || (cpu.ARM64.HasAES && cpu.ARM64.HasPMULL) ||
		(cpu.S390X.HasAES && cpu.S390X.HasGHASH)
}

// sealFeatures are the record ciphers this node offers on plain TCP. A
// variable so that tests can pin a cipher.
var sealFeatures = defaultSealFeatures()

func defaultSealFeatures() uint64 {
	f := featSealChaCha
	if hasAESHardware() {
		f |= featSealAESGCM
	}
	return f
}

// suite is the record protection a link negotiated.
type suite byte

const (
	suiteNone   suite = iota // TLS protects the stream: frames go in clear inside TLS
	suiteAESGCM              // AES-256-GCM records
	suiteChaCha              // ChaCha20-Poly1305 records
)

func (s suite) String() string {
	switch s {
	case suiteNone:
		return "tls"
	case suiteAESGCM:
		return "aes-256-gcm"
	case suiteChaCha:
		return "chacha20-poly1305"
	}
	return fmt.Sprintf("suite(%d)", byte(s))
}

// chooseSuite picks the record protection from both hellos' features. Over
// TLS the TLS records protect the stream (and the handshake MAC binds the
// TLS session), so frames are not sealed again. Over plain TCP a common
// cipher is required: AES-256-GCM when both offer it (both have AES
// hardware), else ChaCha20-Poly1305.
func chooseSuite(dialer, acceptor uint64, overTLS bool) (suite, error) {
	if overTLS {
		return suiteNone, nil
	}
	common := dialer & acceptor
	switch {
	case common&featSealAESGCM != 0:
		return suiteAESGCM, nil
	case common&featSealChaCha != 0:
		return suiteChaCha, nil
	}
	return 0, fmt.Errorf("no common record cipher over plain TCP (features %#x and %#x)", dialer, acceptor)
}

// Package mesh links named nodes into a full mesh of authenticated TCP
// connections, Go's answer to Erlang distribution: one link per pair of
// nodes, a shared cookie proved (never sent) at every handshake, liveness by
// ticks, ordered messages, and NodeUp/NodeDown events a user can trust.
//
// # Nodes and links
//
// A node is named "name@host" (no port) and listens on TCP (by default the
// first free port of 9100-9200). Every Start draws a fresh random
// incarnation (never 0), so a restarted node is a different incarnation of
// the same name. Connect(name, addr) asks for a link and keeps redialling
// (exponential backoff with jitter, 100 ms to 5 s) until Forget or
// Disconnect. After each handshake peers tell each other the (name, addr) of
// their links and each node dials the ones it lacks (three attempts; this
// does not make them wanted), so one seed is enough to form a full mesh
// (Config.NoTransitive turns this off).
//
// There is at most one link per pair. When both nodes dial each other at
// once, both keep the connection dialled by the node whose name sorts lower
// and refuse the other during its handshake, so the loser never produces an
// event. A handshake from a newer incarnation of a linked peer replaces the
// link (NodeDown reason "restarted", then NodeUp); one from an older
// incarnation is refused. Incarnations of one name are ordered by the start
// time the node sends in its hello, then by number.
//
// Events: for one Mesh, every NodeUp is followed by exactly one NodeDown for
// the same link before the next NodeUp for that node, handed to
// Config.OnEvent synchronously in the order the link table changed (OnEvent
// is a non-blocking sink: the cluster facade queues the events and reports
// them from its one loop). NodeDown reasons: "closed" (connection closed, reset or
// broken; also a protocol error), "timeout" (nothing arrived, or nothing
// could be written, for LinkTimeout), "left" (the peer said goodbye: it is
// closing), "restarted" (a new incarnation replaced the link),
// "disconnected" (local Disconnect), "shutdown" (local Close).
//
// Liveness: a writer with nothing to send for LinkTimeout/4 sends a tick. A
// link from which nothing arrives for LinkTimeout, or whose writes do not
// drain for LinkTimeout, is closed with reason timeout. A peer whose process
// dies is reported as soon as its kernel closes the connection.
//
// Messages: Send queues a copy of the payload on the link's bounded queue
// (Config.SendQueue) and waits for room until its context is done; each link
// has its own writer goroutine and write deadline, so a stuck peer holds up
// only Sends to itself. Messages on one link arrive in order; OnMessage is
// called from the link's reader goroutine.
//
// # Wire format
//
// All integers are big-endian. Each direction of a connection starts with a
// 5-byte preamble:
//
//	4D 43 4C 41   magic "MCLA"
//	01            protocol version
//
// followed by frames:
//
//	length  uint32   number of bytes that follow: 1 + len(body), at least 1
//	type    uint8
//	body    [length-1]byte
//
// A reader refuses a length above its limit before allocating anything:
// 1024 during the handshake, MaxMessageSize+1 after it. A connection with a
// bad length is closed.
//
// Handshake (D dials, A accepts):
//
//	D -> A  preamble, hello(0x01) H
//	A -> D  preamble, challenge(0x02) C    or preamble, refuse(0x05)
//	D -> A  proof(0x03)                    only if C names the node D meant to reach
//	A -> D  welcome(0x04)                  or refuse(0x05)
//
// The link is up at A once the welcome is written, and at D once it
// verifies. A decides between the welcome and a refusal (duplicate, stale)
// under its link table lock, by the rules above.
//
// hello and challenge have the same body (H is D's, C is A's):
//
//	offset  size  field
//	0       8     incarnation (non-zero)
//	8       8     start time, Unix nanoseconds (orders incarnations of a name)
//	16      4     largest message the sender accepts (non-zero)
//	20      32    nonce, fresh random bytes
//	52      1     n = length of name (1-255)
//	53      n     name, "name@host"
//	53+n    1     m = length of advertised address (1-255)
//	54+n    m     advertised address, "host:port"
//
// with no trailing bytes. proof and welcome bodies are 32-byte MACs:
//
//	proof   = HMAC-SHA256(cookie, "macula-mesh/1 dialer proof\x00"   || u16(len H) || H || u16(len C) || C)
//	welcome = HMAC-SHA256(cookie, "macula-mesh/1 acceptor proof\x00" || u16(len H) || H || u16(len C) || C)
//
// so each MAC covers both names, incarnations, nonces, start times and
// addresses, and the direction. Both are compared with hmac.Equal. A refuse
// body is one byte: 1 duplicate, 2 stale (older incarnation), 3 self, 4 name
// conflict (another live node has the acceptor's name), 5 shutting down,
// 6 bad version, 7 bad cookie. A version mismatch is answered with
// preamble version 1 and refuse 6.
//
// After the handshake:
//
//	0x10 tick      empty body; sent on idle links every LinkTimeout/4
//	0x11 message   the payload (0 to MaxMessageSize bytes)
//	0x12 peers     uint16 count, then count times: uint8 len, name, uint8 len, addr
//	               (the sender's other links; sent to every link when a link comes up)
//	0x13 goodbye   empty body; the sender is closing (peer reports "left")
//
// Any other type, or a malformed peers body, closes the link (counted in
// Stats.ProtocolErrors, NodeDown reason "closed").
//
// # Security model
//
// The cookie is a shared secret; it never crosses the wire, only HMACs over
// fresh nonces from both sides do. What an attacker on the LAN can do:
//
//   - Without the cookie it cannot complete a handshake: it cannot produce a
//     proof, and replaying a recorded handshake fails because the other side's
//     nonce is fresh. A proof cannot be reflected because the direction is
//     part of the MAC. Failed handshakes end the connection, are counted in
//     Stats.HandshakeFailures and logged as a warning at most once per remote
//     address per 10 s.
//   - It can connect and stay silent, or flood the port: every handshake has
//     a deadline (HandshakeTimeout), at most MaxPendingHandshakes run at once
//     (further connections are accepted and closed at once), and nothing read
//     before authentication may claim more than 1024 bytes.
//   - Without TLS, links are authenticated at the handshake only. They are
//     neither encrypted nor integrity-protected afterwards: an on-path
//     attacker can read messages, inject or alter frames, or relay a
//     handshake between two real nodes and then take over the TCP stream.
//     With Config.TLS, it cannot read or alter the stream; with mutual TLS
//     (ClientAuth) it cannot even reach the cookie handshake without a
//     certificate. The cookie proof is still required on top of TLS.
//   - A dialer proves first, so a node that is tricked into dialling an
//     attacker (a spoofed discovery announcement) gives it one proof, which
//     is an offline guessing target for a weak cookie. The acceptor never
//     reveals a proof to an unauthenticated dialer. ResolveCookie generates
//     256-bit cookies; use those or equally strong ones.
//   - Any holder of the cookie is a full member: it may claim any name,
//     replace a node's link by claiming a newer incarnation, send messages
//     and make every node dial the addresses it lists. The cookie is the
//     trust boundary, as in Erlang.
//
// # Stats
//
// Stats.HandshakeFailures counts failed handshakes, in both directions, by
// HandshakeReason:
//
//	reason            constant           meaning
//	bad_magic         HSBadMagic         the peer's preamble did not start with "MCLA"
//	bad_version       HSBadVersion       the peer speaks another protocol version
//	malformed         HSMalformed        a frame or its body did not parse, or the peer echoed our nonce
//	frame_too_large   HSFrameTooLarge    a frame claimed a length over the 1024-byte handshake limit
//	unexpected_frame  HSUnexpectedFrame  a frame of a type not allowed at this step
//	bad_cookie        HSBadCookie        the proof or welcome did not verify: wrong cookie or a replay
//	wrong_node        HSWrongNode        the dialled address answered with another name
//	timeout           HSTimeout          HandshakeTimeout passed (connect, TLS or mesh handshake)
//	closed            HSClosed           the connection ended or was reset mid-handshake
//	too_many_pending  HSTooManyPending   MaxPendingHandshakes inbound handshakes were already running
//	tls               HSTLS              the TLS handshake failed
//	stale             HSStale            an older incarnation than the linked one
//	self              HSSelf             a node reached itself
//	name_conflict     HSNameConflict     another live node has the same name
//	forgotten         HSForgotten        Forget or Disconnect ran while we dialled
//	left              HSLeft             this incarnation of the peer said goodbye; a late connection of it is refused
//	shutdown          HSShutdown         this node or the peer is closing
//	io                HSIO               any other I/O error
//	refused           HSRefused          the peer refused with a code this node does not know
//	duplicate         HSDuplicate        the pair already has a link or a winning dial (see below)
//
// Duplicate connections (crossed dials: both nodes dialled each other at
// once, and one connection loses) are normal and are counted only in
// Stats.DuplicateLinks, by the node that drops the connection, never in
// HandshakeFailures on either side. A dialler that finds a link already up
// once its TCP connection is established closes it without a byte; an
// inbound connection that closes before its first byte (also a port probe)
// is not a handshake attempt and is not counted.
//
// Stats.ProtocolErrors counts links closed for a bad frame after the
// handshake, by frame_too_large, malformed or unexpected_frame, with the
// meanings above. Stats.LinksDown counts NodeDown events by Reason. These
// three maps hold every reason listed here (all but duplicate) from Start,
// at 0 until it first happens, so each metrics series exists from the start.
package mesh

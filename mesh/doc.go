// Package mesh links named nodes into a full mesh of authenticated,
// encrypted TCP connections, Go's answer to Erlang distribution: one link per pair of
// nodes, a shared cookie proved (never sent) at every handshake, liveness by
// authenticated UDP probes (SWIM with Lifeguard), ordered messages, and
// NodeUp/NodeDown events a user can trust.
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
// (Config.NoTransitive turns this off). A new link gets the whole list at
// once, and that is enough: of two links of a node, the one admitted later
// gets a list that names the earlier one, and dials it. Only a peer that
// does not dial what lists name (NoTransitive, or a version before the
// hello's transitive bit) is also announced to the other links, 2 s later,
// with the other new entries of those 2 s (a delta). Deltas for every new
// link cost, while links keep coming (a cluster forming, a partition
// healing), one frame per link per 2 s at every node: at 100 nodes, tens
// of thousands of frames for nothing.
//
// There is at most one link per pair. When both nodes dial each other at
// once, both keep the connection dialled by the node whose name sorts lower
// and refuse the other during its handshake, so the loser never produces an
// event. To make such crossings rare, a node told of a named peer whose
// name sorts lower than its own waits 300 ms for that peer's connection
// before it dials (the peer, told of us too, dials at once). A handshake from a newer incarnation of a linked peer replaces the
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
// Liveness is described in its own section below.
//
// Messages: Send queues a copy of the payload on the link's bounded queue
// (Config.SendQueue messages) and waits for room until its context is done;
// each link has its own writer goroutine and write deadline, so a stuck peer
// holds up only Sends to itself. On a sealed link the copy of a payload of
// 16 KiB or more is its sealed records (Send encrypts it, on the caller's
// goroutine, instead of copying it); smaller ones are appended to the
// frames the writer seals as one record. Messages on one link arrive in
// order; OnMessage is called from the link's reader goroutine.
//
// # Liveness
//
// Membership liveness (is the node alive?) is not the link (is this TCP
// stream healthy?). A failure detector (internal/swim: SWIM, Das, Gupta,
// Motivala 2002, with Lifeguard, Dadgar et al. 2018, in the line of
// hashicorp/memberlist) runs over UDP on the mesh port (same number as the
// TCP listener):
//
//   - Each ProbeInterval (a protocol period) a node pings one member, taken
//     from a shuffled round robin (every member within two passes). With no
//     ack within ProbeTimeout it asks IndirectChecks members (3, fewer in
//     small clusters) to ping it; they relay the ack or answer with a nack.
//     With no ack by the end of the period the member is suspect.
//   - Suspicion is piggybacked on probe packets (each update on at most
//     4*ceil(log10(N+1)) packets), and news a node originates (its own new
//     suspicion or confirmation, its own dead verdict) is also pushed at
//     once to that many random members. The suspect refutes it with a
//     higher incarnation (refutation counter; every packet carries its
//     sender's, and a suspect also pings its accuser). The suspicion
//     timeout is max(SuspicionMult*log10(N+1), 5)*ProbeInterval with
//     SuspicionMult-2 independent confirmations, up to twice that without;
//     N counts the live members, this node included.
//   - Dead needs this node's own evidence: when the timeout expires, the
//     member is declared dead (NodeDown reason timeout) only if nothing
//     was heard from it (no packet of its own, no ack relayed for it) for
//     a whole suspicion timeout and three of this node's own probes of it
//     went unanswered (a full probe, or a verification round: two direct
//     pings and 2*IndirectChecks indirect ones at once). Another member's
//     dead verdict only starts one verification round here (with
//     IndirectChecks indirect pings). So a
//     refutation lost on its way to one node does not make that node
//     report a live member down.
//   - Local health (Lifeguard): failed probes, missing nacks, refuting a
//     suspicion of ourselves and our own timers firing late raise a score
//     (0-7), successful probes lower it; the probe timeout and period are
//     multiplied by score+1 and the suspicion timeout by up to 2. A timer
//     that fires late (the process was starved, e.g. SIGSTOP) abandons the
//     probe in flight and postpones expiring suspicions, so a node that
//     was paused does not accuse the others.
//
// Profiles (Config.Profile; memberlist's DefaultLAN/WAN/LocalConfig):
//
//	profile  ProbeInterval  ProbeTimeout  SuspicionMult  IndirectChecks
//	lan      400 ms         200 ms        3              3   (default)
//	wan      5 s            3 s           6              3
//	local    200 ms         100 ms        3              3
//
// With lan, a silent node is suspected within a period or two (the whole
// cluster probes one member each per period), and declared dead 2.0 s
// (up to N = 45; 2.4 s at N = 100, 3.6 s at N = 1000) after the suspicion
// began, or a verification round later: about 3-4 s in all, at most about
// 6 s. The 2.0 s floor (5 periods), doubled without confirmations, is
// what keeps a process stopped for 2 s (a long GC pause, SIGSTOP, a VM
// migration) from being declared dead. A crashed
// process whose host stays up is reported at once (below). Cost per node:
// one ping and one ack sent per period plus the acks of the pings it
// receives (one per period on average), 100-200 bytes each: constant in N.
//
// Probes and links: a peer becomes a member of the detector once an
// authenticated UDP packet from its incarnation has arrived (each side
// says hello at link up). Between such peers an idle link has no silence
// limit and carries no ticks (a node stops ticking once the peer has
// answered one of its pings, which proves it counts this node a member);
// a stall under traffic fails it after LinkTimeout (TCP_USER_TIMEOUT on Linux, and the write deadline). A peer
// that does not probe (NoProbes, or UDP blocked) keeps the link-level
// liveness: a tick every LinkTimeout/4 on an idle link, and LinkTimeout of
// silence closes the link with reason timeout.
//
// Link flaps. When a link fails with reason closed or timeout while the
// detector does not hold the peer dead (a peer not yet heard on UDP
// counts: a peer that does not probe answers the check below with ICMP
// port unreachable, so it goes down closed at once), the member is held: no event, out of Links, and urgent pings go to it from a
// connected UDP socket (at 0, 5, 15, 35 and 75 ms and at half the probe
// timeout: a killed process closes its TCP sockets a moment before its UDP
// socket). An ICMP port unreachable (the process is gone, its host is up:
// a crash) reports NodeDown closed, so a crash is still reported within a
// round trip or two. An ack means a flap: the
// node tells the peer its link broke (the peer may not notice a stall
// while it sends nothing; told again whenever it refuses a redial as a
// duplicate, in case the notice was lost), both redial, and the new link of the same
// incarnation replaces the old one without NodeDown/NodeUp
// (Stats.Probes.LinkReconnects). No answer at all is no verdict: the
// member stays held and redialled (Stats.Probes.HeldSilent), and the
// detector decides. A redial refused by the peer's host is a crash
// (NodeDown closed). A member held for 3*LinkTimeout without a new link
// stays held for another 3*LinkTimeout if the detector heard it in that
// time (Stats.Probes.HeldExtended; under heavy loss a TCP link can take
// that long to come back), up to 12*LinkTimeout in all; one not heard for
// 3*LinkTimeout, held that long, or declared dead meanwhile is reported
// down. A protocol error or the
// detector's verdict is never a flap. A new connection of the same
// incarnation that replaces a live link (crossed redials, a peer that
// dropped the link and is redialled) is silent too.
//
// Messages across a flap: messages not yet written to the broken
// connection, and those sent while the member is held, go on the new link
// in order (it adopts the queue; what Send sealed under the broken link's
// keys is opened and sealed again under the new link's). Messages already
// written to the broken connection, or taken by its writer (a batch of at
// most 256 messages or 1 MiB), may be lost: Send is at-most-once across a
// flap, as across a NodeDown. If the member ends down, its queue is
// dropped.
//
// Probe packets (UDP):
//
//	0   1   kind: 1 SWIM packet, 2 "link broke" notice, 3 hello,
//	        4 "link dropped" notice (Disconnect: not a flap)
//	1   8   sender's incarnation (the mesh's)
//	9   8   sequence, per sender, increasing
//	17  n   body: the SWIM packet (internal/swim/packet.go), the sender's
//	        name (kinds 2 and 4), empty (kind 3)
//	.   16  HMAC-SHA256 over all of the above, first 16 bytes
//
// The MAC key is HKDF-SHA256(cookie, info "macula mesh probe v1"). A
// receiver keeps a 64-packet replay window per sender incarnation (at most
// 4096 senders, an arbitrary one evicted beyond). Without the cookie
// nobody can forge a probe, an ack, a suspicion or a notice, and a
// captured packet cannot be replayed to the node that received it. Within
// the cluster a packet could be replayed to another node; the content is
// harmless there (a ping for another target is ignored, an ack matches no
// probe, gossip is ordered by incarnation). Packets that fail any check
// are counted (Stats.Probes.BadPackets, Replayed) and logged at Warn at
// most once per source address per 10 s. Probe packets are not encrypted:
// they reveal names, incarnations and liveness to an on-path observer.
//
// # Wire format (version 2)
//
// All integers are big-endian. Each direction of a connection starts with a
// 5-byte preamble:
//
//	4D 43 4C 41   magic "MCLA"
//	02            the highest wire version the sender speaks
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
// Versions: a connection uses the lower of the two preamble versions; both
// bytes are in the handshake MAC. This node speaks version 2 only. Version 1
// (up to commit e7c572f) sent every frame after the handshake in clear; a
// version-2 node refuses it (refuse 6 after a version-2 preamble, counted as
// bad_version, with a warning naming both versions), and a version-1 node
// refuses version 2 the same way ("bad_version: version 2"), so mixed nodes
// never link: upgrading from version 1 needs all nodes upgraded. Speaking
// version 1 would let an on-path attacker strip the protection of every
// link by rewriting one preamble byte, since a version-1 peer cannot
// authenticate a version it does not know. From version 2 on the wire can
// grow without that: later versions keep the hello layout below and append
// fields after the features, add feature bits, and add frame types.
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
//	54+n+m  8     features offered: bit 0 AES-256-GCM records, bit 1 ChaCha20-Poly1305 records,
//	              bit 2 transitive (the node dials the links named in the peer lists it gets)
//	62+n+m  ...   extensions, covered by the MACs: each type (1), length (2, big-endian), value;
//	              type 0x01 = the node's tags (tags.go); unknown types, and bytes that do not
//	              parse as extensions (older versions called the area "ignored"), are ignored
//
// Unknown feature bits are ignored. The features a link uses are those both
// hellos offer. Over plain TCP a node offers ChaCha20-Poly1305, and
// AES-256-GCM when its CPU has AES instructions; a link seals with
// AES-256-GCM when both offer it, else ChaCha20-Poly1305; a hello with no
// common cipher is refused (refuse 6, bad_version). Over TLS a node offers
// none and frames are not sealed again (TLS records protect them).
//
// proof and welcome bodies are 32-byte MACs over a transcript hash th:
//
//	th      = SHA-256("macula-mesh/2 transcript\x00" || vD || vA || u16(len H) || H || u16(len C) || C || u8(len X) || X)
//	proof   = HMAC-SHA256(cookie, "macula-mesh/2 dialer proof\x00"   || th)
//	welcome = HMAC-SHA256(cookie, "macula-mesh/2 acceptor proof\x00" || th)
//
// vD and vA are the preamble version bytes, H and C the bodies as sent
// (extensions included), X is empty over plain TCP and, over TLS, the 32
// bytes of the TLS exporter (RFC 8446 section 7.5) with label
// "EXPORTER-macula-mesh cookie binding" and no context. So each MAC covers
// both versions, names, incarnations, nonces, start times, addresses and
// features, the direction, and the TLS session: a relay that terminates TLS
// on both sides has two sessions with two exporters, and the proof made in
// one does not verify in the other. Both are compared with hmac.Equal. A
// refuse body is a code, then bytes a later version may add (ignored):
// 1 duplicate, 2 stale (older incarnation), 3 self, 4 name conflict (another
// live node has the acceptor's name), 5 shutting down, 6 bad version (or no
// common record cipher), 7 bad cookie.
//
// # Sealed records
//
// Over plain TCP, once D has sent its proof and A its welcome, each
// direction is a stream of records:
//
//	length  uint32   len(sealed): 17 to 128 KiB + 16
//	sealed  AEAD-Seal(key, nonce, plaintext, additional data = the 4 length bytes)
//
// The plaintexts, in order, are the frame stream below; a frame may span
// records. Small frames queued one after another share a record (up to
// 128 KiB of them), so a burst of small messages costs one seal; a message
// body of 16 KiB or more is sealed in records of its own (up to 128 KiB
// each) straight from the sender's buffer, after a record with what was
// queued before it (its frame header at least). Record numbers are those
// of the order in the queue. Readers must not depend on where records
// begin or end: only the byte stream is specified. Keys, per link and per
// direction:
//
//	prk   = HKDF-Extract(SHA-256, salt = th, ikm = cookie)
//	k_D2A = HKDF-Expand(prk, "macula-mesh/2 key dialer to acceptor " || cipher, 32)
//	k_A2D = HKDF-Expand(prk, "macula-mesh/2 key acceptor to dialer " || cipher, 32)
//
// cipher is "aes-256-gcm" or "chacha20-poly1305". th holds both fresh
// nonces, so keys never repeat across links or directions. The nonce of the
// n-th record of a direction (n from 0) is 4 zero bytes then n as uint64; a
// writer stops before n wraps. A record that does not open (altered,
// injected, replayed, reordered, dropped or reflected), or a length out of
// range, closes the link: Stats.ProtocolErrors "tampered" (or
// frame_too_large / malformed for the length), NodeDown reason "closed",
// and a warning rate-limited per peer.
//
// Why this construction: an AEAD from the standard library (AES-GCM) or
// golang.org/x/crypto (ChaCha20-Poly1305), HKDF from x/crypto, a counter
// nonce (no random-nonce collision bound to track) and the record framing of
// TLS 1.3, keyed by the existing cookie handshake, so no setting is needed
// and no new round trip is added. AES-GCM is preferred where both ends have
// AES hardware: it measured 6.1 GB/s against ChaCha20-Poly1305's 2.7 GB/s on
// the CI machine kind; ChaCha20-Poly1305 is the constant-time choice
// without it. Noise (NNpsk0) was considered; it would add an ephemeral
// Diffie-Hellman (forward secrecy against a later cookie leak) at the cost
// of a new handshake shape; the cookie remains the root of trust either way.
//
// After the handshake (inside records, or inside TLS):
//
//	0x10 tick      sent on idle links every LinkTimeout/4 (body ignored)
//	0x11 message   the payload (0 to MaxMessageSize bytes)
//	0x12 peers     uint16 count, then count times: uint8 len, name, uint8 len, addr,
//	               then bytes a later version may add (ignored)
//	               (the sender's other links; sent to every link when a link comes up)
//	0x13 goodbye   the sender is closing (peer reports "left"; body ignored)
//
// Other types from 0x10 up are ignored (a later version's frames); a
// handshake type (0x01-0x0f) or a malformed peers body closes the link
// (counted in Stats.ProtocolErrors, NodeDown reason "closed").
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
//     before authentication may claim more than 1024 bytes. The pending
//     handshakes are shared: a source IP that is not a known peer's (a link's
//     or a dial target's address) holds at most 8 of them, and such sources
//     together at most three quarters, so a known peer's re-link always finds
//     a slot (TestPendingExhaustionOneSource). A source that failed the
//     cookie check more than 3 times is refused ("throttled") for 200 ms,
//     doubling per further failure up to 30 s, so guessing a weak cookie
//     costs time (TestWrongCookieThrottled).
//   - It can announce many names at one address (gossip), or addresses that
//     fail: dials to one address run one at a time and back off per address
//     (100 ms doubling to 5 s after a failure), whatever name they are for,
//     and at most MaxDials run at once.
//   - On the path of a link (it relays the handshake between two real
//     nodes), without the cookie it can neither read nor change what the link
//     carries: every frame is sealed under keys derived from the cookie and
//     both nonces. A flipped bit, an injected, replayed, reordered or dropped
//     record closes the link, counted as "tampered"; no altered frame is ever
//     delivered (TestRelayNetns: the relay in a network namespace of its
//     own between the two nodes' namespaces; TestRelayTampering on
//     127.0.0.1). It still sees message sizes and timing, and can cut the
//     connection (the link closes; the node redials).
//   - With Config.TLS, frames are protected by TLS and the cookie proof is
//     bound to the TLS session, so a relay that terminates TLS on both sides
//     (possible when certificates are not verified) fails the handshake as
//     bad_cookie (TestRelayTLSNetns, TestRelayTLSWithoutCA). With mutual
//     TLS (ClientAuth) it cannot even reach the cookie handshake without a
//     certificate.
//   - The cookie protects past traffic too: anyone who records a link and
//     later learns the cookie can derive its keys (no forward secrecy). Use
//     TLS 1.3 (ephemeral key exchange) where that matters.
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
//	bad_version       HSBadVersion       the peer speaks another wire version, or offers no common record cipher
//	malformed         HSMalformed        a frame or its body did not parse, or the peer echoed our nonce
//	frame_too_large   HSFrameTooLarge    a frame claimed a length over the 1024-byte handshake limit
//	unexpected_frame  HSUnexpectedFrame  a frame of a type not allowed at this step
//	bad_cookie        HSBadCookie        the proof or welcome did not verify: wrong cookie or a replay
//	wrong_node        HSWrongNode        the dialled address answered with another name
//	timeout           HSTimeout          HandshakeTimeout passed (connect, TLS or mesh handshake)
//	closed            HSClosed           the connection ended or was reset mid-handshake
//	too_many_pending  HSTooManyPending   MaxPendingHandshakes inbound handshakes were already running, or the source's share of them
//	throttled         HSThrottled        the source failed the cookie check more than 3 times; refused for 200 ms doubling to 30 s
//	tls               HSTLS              the TLS handshake failed
//	stale             HSStale            an older incarnation than the linked one
//	self              HSSelf             a node reached itself (its own address, e.g. from DNS); never counted
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
// Stats.Probes holds the failure detector's counters: probes sent, acked,
// indirect, failed, suspicions, refutes, dead verdicts, late ticks, the
// local health score, hostile packets, and LinkReconnects (links
// re-established under a live member, apart from membership changes).
//
// Stats.ProtocolErrors counts links closed for a bad frame after the
// handshake, by frame_too_large, malformed or unexpected_frame, with the
// meanings above, or tampered (HSTampered: a sealed record did not open). Stats.LinksDown counts NodeDown events by Reason. These
// three maps hold every reason listed here (all but duplicate) from Start,
// at 0 until it first happens, so each metrics series exists from the start.
package mesh

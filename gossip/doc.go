// Package gossip is Macula's UDP multicast heartbeat: every node announces
// its node field to a multicast group (or the IPv4 broadcast address) at a
// fixed interval, and listens for the heartbeats of the others. It feeds the
// cluster facade through NewStrategy (discovery.Strategy); Start gives the
// table and events directly.
//
// # Wire format
//
// One UDP datagram per heartbeat, at most 1024 bytes, no framing:
//
//	MACULA_GOSSIP:<node>                 without a secret
//	MACULA_GOSSIP:<node>|<HEX>           with a secret
//
// <node> is "name@host:port" for our nodes (port = the node's mesh TCP
// port) or "name@host" as Erlang macula nodes send it; the latter is
// reported as discovered but not dialable (Peer.Addr == ""). A node that
// also serves Erlang distribution (Config.ErlangNode) sends both forms each
// round, "name@host:port" first, then "name@host" for Erlang nodes; a
// listener that has heard the name with a port ignores the portless twin
// (counted in Stats.TwinsIgnored): names are unique, so a portless field
// of a name heard with a port is that same node. The field is
// 1-255 printable ASCII bytes without '|' (discovery.ValidateField and
// discovery.ParseNode). HEX is HMAC-SHA256(secret, "MACULA_GOSSIP:<node>")
// as 64 hex digits, written in uppercase and accepted in either case.
//
// Test vectors (also in the tests):
//
//	secret "s3cret", node "a@127.0.0.1":
//	MACULA_GOSSIP:a@127.0.0.1|5E79D0AE046B12478AE741C4F4CBE5356FC53A65E7669A53CDD28C91D5C9F178
//
//	secret "my_cluster_secret", node "node1@10.0.0.5:9100":
//	MACULA_GOSSIP:node1@10.0.0.5:9100|A1D2132D9E2486271B0625FA521A9AE4A5FCDF1C404A82F2DF8652BD6E591D5C
//
// With a secret set, packets without an HMAC ("unsigned") or with a wrong
// one ("bad_signature") are dropped, counted in Stats.Rejected and logged
// as a warning naming the source, at most once per source per 10 s.
// Without a secret both signed and unsigned packets are accepted and the
// HMAC is ignored. Any other byte string is dropped and counted:
// "too_long", "malformed" (no prefix), "bad_node"; datagrams that did not
// arrive for the group (or, in broadcast mode, the interface's broadcast
// address) are counted as "wrong_destination".
//
// # Secret rotation
//
// Secrets form a keyring: the first signs, any verifies. A node with
// [new, old] hears nodes still on [old], but they cannot verify it, so
// during a single rolling restart from [old] to [new, old] discovery is
// one-way between the two groups. That is enough for the cluster (the side
// that discovers dials the mesh link, and the link works both ways) but not
// for gossip-level symmetry. For two-way discovery at every step, roll
// three times: [old, new] everywhere, then [new, old], then [new].
//
// # Sockets
//
// One UDP socket (internal/mcast, shared with mdns) bound to the wildcard
// address on the port with SO_REUSEADDR, so several nodes on one host share
// the port and each gets a copy of every heartbeat. IP_MULTICAST_ALL is off,
// so the socket only sees the groups it joined itself; the destination of
// every datagram is checked from IP_PKTINFO. The group is joined on each
// selected interface (by name in Config.Interfaces, or every up, running,
// multicast-capable, non-loopback interface), and the selection is redone
// whenever the interfaces change (rtnetlink events on Linux, a 3 s poll
// elsewhere), so interfaces that appear later are joined and vanished ones
// are left. Each heartbeat is sent once per joined
// interface with the interface chosen per packet (IP_PKTINFO / IPV6_PKTINFO),
// with the configured TTL (IPv6 hop limit) and multicast loopback on, so
// nodes on the same host hear each other.
//
// # Timing
//
// The first heartbeat goes out at Start, then one every Interval +-10%. When
// a node is discovered and we are one of the three nodes whose names follow
// its name in our table (in name order, wrapping around), we answer with
// our heartbeat so the newcomer learns us without waiting an interval: at
// once when its name sorts lower than ours (it is the one that dials: of
// two nodes that learn of each other, the mesh lets the lower name dial and
// the higher one wait), else after a random delay in [d, 2d], d = 2 ms per
// node in our table, at most Interval/8 (we dial it ourselves). The other
// nodes do not answer (Stats.NotAnswered): every answer is multicast and
// wakes every node, so N answers would cost N*N wake-ups right when the
// newcomer's mesh links are made, and with the mesh one link is enough (its
// peer list names the rest). BroadcastNow
// sends at once. These out-of-schedule heartbeats are limited to one per 100
// ms, later requests coalesced into one at the end of the 100 ms (an answer:
// at the later of that and its delay). A peer not heard for Expiry is
// dropped and reported Lost, unless it is linked: Gossip.Linked (the
// facade calls it on NodeUp and NodeDown) marks a node whose liveness the
// mesh watches; it does not expire while linked, and on Linux a kernel
// filter on the socket drops its heartbeats but one in 64 (quiet.go). A
// node that is not linked and is heard again after more than two intervals
// of silence is answered like a newcomer and reported Found again
// (Stats.Revived): a partition healed, the caller should dial it now. A
// node with the same name@host as a known one but another port replaces it
// at once (the sink sees a Found with the same Key): that is a restarted
// node on a new port. The node field it replaced
// is then "superseded": its heartbeats are ignored (counted as "superseded")
// as long as the new one is in the table, so a replayed or delayed old
// heartbeat does not flap discovery. A node that restarts back onto a port
// it used just before is therefore discovered at its old port only once the
// intermediate one expired (Expiry); the mesh links it sooner, since it
// dials us. Two live nodes claiming the same name@host: the first one heard
// keeps the name while it is heard; names must be unique.
//
// The table is bounded by MaxPeers and O(1) per heartbeat: entries sit in
// two least-recently-heard lists, unverified and verified (dialable and
// heard over at least 3/4 of an interval, that is a second heartbeat). A
// new node in a full table evicts the least recently heard unverified entry
// (reported Gone, counted in Stats.Evicted, warned once per 10 s), else a
// verified one silent for two intervals; otherwise its heartbeat is dropped
// ("table_full"). So a flood of forged names cannot lock a real newcomer
// out, and cannot evict a node that keeps sending.
//
// # Threat model
//
// Heartbeats are authenticated, not encrypted: anyone on the link sees the
// node names and addresses. They are also replayable: there is no nonce or
// timestamp, so a captured heartbeat can be replayed to make a node look
// alive after it died, or to advertise its address from elsewhere. Gossip
// only finds candidates; trust is established by the mesh handshake with
// the cookie, which a replayed heartbeat cannot pass. The secret keeps
// other clusters (and careless neighbours) on the same LAN out of the
// discovered set; it is per cluster, not per node, so every member can
// impersonate every other at the gossip level. A flood of forged unique
// names is bounded by MaxPeers, the eviction above and the rate-limited
// logging.
//
// Dial only what is plausible. Unsigned gossip (the default) would let
// anyone on the LAN make every node dial any address (a victim, or an
// amplifier: N nodes x M names). So, without a secret, a heartbeat's
// advertised host must be the packet's source IP, or both must be
// addresses of this machine (nodes on one host, the source on lo);
// otherwise the node is discovered but not dialable (Peer.Addr cleared,
// counted as "undialable" once per new entry, warned once per source per
// 10 s, naming the advertised and the source address). A host name is
// resolved and one of its addresses must be the source (or both local);
// lookups are bounded (2 at once, 1 s each, 256 names cached for a minute,
// failures too), and the node is reported on its first heartbeat after the
// answer, so a flood of names costs at most 2 queries in flight and no
// unbounded state. Config.AcceptForeignHosts turns the check off (NAT,
// proxies). With a secret the check is skipped: a verified heartbeat names
// an address some member signed, and a replay of it from elsewhere only
// makes nodes dial that member. The check does not stop an attacker that
// spoofs the source IP of a UDP packet (easy on a LAN): the mesh then dials
// one connection at a time per address with backoff, whatever the names,
// and at most MaxDials in all.
//
// What a replay can still do: replaying a live node's current heartbeat
// changes nothing. Replaying a superseded one is ignored while the node's
// current field is heard. Replaying the heartbeat of a node that died keeps
// it discovered, and dialled with backoff, for as long as the replay lasts
// (no link comes up: the mesh handshake needs the cookie). Replaying an old
// field of a node before this node ever heard its new one makes the old one
// current until the new one is heard; the mesh still links, since the real
// node dials us.
package gossip

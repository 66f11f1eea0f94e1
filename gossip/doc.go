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
// reported as discovered but not dialable (Peer.Addr == ""). The field is
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
// The first heartbeat goes out at Start, then one every Interval +-10%.
// When a node is discovered, we send our heartbeat at once so the newcomer
// learns us within one round trip; these out-of-schedule heartbeats (and
// BroadcastNow) are limited to one per 100 ms, later requests coalesced
// into one at the end of the 100 ms. A peer not heard for Expiry is dropped
// and reported Lost. A node with the same name@host as a known one but
// another port replaces it at once (Lost old, then Discovered new): that is
// a restarted node on a new port. Two live nodes claiming the same
// name@host will flap; names must be unique. The table is bounded by
// MaxPeers; heartbeats of new nodes beyond it are dropped ("table_full").
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
// names is bounded by MaxPeers and by the rate-limited logging.
package gossip

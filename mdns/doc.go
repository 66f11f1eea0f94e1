// Package mdns is a discovery.Strategy on multicast DNS with DNS-SD
// (RFC 6762, RFC 6763): each node advertises itself as an instance of the
// service type "_macula._tcp.local." and browses for the others. It works
// with standard tools: avahi-browse, dns-sd and python-zeroconf list our
// nodes, and services they register with a valid TXT "node=" key are
// discovered (tested against python3-zeroconf).
//
// # Records
//
// For a node "api@10.0.0.5:9100" (mesh port 9100) on an interface with
// address 10.0.0.5, the node publishes, with a TTL of Config.TTL (120 s):
//
//	_macula._tcp.local.                  PTR   api@10-0-0-5:9100._macula._tcp.local.
//	api@10-0-0-5:9100._macula._tcp.local. SRV  0 0 9100 api-10-0-0-5-9100.local.   (cache-flush)
//	api@10-0-0-5:9100._macula._tcp.local. TXT  "node=api@10.0.0.5:9100" "v=1"      (cache-flush)
//	api-10-0-0-5-9100.local.             A     10.0.0.5                           (cache-flush)
//	api-10-0-0-5-9100.local.             AAAA  (each IPv6 address of the interface)
//	_services._dns-sd._udp.local.        PTR   _macula._tcp.local.
//
// The instance name is the node field with '.' replaced by '-' ('@' and
// ':' are kept; RFC 6763 allows any UTF-8 in an instance label, including
// dots, but many implementations mishandle an escaped dot), cut to 63
// bytes with a hash of the node when longer. The host name is the node
// field reduced to letters, digits and '-'. Both are unique per node and
// only for display: the node itself travels in the TXT record.
//
// TXT keys (case-insensitive; the first occurrence of a key wins):
//
//	node  the node field "name@host:port" (required; discovery.ParseNode
//	      rules; "name@host" without a port is a peer that cannot be dialled)
//	v     the TXT format version, "1"; an instance with another v is
//	      ignored (a future incompatible format), one without v is accepted
//
// A discovered peer is discovery.ParseNode(node): its address is the one
// in the node field, not the SRV/A records, so it is the address the mesh
// advertises.
//
// # Protocol behaviour
//
// At Start the node multicasts two unsolicited announcements one second
// apart (RFC 6762 §8.3), then browses: a PTR query at once, then after 1,
// 2, 4 ... seconds, up to one a minute, with known-answer suppression
// (§7.1). It answers queries for the service PTR (with SRV, TXT, A and AAAA
// as additional records, RFC 6763 §12), the instance's SRV and TXT, the
// host's A and AAAA, and the service-type enumeration. A record is
// multicast at most once per second per interface (§6). Cached records are
// re-queried at 80, 85, 90 and 95% of their TTL (§5.2); an instance whose
// PTR or TXT expires is lost. A goodbye (TTL 0) is honoured after one
// second (§10.1). Close multicasts goodbyes for the node's records (all but the shared
// service-type PTR). The set
// of peers is reported whenever it changes.
//
// Left out: probing and conflict resolution (§8.1, §9; names derive from
// node fields, which are unique), the 20-120 ms response delay for shared
// records (§6), legacy unicast queries from ports other than 5353 (§6.7,
// ignored), unicast responses to QU questions (we answer by multicast,
// which §5.4 permits), and splitting long known-answer lists over
// several packets (§7.2; the list is cut, costing only redundant answers).
//
// # Sockets and interfaces
//
// One IPv4 socket (224.0.0.251) and one IPv6 socket ([ff02::fb]) bound to
// the wildcard address on the mDNS port with SO_REUSEADDR, so that avahi
// or another responder may hold the port too, and with IP_MULTICAST_ALL
// (IPV6_MULTICAST_ALL) off, so only joined groups arrive (internal/mcast,
// shared with gossip). Packets go out with TTL/hop limit 255 on each
// selected interface (Config.Interfaces, or every up, running,
// multicast-capable, non-loopback interface), and the selection and the
// addresses are read again whenever the interfaces change (rtnetlink events
// on Linux, a 3 s poll elsewhere). IPv6 is optional: when it cannot bind, join or send on an
// interface, IPv4 carries on alone.
//
// # Why not github.com/pion/mdns/v2
//
// Version 2.2.2 answers DNS-SD queries and browses, but: it sends no
// announcements on Register and no goodbyes on Unregister or Close; its
// browse reports instances added or updated, never removed (a goodbye or
// an expired record is invisible to the caller); and its destination is
// fixed at port 5353, so tests cannot use a private port on "lo". Those
// are the core of this strategy (level-triggered peer sets with prompt
// loss), so the responder and browser are written here, on
// golang.org/x/net/dns/dnsmessage and x/net/ipv4, ipv6.
//
// # Threat model
//
// mDNS is unauthenticated: anyone on the link can advertise an instance
// with any node, or send goodbyes for others' records. A peer found here
// is only dialled; the mesh handshake (shared cookie, optional TLS)
// decides whether it joins, so an attacker on the link can at worst make
// nodes dial wrong addresses or forget peers briefly. Only packets sent to
// the mDNS group on a selected interface are taken (unicast to the port is
// dropped), responses only from the mDNS port. Every packet is parsed with
// bounds (9000 bytes, 64 questions, 256 records), the instance table is
// bounded (Config.MaxPeers) and received packets wait in a bounded queue
// (drops are counted). Malformed packets are counted and logged at most
// once a minute per source.
//
// A flood of fake instances cannot lock a real one out. An instance is
// verified once it is heard again at least 1 s after its first record with
// a usable node= (a real responder announces twice, 1 s apart, and answers
// refresh queries). TTLs heard are capped at 120 s until then, 4500 s after.
// A new instance in a full table evicts the least recently heard instance
// without a usable node, else the least recently heard unverified one
// (Stats.Evicted, a warning at most once a minute); only a table of
// verified instances refuses it ("table_full", warned too). 1,200 fakes in
// 6 packets with a 4500 s TTL then cost a real newcomer nothing
// (TestTableFloodDoesNotLockOut).
package mdns

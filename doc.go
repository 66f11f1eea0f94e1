// Package cluster forms a cluster of Go processes with zero configuration,
// the Go counterpart of Macula's macula_cluster:start_cluster/1.
//
// A strategy finds peers; the cluster connects them into a full mesh of
// authenticated TCP links (package mesh) and reports, exactly once and in
// order, when a peer is discovered or lost and when its link comes up or
// goes down:
//
//	strategy (gossip | static | dns | mdns | yours)   finds peers {name, addr} (addr alone is fine)
//	        |  Found / Gone to a non-blocking Sink, coalesced per peer
//	        v
//	cluster: the event spine                          one loop owns membership, logs each change once
//	        |  Connect / Forget / Disconnect
//	        v
//	mesh (sealed TCP links)                           bounded dialling, handshake, liveness, messages
//	        |  NodeUp / NodeDown to a non-blocking sink
//	        v
//	Events() and Config.OnEvent                       in order, exactly once
//
// # Which strategy
//
//	strategy  finds peers by                          use it for
//	gossip    UDP multicast heartbeats (Macula's)     a LAN, Docker networks, bare metal: zero config
//	static    a list of name@host:port or host:port   fixed hosts, tests, networks without multicast
//	dns       A/AAAA or SRV records, polled           Kubernetes headless services, cloud DNS
//	mdns      DNS-SD _macula._tcp.local               LANs where mDNS is allowed and multicast routed
//	auto      static if Nodes is set, else gossip     the default, as in Macula
//
// Discovery never tears down a live link: a peer that drops out of the
// strategy's view (gossip expiry, DNS record removed) is reported Lost and is
// no longer redialled, but its link stays until the mesh sees it die (closed,
// timeout) or leave. Liveness is the mesh's job.
//
// # Events and slow consumers
//
// Config.OnEvent is called from a single goroutine, in order, and is
// lossless: while it runs, later events wait. The Events channel carries the
// same sequence with a buffer of Config.EventQueue events (default 1024): a
// reader that falls that far behind misses events, which are counted in
// Stats().EventsDropped and logged. Use OnEvent when no event may be missed
// under any load. Close closes the channel after the last event, so it can
// be drained after Close returns.
//
// Every NodeUp is followed by exactly one NodeDown for that link, also at
// Close (reason "shutdown"). A panic in OnEvent is recovered, logged with its
// stack and counted (Stats().EventPanics); the stream goes on.
//
// # Names and addresses
//
// A peer has a name ("name@host", the identity its handshake proves) and an
// address ("host:port", where to dial). A strategy that knows only
// addresses (DNS, "host:port" static entries) gets each peer reported
// under its real name once the first link to that address has told it; a
// new name at a known address is the old one Lost and the new one
// Discovered.
//
// # Errors
//
// After Close every call that can fail returns an error matching ErrClosed
// (errors.Is), which is the same value as gossip.ErrClosed, mesh.ErrClosed
// and the other packages' ErrClosed.
//
// # Several clusters in one process
//
// Each Start creates an independent node with its own mesh listener and
// name, like Macula's named instances; clusters with a different gossip
// group, port or secret do not see each other.
package cluster

// Package cluster forms a cluster of Go processes with zero configuration,
// the Go counterpart of Macula's macula_cluster:start_cluster/1.
//
// A strategy finds peers; the cluster connects them into a full mesh of
// authenticated TCP links (package mesh) and reports, exactly once and in
// order, when a peer is discovered or lost and when its link comes up or
// goes down:
//
//	strategy (gossip | static | dns | mdns | yours)   finds peers {name, addr}
//	        |  the current set of peers (level-triggered)
//	        v
//	cluster                                           connects what is found, retries with backoff
//	        |  Connect / Forget / Disconnect
//	        v
//	mesh (TCP links)                                  handshake, liveness, messages
//	        |  NodeUp / NodeDown
//	        v
//	Events() and Config.OnEvent                       in order, exactly once
//
// # Which strategy
//
//	strategy  finds peers by                          use it for
//	gossip    UDP multicast heartbeats (Macula's)     a LAN, Docker networks, bare metal: zero config
//	static    a list of name@host:port                fixed hosts, tests, networks without multicast
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
// Close (reason "shutdown").
//
// # Several clusters in one process
//
// Each Start creates an independent node with its own mesh listener and
// name, like Macula's named instances; clusters with a different gossip
// group, port or secret do not see each other.
package cluster

// Package dnsdisc is a discovery.Strategy that finds peers by polling DNS:
// the A/AAAA records of a Kubernetes headless service, or SRV records.
//
// # Modes
//
// A mode (Config.Mode "a", the default for names not starting with "_"):
// every address of Config.Name is a peer at the mesh port Config.Port
// (default 9100). A headless service ("clusterIP: None") answers with one
// address per ready pod:
//
//	macula-headless.my-namespace.svc.cluster.local.  A  10.1.2.3
//	                                                  A  10.1.2.4
//
// SRV mode (Config.Mode "srv", the default for names starting with "_"):
// each SRV record gives a target host and a port; the target is resolved to
// its addresses (A and AAAA), and every address is a peer at the record's
// port. A target of "." (service not available) is skipped. In Kubernetes,
// name the service port "macula" with protocol TCP and query
// "_macula._tcp.<service>.<namespace>.svc.cluster.local".
//
// # Node names
//
// DNS tells addresses, not names. Each address is reported as an
// address-only peer (discovery.Peer{Addr: "10.1.2.3:9100"}); the mesh dials
// it and learns the node's name in its handshake, and the cluster reports
// the peer under that name. Nodes may therefore be named as their
// operators like ("n1@10.1.2.3", "api-0@pod-dns-name"); the former
// convention "<basename>@<pod IP>" still works, and Config.Basename is
// accepted and ignored. Two nodes on one IP address with different ports
// are two peers.
//
// # Behaviour
//
// The name is queried fully qualified (a "." is appended), so resolv.conf
// search lists never rewrite it. Each lookup is bounded by Config.Timeout.
// NXDOMAIN and "no records" are answers (an empty set: the peers are
// gone); a lookup that fails (timeout, SERVFAIL, refused, network error)
// keeps the last good answer, so a DNS outage does not drop the cluster.
// The change ok -> failing is logged once as a warning and failing -> ok
// once at Info, not every poll. The set is reported only when it changes.
// This node (the self Peer given to Start) is left out, by address and by
// name. At most 1024 peers are kept.
//
// With Config.Server set, every query goes to that server ("host:port",
// UDP with TCP fallback for truncated answers) through the pure Go
// resolver; otherwise the system resolver configuration is used.
//
// # Threat model
//
// DNS is trusted to name peers, but nothing more: a peer found by DNS is
// only dialled, and the mesh handshake (shared cookie, optional TLS)
// decides whether it joins. A spoofed answer can make this node dial
// wrong addresses or forget peers for a while (until the next good
// answer); it cannot join the cluster. Use a trusted resolver (cluster
// DNS) or DNSSEC-validating infrastructure if that matters.
package dnsdisc

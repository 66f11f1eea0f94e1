package cluster

import (
	"fmt"
	"time"
)

// EventKind says what happened to a peer.
type EventKind int

// The event kinds, in the order a peer usually sees them.
const (
	// Discovered: a strategy found the peer.
	Discovered EventKind = iota + 1
	// Lost: the strategy no longer reports the peer (gossip expiry, DNS
	// record gone, mDNS goodbye, static node removed). A live link is not
	// torn down because of it: liveness is the mesh's job.
	Lost
	// NodeUp: an authenticated mesh link to the peer is up.
	NodeUp
	// NodeDown: the link is gone; Reason says why.
	NodeDown
)

func (k EventKind) String() string {
	switch k {
	case Discovered:
		return "discovered"
	case Lost:
		return "lost"
	case NodeUp:
		return "nodeup"
	case NodeDown:
		return "nodedown"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one membership change. Events reach Config.OnEvent and the
// Events channel from one goroutine, in order, each exactly once.
type Event struct {
	Kind EventKind
	// Node is the peer's mesh name, "name@host".
	Node string
	// Addr is the peer's mesh address "host:port"; empty for a discovered
	// node that cannot be dialled (an Erlang macula node, say).
	Addr string
	// Source is the strategy that reported a Discovered or Lost peer.
	Source string
	// Incarnation identifies the peer process of a NodeUp; a restarted peer
	// comes back with a new one. 0 for an Erlang link.
	Incarnation uint64
	// Reason of a NodeDown: "closed", "timeout", "left", "restarted",
	// "disconnected" or "shutdown" (see package mesh).
	Reason string
	// Time the event was observed.
	Time time.Time
	// Tags of a NodeUp: the peer's tags (its Config.Tags); nil = none.
	// Read-only: the Events channel and OnEvent share the map.
	Tags map[string]string
	// Protocol of a NodeUp or NodeDown: "" for a mesh link (a Go node),
	// ProtocolErlang for an Erlang distribution link (Config.Erlang).
	Protocol string
}

func (e Event) String() string {
	s := e.Kind.String() + " " + e.Node
	if e.Addr != "" {
		s += " " + e.Addr
	}
	if e.Protocol != "" {
		s += " [" + e.Protocol + "]"
	}
	if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	return s
}

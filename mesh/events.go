package mesh

import "time"

// EventKind says whether a link came up or went down.
type EventKind int

const (
	// NodeUp: a link to Event.Node is up.
	NodeUp EventKind = iota + 1
	// NodeDown: the link reported by the last NodeUp for Event.Node is down.
	NodeDown
)

func (k EventKind) String() string {
	switch k {
	case NodeUp:
		return "nodeup"
	case NodeDown:
		return "nodedown"
	}
	return "unknown"
}

// Reason says why a link went down.
type Reason string

// Reasons for NodeDown.
const (
	ReasonClosed       Reason = "closed"       // the connection was closed or reset by the peer, or broke
	ReasonTimeout      Reason = "timeout"      // nothing arrived, or nothing could be written, for LinkTimeout
	ReasonLeft         Reason = "left"         // the peer said goodbye (it is shutting down)
	ReasonRestarted    Reason = "restarted"    // a new incarnation of the peer replaced the link
	ReasonDisconnected Reason = "disconnected" // local Disconnect
	ReasonShutdown     Reason = "shutdown"     // local Close
)

// linkDownReasons are the keys of Stats.LinksDown, present (at 0) from Start.
var linkDownReasons = []Reason{
	ReasonClosed, ReasonTimeout, ReasonLeft, ReasonRestarted, ReasonDisconnected, ReasonShutdown,
}

// Event is a link change. For one Mesh, events reach Config.OnEvent in the
// order the link table changed: every NodeUp for a node is followed by
// exactly one NodeDown before the next NodeUp for that node.
type Event struct {
	Kind        EventKind
	Node        string // peer name, "name@host"
	Addr        string // peer's advertised address, "host:port"
	Dialled     string // the address this node dialled for the link; "" for an inbound link
	Incarnation uint64 // peer's incarnation (of the link that came up or went down)
	Reason      Reason // NodeDown only
	Time        time.Time

	// Tags are the peer's tags (its Config.Tags), a copy; NodeUp only.
	Tags map[string]string
}

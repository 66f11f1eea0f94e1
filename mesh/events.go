package mesh

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

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

// Event is a link change. For one Mesh, events are delivered to
// Config.OnEvent from a single goroutine in the order the link table
// changed: every NodeUp for a node is followed by exactly one NodeDown
// before the next NodeUp for that node.
type Event struct {
	Kind        EventKind
	Node        string // peer name, "name@host"
	Addr        string // peer's advertised address, "host:port"
	Incarnation uint64 // peer's incarnation (of the link that came up or went down)
	Reason      Reason // NodeDown only
	Time        time.Time
}

// dispatcher is an unbounded FIFO of events drained by one goroutine, so a
// link goroutine never blocks on a slow OnEvent. It holds only link
// changes, so its size is bounded by the rate of handshakes.
type dispatcher struct {
	mu     sync.Mutex
	q      []Event
	closed bool
	wake   chan struct{}
	done   chan struct{}
}

func newDispatcher() *dispatcher {
	return &dispatcher{wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// push appends e. It never blocks.
func (d *dispatcher) push(e Event) {
	d.mu.Lock()
	d.q = append(d.q, e)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// close makes run return once the queue is empty.
func (d *dispatcher) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) run(on func(Event), log *slog.Logger) {
	defer close(d.done)
	var batch []Event
	for {
		d.mu.Lock()
		batch, d.q = d.q, batch[:0]
		closed := d.closed
		d.mu.Unlock()
		if len(batch) == 0 {
			if closed {
				return
			}
			<-d.wake
			continue
		}
		for i := range batch {
			e := batch[i]
			logEvent(log, e)
			if on != nil {
				on(e)
			}
			batch[i] = Event{}
		}
	}
}

func logEvent(log *slog.Logger, e Event) {
	if !log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	if e.Kind == NodeUp {
		log.Info("mesh: nodeup", "node", e.Node, "addr", e.Addr, "incarnation", e.Incarnation)
	} else {
		log.Info("mesh: nodedown", "node", e.Node, "addr", e.Addr, "incarnation", e.Incarnation,
			"reason", string(e.Reason))
	}
}

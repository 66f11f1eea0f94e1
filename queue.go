package cluster

import (
	"sync"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/mesh"
)

// inbox is the one queue of the event spine: the mesh's link events (in
// order, each kept: they are bounded by the rate of handshakes) and the
// strategy's findings, coalesced by peer key so that while the loop is busy
// only the newest state of each peer is kept. Neither the mesh nor a
// strategy ever blocks on it.
type inbox struct {
	mu     sync.Mutex
	links  []linkNote
	peers  map[string]peerNote
	closed bool
	signal chan struct{}
}

// linkNote is a link event: of the mesh, or of an Erlang distribution link.
type linkNote struct {
	ev     mesh.Event
	erlang bool
}

// peerNote is the newest state a strategy reported for one peer key.
type peerNote struct {
	peer    discovery.Peer
	present bool
}

func (q *inbox) init() {
	q.signal = make(chan struct{}, 1)
	q.peers = make(map[string]peerNote)
}

func (q *inbox) wake() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *inbox) pushLink(e mesh.Event) { q.push(linkNote{ev: e}) }

// pushErlang queues an event of an Erlang distribution link (Node, Kind,
// Reason and Time are set).
func (q *inbox) pushErlang(e mesh.Event) { q.push(linkNote{ev: e, erlang: true}) }

func (q *inbox) push(n linkNote) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.links = append(q.links, n)
	q.mu.Unlock()
	q.wake()
}

func (q *inbox) pushPeer(p discovery.Peer, present bool) {
	k := p.Key()
	if k == "" {
		return
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.peers[k] = peerNote{peer: p, present: present}
	q.mu.Unlock()
	q.wake()
}

// take blocks until there is work and hands out everything queued; ok is
// false once the inbox is closed and drained.
func (q *inbox) take() (peers map[string]peerNote, links []linkNote, ok bool) {
	for {
		q.mu.Lock()
		if len(q.peers) > 0 || len(q.links) > 0 {
			peers, links = q.peers, q.links
			q.peers, q.links = make(map[string]peerNote), nil
			q.mu.Unlock()
			return peers, links, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil, nil, false
		}
		<-q.signal
	}
}

// close lets take drain what is queued and then report !ok; later pushes
// are dropped.
func (q *inbox) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.wake()
}

// sink is the discovery.Sink the strategy reports to.
type sink struct{ q *inbox }

func (s sink) Found(p discovery.Peer) { s.q.pushPeer(p, true) }
func (s sink) Gone(p discovery.Peer)  { s.q.pushPeer(p, false) }

// Package static is the static-list discovery strategy: a fixed set of
// nodes, changeable at run time with AddNode and RemoveNode.
//
// An entry is "name@host:port", "host:port" (the name is learned in the mesh
// handshake) or "name@host" (known, not dialable). The list is reported at
// Start and on every change. Liveness is the mesh's business: a listed node
// that is not reachable stays "discovered" (it is configured, after all) and
// is redialled by the mesh with backoff until it answers.
package static

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/macula-io/cluster/discovery"
)

// DefaultReconnectInterval is kept for compatibility; see
// Config.ReconnectInterval.
const DefaultReconnectInterval = 5 * time.Second

// ErrClosed is returned by calls after Close (the module's one ErrClosed).
var ErrClosed = discovery.ErrClosed

// Config configures the static strategy. The zero value is an empty list.
type Config struct {
	// Nodes is the list of peers: "name@host:port", "host:port" or
	// "name@host" (not dialable).
	Nodes []string
	// ReconnectInterval is ignored: the mesh redials listed nodes with
	// exponential backoff (100 ms to 5 s) for as long as they are listed.
	//
	// Deprecated: kept so that existing configurations compile.
	ReconnectInterval time.Duration
	// Logger receives list changes at Debug (the facade logs membership);
	// nil discards.
	Logger *slog.Logger
}

// Strategy is the static strategy; it implements discovery.Strategy.
type Strategy struct {
	log  *slog.Logger
	life discovery.Lifecycle

	mu     sync.Mutex
	nodes  map[string]entry // by Peer.Key
	self   discovery.Peer
	set    *discovery.Set // nil before Start
	adds   uint64
	closed bool // Close was called: report nothing more
}

type entry struct {
	field string // as configured
	peer  discovery.Peer
}

var _ discovery.Strategy = (*Strategy)(nil)

// New validates the configured nodes.
func New(cfg Config) (*Strategy, error) {
	s := &Strategy{log: cfg.Logger, nodes: make(map[string]entry)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, n := range cfg.Nodes {
		p, err := discovery.ParseEntry(n)
		if err != nil {
			return nil, fmt.Errorf("static: node %q: %w", n, err)
		}
		s.nodes[p.Key()] = entry{field: n, peer: p}
	}
	return s, nil
}

// Name returns "static".
func (s *Strategy) Name() string { return "static" }

// Start reports the list to sink.
func (s *Strategy) Start(_ context.Context, self discovery.Peer, sink discovery.Sink) error {
	return s.life.Start(func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.self, s.set = self, discovery.NewSet(sink)
		s.reportLocked()
		return nil
	})
}

// reportLocked hands the current list (minus this node) to the Set, which
// tells the sink what changed.
func (s *Strategy) reportLocked() {
	if s.set == nil || s.closed {
		return
	}
	set := make([]discovery.Peer, 0, len(s.nodes))
	for _, e := range s.nodes {
		p := e.peer
		if (p.Name != "" && p.Name == s.self.Name) || (p.Name == "" && p.Addr == s.self.Addr) {
			continue
		}
		set = append(set, p)
	}
	s.set.Report(set)
}

// Refresh does nothing: the list changes only through AddNode and
// RemoveNode, which report at once.
func (s *Strategy) Refresh() {}

// AddNode adds a node (replacing the address of a node with the same name)
// and reports the change.
func (s *Strategy) AddNode(node string) error {
	p, err := discovery.ParseEntry(node)
	if err != nil {
		return fmt.Errorf("static: add %q: %w", node, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.nodes[p.Key()] = entry{field: node, peer: p}
	s.adds++
	s.log.Debug("static: node added", "node", node)
	s.reportLocked()
	return nil
}

// RemoveNode removes a node, given as configured or as "name@host" for a
// "name@host:port" entry, and reports the change. It returns the removed
// peer and whether the node was listed.
func (s *Strategy) RemoveNode(node string) (discovery.Peer, bool) {
	p, err := discovery.ParseEntry(node)
	if err != nil {
		return discovery.Peer{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.nodes[p.Key()]
	if !ok {
		return discovery.Peer{}, false
	}
	delete(s.nodes, p.Key())
	s.log.Debug("static: node removed", "node", node)
	s.reportLocked()
	return e.peer, true
}

// Nodes returns the configured list as written, sorted.
func (s *Strategy) Nodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.nodes))
	for _, e := range s.nodes {
		out = append(out, e.field)
	}
	slices.Sort(out)
	return out
}

// DiscoveryStats implements discovery.StatsSource.
func (s *Strategy) DiscoveryStats() discovery.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return discovery.Stats{Peers: uint64(len(s.nodes)),
		Counters: map[string]uint64{"nodes_added": s.adds}, Rejected: map[string]uint64{}}
}

// Close stops reporting. It is idempotent.
func (s *Strategy) Close() error {
	s.life.Close()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

package gossip

import (
	"context"
	"sync"

	"github.com/macula-io/cluster/discovery"
)

// Strategy adapts gossip to discovery.Strategy: it reports the full current
// set of peers whenever the discovered table changes.
type Strategy struct {
	cfg Config

	mu     sync.Mutex
	g      *Gossip
	closed bool
}

var _ discovery.Strategy = (*Strategy)(nil)

// NewStrategy returns a gossip strategy; cfg.Node is set from self at Start.
func NewStrategy(cfg Config) *Strategy { return &Strategy{cfg: cfg} }

// Name is "gossip".
func (s *Strategy) Name() string { return "gossip" }

// Start starts gossip with cfg.Node = self.Node. report receives the full
// set of peers (sorted by Node) after every change, from one goroutine.
func (s *Strategy) Start(self discovery.Peer, report func([]discovery.Peer)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.g != nil {
		return nil
	}
	cfg := s.cfg
	cfg.Node = self.Node
	g, err := start(context.Background(), cfg, report)
	if err != nil {
		return err
	}
	s.g = g
	return nil
}

// Refresh sends a heartbeat now (see Gossip.BroadcastNow). It does not block.
func (s *Strategy) Refresh() {
	if g := s.Gossip(); g != nil {
		g.BroadcastNow()
	}
}

// Gossip returns the instance started by Start (nil before Start), for
// Peers, Stats and Group. It stays valid after Close (final counters).
func (s *Strategy) Gossip() *Gossip {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.g
}

// Close stops gossip and waits for its goroutines; no report is made after
// it returns. It is idempotent.
func (s *Strategy) Close() error {
	s.mu.Lock()
	g := s.g
	s.closed = true
	s.mu.Unlock()
	if g == nil {
		return nil
	}
	return g.Close()
}

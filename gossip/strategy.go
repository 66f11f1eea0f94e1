package gossip

import (
	"context"
	"sync/atomic"

	"github.com/macula-io/cluster/discovery"
)

// Strategy adapts gossip to discovery.Strategy: it tells the sink of every
// change of the discovered table.
type Strategy struct {
	cfg  Config
	life discovery.Lifecycle
	g    atomic.Pointer[Gossip]
}

var (
	_ discovery.Strategy    = (*Strategy)(nil)
	_ discovery.StatsSource = (*Strategy)(nil)
	_ discovery.LinkWatcher = (*Strategy)(nil)
)

// NewStrategy returns a gossip strategy; cfg.Node and cfg.Sink are set at
// Start.
func NewStrategy(cfg Config) *Strategy { return &Strategy{cfg: cfg} }

// Name is "gossip".
func (s *Strategy) Name() string { return "gossip" }

// Start starts gossip announcing self ("name@host:port" on the wire) and
// reporting to sink.
func (s *Strategy) Start(ctx context.Context, self discovery.Peer, sink discovery.Sink) error {
	return s.life.Start(func() error {
		cfg := s.cfg
		cfg.Node = discovery.FormatNode(self.Name, self.Addr)
		cfg.Sink = sink
		g, err := Start(ctx, cfg)
		if err != nil {
			return err
		}
		s.g.Store(g)
		return nil
	})
}

// Refresh sends a heartbeat now (see Gossip.BroadcastNow). It does not block.
func (s *Strategy) Refresh() {
	if g := s.Gossip(); g != nil {
		g.BroadcastNow()
	}
}

// Linked implements discovery.LinkWatcher (see Gossip.Linked). Before
// Start it does nothing.
func (s *Strategy) Linked(name string, up bool) {
	if g := s.Gossip(); g != nil {
		g.Linked(name, up)
	}
}

// Gossip returns the instance started by Start (nil before Start), for
// Peers, Stats and Group. It stays valid after Close (final counters).
func (s *Strategy) Gossip() *Gossip { return s.g.Load() }

// DiscoveryStats implements discovery.StatsSource.
func (s *Strategy) DiscoveryStats() discovery.Stats {
	var st Stats
	if g := s.Gossip(); g != nil {
		st = g.Stats()
	} else {
		st.Rejected = zeroRejected()
	}
	return discovery.Stats{
		Peers: st.Peers,
		Counters: map[string]uint64{
			"heartbeats_sent":     st.HeartbeatsSent,
			"send_errors":         st.SendErrors,
			"packets_received":    st.PacketsReceived,
			"heartbeats_received": st.HeartbeatsReceived,
			"own_ignored":         st.OwnIgnored,
			"discovered":          st.Discovered,
			"lost":                st.Lost,
			"evicted":             st.Evicted,
			"linked":              st.Linked,
			"quiet":               st.Quiet,
			"filter_updates":      st.FilterUpdates,
			"revived":             st.Revived,
		},
		Rejected: st.Rejected,
	}
}

func zeroRejected() map[string]uint64 {
	m := make(map[string]uint64, len(reasons))
	for _, r := range reasons {
		m[r] = 0
	}
	return m
}

// Close stops gossip and waits for its goroutines; the sink hears nothing
// after it returns. It is idempotent.
func (s *Strategy) Close() error {
	if !s.life.Close() {
		return nil
	}
	return s.Gossip().Close()
}

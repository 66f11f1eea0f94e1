// Package static is the static-list discovery strategy: a fixed set of
// "name@host:port" nodes, changeable at run time with AddNode and RemoveNode.
//
// It reports the configured nodes (minus this node) at start, on Refresh, on
// every change, and again every ReconnectInterval, so that the cluster keeps
// dialling nodes that are down. Liveness is the mesh's business: a listed node
// that is not reachable stays "discovered" (it is configured, after all) and is
// simply not connected.
package static

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/macula-io/cluster/discovery"
)

// DefaultReconnectInterval is used when Config.ReconnectInterval is zero.
const DefaultReconnectInterval = 5 * time.Second

// ErrClosed is returned by calls after Close.
var ErrClosed = errors.New("static: closed")

// Config configures the static strategy. The zero value is an empty list.
type Config struct {
	// Nodes is the list of peers, each "name@host:port" (a node without a
	// port is accepted but cannot be dialled).
	Nodes []string
	// ReconnectInterval is how often the list is re-reported so that the
	// cluster redials nodes that are not connected. Zero means 5 s.
	ReconnectInterval time.Duration
	// Logger receives membership changes; nil discards.
	Logger *slog.Logger
}

// Strategy is the static strategy; it implements discovery.Strategy.
type Strategy struct {
	interval time.Duration
	log      *slog.Logger

	mu      sync.Mutex
	nodes   map[string]discovery.Peer // by Name
	self    discovery.Peer
	report  func([]discovery.Peer)
	started bool
	closed  bool

	kick chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
}

// New validates the configured nodes.
func New(cfg Config) (*Strategy, error) {
	s := &Strategy{
		interval: cfg.ReconnectInterval,
		log:      cfg.Logger,
		nodes:    make(map[string]discovery.Peer),
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	if s.interval <= 0 {
		s.interval = DefaultReconnectInterval
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, n := range cfg.Nodes {
		p, err := discovery.ParseNode(n)
		if err != nil {
			return nil, fmt.Errorf("static: node %q: %w", n, err)
		}
		s.nodes[p.Name] = p
	}
	return s, nil
}

// Name returns "static".
func (s *Strategy) Name() string { return "static" }

// Start begins reporting the list.
func (s *Strategy) Start(self discovery.Peer, report func([]discovery.Peer)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.started {
		return errors.New("static: already started")
	}
	s.started, s.self, s.report = true, self, report
	s.wg.Add(1)
	go s.loop()
	s.Refresh()
	return nil
}

func (s *Strategy) loop() {
	defer s.wg.Done()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		case <-s.kick:
		}
		s.mu.Lock()
		report, set := s.report, s.setLocked()
		s.mu.Unlock()
		select {
		case <-s.done:
			return
		default:
			report(set)
		}
	}
}

func (s *Strategy) setLocked() []discovery.Peer {
	set := make([]discovery.Peer, 0, len(s.nodes))
	for _, p := range s.nodes {
		if p.Name != s.self.Name {
			set = append(set, p)
		}
	}
	slices.SortFunc(set, func(a, b discovery.Peer) int { return strings.Compare(a.Name, b.Name) })
	return set
}

// Refresh re-reports the list now.
func (s *Strategy) Refresh() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// AddNode adds a "name@host:port" node (replacing the address of a node
// with the same name) and reports the new list.
func (s *Strategy) AddNode(node string) error {
	p, err := discovery.ParseNode(node)
	if err != nil {
		return fmt.Errorf("static: add %q: %w", node, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.nodes[p.Name] = p
	s.mu.Unlock()
	s.log.Info("static node added", "node", node)
	s.Refresh()
	return nil
}

// RemoveNode removes a node, given as "name@host" or "name@host:port", and
// reports the new list. It reports whether the node was listed. The cluster
// facade also disconnects a removed node.
func (s *Strategy) RemoveNode(node string) (string, bool) {
	p, err := discovery.ParseNode(node)
	if err != nil {
		return "", false
	}
	s.mu.Lock()
	_, ok := s.nodes[p.Name]
	delete(s.nodes, p.Name)
	s.mu.Unlock()
	if ok {
		s.log.Info("static node removed", "node", node)
		s.Refresh()
	}
	return p.Name, ok
}

// Nodes returns the configured list as node fields, sorted.
func (s *Strategy) Nodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.nodes))
	for _, p := range s.nodes {
		out = append(out, p.Node)
	}
	slices.Sort(out)
	return out
}

// Close stops reporting and waits for the strategy's goroutine.
func (s *Strategy) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

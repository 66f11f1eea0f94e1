package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/dnsdisc"
	"github.com/macula-io/cluster/gossip"
	"github.com/macula-io/cluster/mdns"
	"github.com/macula-io/cluster/mesh"
	"github.com/macula-io/cluster/static"
)

// Errors returned by the facade; test them with errors.Is.
var (
	// ErrClosed is returned by calls after Close.
	ErrClosed = errors.New("cluster: closed")
	// ErrNotStatic is returned by AddNode and RemoveNode when the cluster
	// does not run the static strategy.
	ErrNotStatic = errors.New("cluster: not using the static strategy")
)

// Peer is a discovered node.
type Peer struct {
	Node   string    // mesh name, "name@host"
	Addr   string    // mesh address, "" when not dialable
	Source string    // strategy that reported it
	Since  time.Time // when it was first reported
}

// Member is a connected node.
type Member struct {
	Node        string
	Addr        string
	Incarnation uint64
	Since       time.Time
	Outbound    bool // we dialled it
}

// Stats are the facade's own counters; see Mesh().Stats() and the
// strategy's Stats for the rest.
type Stats struct {
	Events        uint64 // events emitted
	EventsDropped uint64 // events the Events channel reader missed (EventQueue full)
}

// Cluster is one running node: a strategy feeding a mesh.
type Cluster struct {
	log      *slog.Logger
	strategy discovery.Strategy
	static   *static.Strategy // non-nil with the static strategy
	mesh     *mesh.Mesh
	self     discovery.Peer
	onEvent  func(Event)

	inbox inbox // strategy reports and mesh events, for the loop

	mu         sync.Mutex
	discovered map[string]Peer // owned by the loop; copies handed out under mu
	closed     bool
	stats      Stats

	events   chan Event // the Events channel, nil when disabled
	dropping bool       // in an overflow episode of the Events channel (owned by the loop)

	loopDone chan struct{}
}

type report struct{ peers []discovery.Peer }

// Start validates cfg, starts the mesh listener and the strategy, and
// returns the running cluster. ctx bounds the start only.
func Start(ctx context.Context, cfg Config) (*Cluster, error) {
	if err := CheckStrategy(cfg.Strategy); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{
		log:        log,
		onEvent:    cfg.OnEvent,
		discovered: make(map[string]Peer),
		loopDone:   make(chan struct{}),
	}
	c.inbox.init()
	if cfg.EventQueue >= 0 {
		n := cfg.EventQueue
		if n == 0 {
			n = DefaultEventQueue
		}
		c.events = make(chan Event, n)
	}

	strat, st, err := newStrategy(cfg, log)
	if err != nil {
		return nil, err
	}
	c.strategy, c.static = strat, st

	mcfg := cfg.Mesh
	if mcfg.Logger == nil {
		mcfg.Logger = log
	}
	if mcfg.Name == "" {
		mcfg.Name = "macula-" + randomHex(3) + "@" + defaultHost(mcfg.Listen, cfg.Gossip.Interfaces)
	} else if err := validName(mcfg.Name); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if mcfg.Cookie == "" {
		home, _ := os.UserHomeDir()
		cookie, _, err := mesh.ResolveCookie(func(string) string { return "" }, home)
		if err != nil {
			return nil, fmt.Errorf("cluster: no cookie given and %w", err)
		}
		mcfg.Cookie = cookie
	}
	mcfg.OnEvent = func(e mesh.Event) { c.inbox.push(e) }
	m, err := mesh.Start(ctx, mcfg)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c.mesh = m
	_, portStr, _ := net.SplitHostPort(m.Addr())
	port, _ := strconv.Atoi(portStr)
	c.self = discovery.Peer{Node: discovery.FormatNode(m.Name(), port), Name: m.Name(), Addr: m.Addr()}

	go c.loop()
	if err := c.strategy.Start(c.self, func(p []discovery.Peer) {
		c.inbox.push(report{peers: slices.Clone(p)})
	}); err != nil {
		c.mesh.Close()
		c.inbox.close()
		<-c.loopDone
		if c.events != nil {
			close(c.events)
		}
		return nil, fmt.Errorf("cluster: start %s strategy: %w", c.strategy.Name(), err)
	}
	log.Info("cluster started", "node", c.self.Name, "addr", c.self.Addr, "strategy", c.strategy.Name())
	return c, nil
}

func newStrategy(cfg Config, log *slog.Logger) (discovery.Strategy, *static.Strategy, error) {
	if cfg.Discovery != nil {
		return cfg.Discovery, nil, nil
	}
	name := cfg.Strategy
	if name == "" || name == StrategyAuto {
		name = StrategyGossip
		if len(cfg.Nodes) > 0 {
			name = StrategyStatic
		}
	}
	switch name {
	case StrategyStatic:
		st, err := static.New(static.Config{Nodes: cfg.Nodes, ReconnectInterval: cfg.ReconnectInterval, Logger: log})
		if err != nil {
			return nil, nil, fmt.Errorf("cluster: %w", err)
		}
		return st, st, nil
	case StrategyGossip:
		g := cfg.Gossip
		if g.Logger == nil {
			g.Logger = log
		}
		return gossip.NewStrategy(g), nil, nil
	case StrategyDNS:
		d := cfg.DNS
		if d.Logger == nil {
			d.Logger = log
		}
		return dnsdisc.NewStrategy(d), nil, nil
	case StrategyMDNS:
		d := cfg.MDNS
		if d.Logger == nil {
			d.Logger = log
		}
		return mdns.NewStrategy(d), nil, nil
	}
	return nil, nil, fmt.Errorf("cluster: unknown strategy %q", name)
}

// loop owns the discovered table; it turns strategy reports and mesh events
// into cluster events, in order, and reconciles the mesh with discovery.
func (c *Cluster) loop() {
	defer close(c.loopDone)
	for {
		item, ok := c.inbox.pop()
		if !ok {
			return
		}
		switch v := item.(type) {
		case report:
			c.reconcile(v.peers)
		case mesh.Event:
			e := Event{Node: v.Node, Addr: v.Addr, Incarnation: v.Incarnation, Reason: string(v.Reason), Time: v.Time}
			e.Kind = NodeUp
			if v.Kind == mesh.NodeDown {
				e.Kind = NodeDown
				e.Incarnation = 0
			}
			if e.Kind == NodeUp {
				c.log.Info("node up", "node", e.Node, "addr", e.Addr)
			} else {
				c.log.Info("node down", "node", e.Node, "reason", e.Reason)
			}
			c.emit(e)
		}
	}
}

func (c *Cluster) reconcile(peers []discovery.Peer) {
	src := c.strategy.Name()
	now := time.Now()
	seen := make(map[string]bool, len(peers))
	for _, p := range peers {
		if p.Name == "" || p.Name == c.self.Name || seen[p.Name] {
			continue
		}
		seen[p.Name] = true
		c.mu.Lock()
		old, known := c.discovered[p.Name]
		c.mu.Unlock()
		if known && old.Addr != p.Addr {
			c.drop(old, now)
			known = false
		}
		if !known {
			np := Peer{Node: p.Name, Addr: p.Addr, Source: src, Since: now}
			c.mu.Lock()
			c.discovered[p.Name] = np
			c.mu.Unlock()
			c.log.Info("node discovered", "node", p.Name, "addr", p.Addr, "source", src)
			c.emit(Event{Kind: Discovered, Node: p.Name, Addr: p.Addr, Source: src, Time: now})
		}
		if p.Dialable() {
			c.mesh.Connect(p.Name, p.Addr)
		}
	}
	c.mu.Lock()
	var gone []Peer
	for name, p := range c.discovered {
		if !seen[name] {
			gone = append(gone, p)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(gone, func(a, b Peer) int { return strings.Compare(a.Node, b.Node) })
	for _, p := range gone {
		c.drop(p, now)
	}
}

// drop removes a discovered peer: Lost event, and the mesh stops redialling
// it (a live link stays up: liveness is the mesh's job).
func (c *Cluster) drop(p Peer, now time.Time) {
	c.mu.Lock()
	delete(c.discovered, p.Node)
	c.mu.Unlock()
	c.mesh.Forget(p.Node)
	c.log.Info("node lost", "node", p.Node, "source", p.Source)
	c.emit(Event{Kind: Lost, Node: p.Node, Addr: p.Addr, Source: p.Source, Time: now})
}

func (c *Cluster) emit(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	c.mu.Lock()
	c.stats.Events++
	c.mu.Unlock()
	if c.onEvent != nil {
		c.onEvent(e)
	}
	if c.events == nil {
		return
	}
	select {
	case c.events <- e:
		c.dropping = false
	default:
		c.mu.Lock()
		c.stats.EventsDropped++
		c.mu.Unlock()
		if !c.dropping {
			c.dropping = true
			c.log.Error("Events channel reader is behind; dropping events until it catches up (Config.OnEvent is lossless)",
				"buffered", cap(c.events))
		}
	}
}

// Events returns the event channel. It carries every event from Start on,
// in order, buffered up to Config.EventQueue events, and is closed by Close
// after the last event (the NodeDown "shutdown" of each link), so a reader
// can drain it after Close returns. It returns nil when EventQueue < 0.
func (c *Cluster) Events() <-chan Event { return c.events }

// Self is this node: Name "name@host", Addr the mesh address, Node the
// gossip node field "name@host:port".
func (c *Cluster) Self() discovery.Peer { return c.self }

// Strategy returns the running strategy (its Name, and its Stats where it
// has them).
func (c *Cluster) Strategy() discovery.Strategy { return c.strategy }

// Mesh returns the node's mesh (links, Send, Stats).
func (c *Cluster) Mesh() *mesh.Mesh { return c.mesh }

// Discovered returns a copy of the peers the strategy currently reports,
// sorted by node.
func (c *Cluster) Discovered() []Peer {
	c.mu.Lock()
	out := make([]Peer, 0, len(c.discovered))
	for _, p := range c.discovered {
		out = append(out, p)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Peer) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// Connected returns a copy of the live links, sorted by node.
func (c *Cluster) Connected() []Member {
	links := c.mesh.Links()
	out := make([]Member, 0, len(links))
	for _, l := range links {
		out = append(out, Member{Node: l.Node, Addr: l.Addr, Incarnation: l.Incarnation, Since: l.Since, Outbound: l.Outbound})
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// BroadcastNow asks the strategy for a round now: a heartbeat with gossip,
// a lookup with DNS, a query with mDNS, a re-report with static.
func (c *Cluster) BroadcastNow() { c.strategy.Refresh() }

// Send delivers payload to node over its link, in order with other Sends
// to that node. See mesh.Mesh.Send for errors.
func (c *Cluster) Send(ctx context.Context, node string, payload []byte) error {
	return c.mesh.Send(ctx, node, payload)
}

// AddNode adds a "name@host:port" node to the static list and dials it.
func (c *Cluster) AddNode(node string) error {
	if c.static == nil {
		return ErrNotStatic
	}
	if c.isClosed() {
		return ErrClosed
	}
	return c.static.AddNode(node)
}

// RemoveNode removes a node ("name@host" or "name@host:port") from the
// static list and disconnects it (NodeDown reason "disconnected").
func (c *Cluster) RemoveNode(node string) error {
	if c.static == nil {
		return ErrNotStatic
	}
	if c.isClosed() {
		return ErrClosed
	}
	name, ok := c.static.RemoveNode(node)
	if !ok {
		return fmt.Errorf("cluster: remove %q: not in the static list", node)
	}
	c.mesh.Disconnect(name)
	return nil
}

// Stats returns the facade's counters.
func (c *Cluster) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *Cluster) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Close leaves the cluster: it stops discovery, says goodbye on every link
// (peers see NodeDown "left" at once), emits NodeDown "shutdown" for each
// local link, delivers the remaining events, closes the Events channel and
// waits for every goroutine. It is idempotent.
func (c *Cluster) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	err := c.strategy.Close()
	if merr := c.mesh.Close(); err == nil {
		err = merr
	}
	c.inbox.close()
	<-c.loopDone
	if c.events != nil {
		close(c.events)
	}
	c.log.Info("cluster closed", "node", c.self.Name)
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// defaultHost picks the host part of a generated node name: the listen
// address when it is specific, else the first IPv4 address of the gossip
// interfaces (or of any up, non-loopback interface), else 127.0.0.1.
func defaultHost(listen string, ifnames []string) string {
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" {
		if ip, err := netip.ParseAddr(h); err == nil && !ip.IsUnspecified() {
			return ip.String()
		}
	}
	ifs, _ := net.Interfaces()
	for _, ifi := range ifs {
		if len(ifnames) > 0 && !slices.Contains(ifnames, ifi.Name) {
			continue
		}
		if ifi.Flags&net.FlagUp == 0 || (len(ifnames) == 0 && ifi.Flags&net.FlagLoopback != 0) {
			continue
		}
		addrs, _ := ifi.Addrs()
		for _, a := range addrs {
			if pn, ok := a.(*net.IPNet); ok {
				if ip4 := pn.IP.To4(); ip4 != nil {
					return ip4.String()
				}
			}
		}
	}
	return "127.0.0.1"
}

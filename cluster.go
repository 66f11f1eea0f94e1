package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"slices"
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
	// ErrClosed is returned by calls after Close. It is the one ErrClosed
	// of the module: gossip.ErrClosed, mesh.ErrClosed and the others are
	// the same value.
	ErrClosed = discovery.ErrClosed
	// ErrStarted is returned by a strategy started twice.
	ErrStarted = discovery.ErrStarted
	// ErrNotStatic is returned by AddNode and RemoveNode when the cluster
	// does not run the static strategy.
	ErrNotStatic = errors.New("cluster: not using the static strategy")
)

// Peer is a discovered node.
type Peer struct {
	// Node is the peer's name, "name@host". It is "" for a peer known by
	// address only (DNS, a "host:port" static entry) until a link to that
	// address has told its name.
	Node   string
	Addr   string    // mesh address "host:port"; "" when not dialable
	Source string    // strategy that reported it
	Since  time.Time // when it was first reported
}

// Member is a connected node (or, from Self, this node).
type Member struct {
	Node        string // name, "name@host"
	Addr        string // advertised mesh address, "host:port"
	Incarnation uint64
	Since       time.Time
	Outbound    bool // we dialled the link (false for Erlang links: not known)
	// Erlang is true for a node connected through Erlang distribution
	// (Config.Erlang): an Erlang or Elixir node. Addr is then "".
	Erlang bool

	// Tags are the node's tags (its Config.Tags), a copy; nil = none.
	Tags map[string]string
}

// Stats are the node's counters in one shape: the facade's own, the
// strategy's (whatever strategy runs) and the mesh's.
type Stats struct {
	Events        uint64 // events emitted
	EventsDropped uint64 // events the Events channel reader missed (EventQueue full)
	EventPanics   uint64 // OnEvent calls that panicked (recovered, logged with the stack)
	// Strategy is the running strategy's name; Discovery its counters
	// (empty maps for a strategy without discovery.StatsSource).
	Strategy  string
	Discovery discovery.Stats
	Mesh      mesh.Stats
}

// Cluster is one running node: a strategy feeding a mesh, and the event
// spine between them.
type Cluster struct {
	log      *slog.Logger
	strategy discovery.Strategy
	static   *static.Strategy // non-nil with the static strategy
	mesh     *mesh.Mesh
	self     Member
	onEvent  func(Event)

	inbox inbox // the spine's one queue: strategy findings and link events

	// Membership state: written only by the loop (under mu, so that
	// readers can copy it).
	mu         sync.Mutex
	discovered map[string]*dpeer // by strategy key (name, or address)
	announced  map[string]*dpeer // by name: the entry whose Discovered was emitted
	members    map[string]Member // live links, by name
	erlMembers map[string]Member // live Erlang distribution links, by name
	byAddr     map[string]string // address (advertised or dialled) -> member name
	closed     bool
	stats      Stats

	events   chan Event // the Events channel, nil when disabled
	dropping bool       // in an overflow episode of the Events channel (owned by the loop)

	loopDone chan struct{}

	erl *erlang // nil unless Config.Erlang.Enable
}

// dpeer is one discovered peer.
type dpeer struct {
	key   string
	peer  discovery.Peer // as the strategy reported it
	name  string         // peer.Name, or the name learned for its address
	src   string
	since time.Time
}

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
		discovered: make(map[string]*dpeer),
		announced:  make(map[string]*dpeer),
		members:    make(map[string]Member),
		erlMembers: make(map[string]Member),
		byAddr:     make(map[string]string),
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

	mcfg := cfg.Mesh
	if len(cfg.Tags) > 0 {
		if len(mcfg.Tags) > 0 {
			return nil, fmt.Errorf("cluster: %w: Tags and Mesh.Tags are both set", mesh.ErrInvalidConfig)
		}
		mcfg.Tags = cfg.Tags
	}
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
	if cfg.Erlang.Enable {
		cfg.Gossip.ErlangNode = mcfg.Name
	}
	strat, st, err := newStrategy(cfg, log)
	if err != nil {
		return nil, err
	}
	c.strategy, c.static = strat, st

	mcfg.OnEvent = c.inbox.pushLink
	m, err := mesh.Start(ctx, mcfg)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c.mesh = m
	if cfg.Erlang.Enable {
		if err := c.startErlang(ctx, cfg.Erlang, m.Name(), mcfg.Cookie); err != nil {
			m.Close()
			return nil, err
		}
	}
	c.self = Member{Node: m.Name(), Addr: m.Addr(), Incarnation: m.Incarnation(), Since: time.Now(), Tags: maps.Clone(mcfg.Tags)}

	go c.loop()
	self := discovery.Peer{Name: m.Name(), Addr: m.Addr()}
	if err := c.strategy.Start(ctx, self, sink{&c.inbox}); err != nil {
		c.closeErlang()
		c.mesh.Close()
		c.inbox.close()
		<-c.loopDone
		if c.events != nil {
			close(c.events)
		}
		return nil, fmt.Errorf("cluster: start %s strategy: %w", c.strategy.Name(), err)
	}
	log.Info("cluster started", "node", c.self.Node, "addr", c.self.Addr, "strategy", c.strategy.Name())
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

// loop is the event spine: the only owner of membership state and the only
// place that logs membership changes. It turns strategy findings and link
// events into cluster events, in order, and tells the mesh what to dial.
// Each finding costs O(1) map work plus O(k log k) to order a batch of k.
func (c *Cluster) loop() {
	defer close(c.loopDone)
	src := c.strategy.Name()
	for {
		peers, links, ok := c.inbox.take()
		if !ok {
			return
		}
		keys := make([]string, 0, len(peers))
		for k := range peers {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		now := time.Now()
		for _, k := range keys {
			n := peers[k]
			if n.present {
				c.found(k, n.peer, src, now)
			} else if d := c.discovered[k]; d != nil {
				c.drop(d, now)
			}
		}
		for _, e := range links {
			if e.erlang {
				c.erlangLink(e.ev)
			} else {
				c.link(e.ev)
			}
		}
	}
}

// found handles a strategy's Found for key.
func (c *Cluster) found(key string, p discovery.Peer, src string, now time.Time) {
	if p.Name == c.self.Node || (p.Name == "" && p.Addr == c.self.Addr) {
		return
	}
	if old := c.discovered[key]; old != nil {
		if old.peer == p {
			// Found again, unchanged: the strategy heard it after a
			// silence (gossip: a partition healed). Dial now if it is
			// not linked, instead of at its next backoff step.
			if _, linked := c.members[p.Name]; !linked && p.Dialable() {
				c.mesh.Connect(p.Name, p.Addr)
			}
			return
		}
		c.drop(old, now) // a new address for the name: lost, then discovered again
	}
	d := &dpeer{key: key, peer: p, name: p.Name, src: src, since: now}
	c.mu.Lock()
	c.discovered[key] = d
	c.mu.Unlock()
	if d.name == "" {
		// Address only: if a live link already has this address, that is
		// its name.
		if name, ok := c.byAddr[p.Addr]; ok {
			c.bind(d, name, now)
		}
	} else {
		c.announce(d, now)
	}
	if p.Dialable() {
		c.mesh.Connect(p.Name, p.Addr)
	}
	c.wantErlang(p.Name, p.Dialable())
}

// announce emits Discovered for d's name, once per name.
func (c *Cluster) announce(d *dpeer, now time.Time) {
	if c.announced[d.name] != nil {
		return
	}
	c.mu.Lock()
	c.announced[d.name] = d
	c.mu.Unlock()
	c.log.Info("node discovered", "node", d.name, "addr", d.peer.Addr, "source", d.src)
	c.emit(Event{Kind: Discovered, Node: d.name, Addr: d.peer.Addr, Source: d.src, Time: now})
}

// unannounce emits Lost for d's name if d announced it.
func (c *Cluster) unannounce(d *dpeer, now time.Time) {
	if d.name == "" || c.announced[d.name] != d {
		return
	}
	c.mu.Lock()
	delete(c.announced, d.name)
	c.mu.Unlock()
	c.log.Info("node lost", "node", d.name, "source", d.src)
	c.emit(Event{Kind: Lost, Node: d.name, Addr: d.peer.Addr, Source: d.src, Time: now})
}

// bind gives an address-only peer the name its link told. A different name
// at the same address (a pod replaced on the same IP) is Lost first.
func (c *Cluster) bind(d *dpeer, name string, now time.Time) {
	if d.name == name {
		return
	}
	c.unannounce(d, now)
	c.mu.Lock()
	d.name = name
	c.mu.Unlock()
	c.announce(d, now)
}

// drop removes a discovered peer: Lost event, and the mesh stops redialling
// it (a live link stays up: liveness is the mesh's job).
func (c *Cluster) drop(d *dpeer, now time.Time) {
	c.mu.Lock()
	delete(c.discovered, d.key)
	c.mu.Unlock()
	c.mesh.Forget(d.key)
	if !d.peer.Dialable() {
		c.unwantErlang(d.peer.Name)
	}
	c.unannounce(d, now)
}

// link handles a link event of the mesh.
func (c *Cluster) link(v mesh.Event) {
	e := Event{Node: v.Node, Addr: v.Addr, Incarnation: v.Incarnation, Reason: string(v.Reason), Time: v.Time}
	if v.Kind == mesh.NodeDown {
		e.Kind, e.Incarnation = NodeDown, 0
		c.mu.Lock()
		delete(c.members, v.Node)
		for _, a := range [2]string{v.Addr, v.Dialled} {
			if a != "" && c.byAddr[a] == v.Node {
				delete(c.byAddr, a)
			}
		}
		c.mu.Unlock()
		c.log.Info("node down", "node", e.Node, "reason", e.Reason)
		c.emit(e)
		if lw, ok := c.strategy.(discovery.LinkWatcher); ok {
			lw.Linked(v.Node, false)
		}
		return
	}
	e.Kind = NodeUp
	c.mu.Lock()
	e.Tags = v.Tags
	c.members[v.Node] = Member{Node: v.Node, Addr: v.Addr, Incarnation: v.Incarnation, Since: v.Time,
		Outbound: v.Dialled != "", Tags: maps.Clone(v.Tags)}
	c.byAddr[v.Addr] = v.Node
	if v.Dialled != "" {
		c.byAddr[v.Dialled] = v.Node
	}
	c.mu.Unlock()
	for _, a := range [2]string{v.Dialled, v.Addr} {
		if d := c.discovered[a]; a != "" && d != nil && d.peer.Name == "" {
			c.bind(d, v.Node, v.Time)
		}
	}
	c.log.Info("node up", "node", e.Node, "addr", e.Addr, "incarnation", e.Incarnation)
	c.emit(e)
	if lw, ok := c.strategy.(discovery.LinkWatcher); ok {
		lw.Linked(v.Node, true)
	}
}

// erlangLink handles an event of an Erlang distribution link (erldist
// reports each link up once and down once, in order).
func (c *Cluster) erlangLink(v mesh.Event) {
	e := Event{Node: v.Node, Reason: string(v.Reason), Time: v.Time, Protocol: ProtocolErlang}
	c.mu.Lock()
	if v.Kind == mesh.NodeDown {
		e.Kind = NodeDown
		delete(c.erlMembers, v.Node)
	} else {
		e.Kind = NodeUp
		c.erlMembers[v.Node] = Member{Node: v.Node, Since: v.Time, Erlang: true}
	}
	_, goNode := c.members[v.Node]
	if d := c.announced[v.Node]; d != nil && d.peer.Dialable() {
		goNode = true
	}
	c.mu.Unlock()
	if e.Kind == NodeUp && goNode && c.erl != nil {
		// A Go node reached through its Erlang-form twin (a dial that
		// raced its first heartbeat with a port): Go nodes use the mesh.
		c.erl.node.Disconnect(v.Node)
	}
	if e.Kind == NodeDown {
		c.log.Info("node down", "node", e.Node, "reason", e.Reason, "protocol", e.Protocol)
	} else {
		c.log.Info("node up", "node", e.Node, "protocol", e.Protocol)
	}
	c.emit(e)
}

func (c *Cluster) emit(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	c.mu.Lock()
	c.stats.Events++
	c.mu.Unlock()
	if c.onEvent != nil {
		c.callOnEvent(e)
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

// callOnEvent runs OnEvent; a panic in it is recovered, counted and logged
// with its stack (as net/http does for handlers), and the stream goes on.
func (c *Cluster) callOnEvent(e Event) {
	defer func() {
		if r := recover(); r != nil {
			c.mu.Lock()
			c.stats.EventPanics++
			c.mu.Unlock()
			c.log.Error("cluster: OnEvent panicked; event stream continues", "event", e.String(),
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	c.onEvent(e)
}

// Events returns the event channel. It carries every event from Start on,
// in order, buffered up to Config.EventQueue events, and is closed by Close
// after the last event (the NodeDown "shutdown" of each link), so a reader
// can drain it after Close returns. It returns nil when EventQueue < 0.
func (c *Cluster) Events() <-chan Event { return c.events }

// Self is this node: its name, mesh address, incarnation and start time.
func (c *Cluster) Self() Member {
	s := c.self
	s.Tags = maps.Clone(s.Tags)
	return s
}

// Strategy returns the running strategy (its Name, and its own Stats where
// it has them; Stats().Discovery has them in one shape).
func (c *Cluster) Strategy() discovery.Strategy { return c.strategy }

// Mesh returns the node's mesh (links, Send, Stats).
func (c *Cluster) Mesh() *mesh.Mesh { return c.mesh }

// Discovered returns a copy of the peers the strategy currently reports,
// sorted by node then address. A peer known by address only whose name is
// not known yet has Node "".
func (c *Cluster) Discovered() []Peer {
	c.mu.Lock()
	out := make([]Peer, 0, len(c.discovered))
	for _, d := range c.discovered {
		out = append(out, Peer{Node: d.name, Addr: d.peer.Addr, Source: d.src, Since: d.since})
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Peer) int {
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return strings.Compare(a.Addr, b.Addr)
	})
	return out
}

// Connected returns a copy of the members (live links) as the event stream
// reported them, sorted by node: Go nodes on the mesh, and Erlang nodes
// (Member.Erlang) with Config.Erlang.
func (c *Cluster) Connected() []Member {
	c.mu.Lock()
	out := make([]Member, 0, len(c.members))
	for _, m := range c.members {
		m.Tags = maps.Clone(m.Tags)
		out = append(out, m)
	}
	for _, m := range c.erlMembers {
		out = append(out, m)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int {
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		return cmpBool(a.Erlang, b.Erlang)
	})
	return out
}

// BroadcastNow asks the strategy for a round now: a heartbeat with gossip,
// a lookup with DNS, a query with mDNS (static: nothing to do).
func (c *Cluster) BroadcastNow() { c.strategy.Refresh() }

// Send delivers payload to node over its link, in order with other Sends
// to that node. See mesh.Mesh.Send for errors; after Close the error is
// ErrClosed.
func (c *Cluster) Send(ctx context.Context, node string, payload []byte) error {
	return c.mesh.Send(ctx, node, payload)
}

// AddNode adds a node to the static list ("name@host:port", "host:port" or
// "name@host") and dials it.
func (c *Cluster) AddNode(node string) error {
	if c.static == nil {
		return ErrNotStatic
	}
	if c.isClosed() {
		return ErrClosed
	}
	return c.static.AddNode(node)
}

// RemoveNode removes a node from the static list (as listed, or
// "name@host" for a "name@host:port" entry) and disconnects it (NodeDown
// reason "disconnected").
func (c *Cluster) RemoveNode(node string) error {
	if c.static == nil {
		return ErrNotStatic
	}
	if c.isClosed() {
		return ErrClosed
	}
	p, ok := c.static.RemoveNode(node)
	if !ok {
		return fmt.Errorf("cluster: remove %q: not in the static list", node)
	}
	// Stop dialling and close the link at once, by name or by address:
	// the mesh knows the link of an address even before the spine has
	// seen its NodeUp.
	c.mesh.Disconnect(p.Key())
	return nil
}

// Stats returns the node's counters: the facade's, the strategy's and the
// mesh's.
func (c *Cluster) Stats() Stats {
	c.mu.Lock()
	st := c.stats
	c.mu.Unlock()
	st.Strategy = c.strategy.Name()
	if ss, ok := c.strategy.(discovery.StatsSource); ok {
		st.Discovery = ss.DiscoveryStats()
	}
	if st.Discovery.Counters == nil {
		st.Discovery.Counters = map[string]uint64{}
	}
	if st.Discovery.Rejected == nil {
		st.Discovery.Rejected = map[string]uint64{}
	}
	st.Mesh = c.mesh.Stats()
	return st
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
	if eerr := c.closeErlang(); err == nil {
		err = eerr
	}
	if merr := c.mesh.Close(); err == nil {
		err = merr
	}
	c.inbox.close()
	<-c.loopDone
	if c.events != nil {
		close(c.events)
	}
	c.log.Info("cluster closed", "node", c.self.Node)
	return err
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
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

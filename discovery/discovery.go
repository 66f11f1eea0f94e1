// Package discovery is the small contract between peer discovery strategies
// (gossip, static, DNS, mDNS, or your own) and the cluster facade.
//
// A strategy tells a Sink what it finds: Found when a peer appears (or its
// address changes), Gone when it disappears. The Sink never blocks and
// coalesces: while the facade is busy only the latest state of each peer is
// kept, so a flood of reports costs O(1) per peer, never a walk of the whole
// set. A strategy that thinks in whole sets (a DNS answer, a static list)
// hands each set to a Set, which turns it into Found and Gone calls.
//
// A peer has two fields: its Name ("name@host", the identity the mesh
// handshake proves) and its Addr ("host:port", where to dial). A strategy
// that knows only an address (a DNS A or SRV record, a bare "host:port"
// static entry) reports Peer{Addr: ...}; the mesh dials it and learns the
// name in the handshake. A strategy that knows only a name (an Erlang macula
// node heard without a port) reports Peer{Name: ...}: discovered, not
// dialled.
package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
)

// Errors shared by every package of the module, so that errors.Is matches
// the same value through the facade whichever package returned it.
var (
	// ErrClosed is returned by calls after Close.
	ErrClosed = errors.New("macula: closed")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("macula: already started")
)

// Peer is one node a strategy knows of. At least one field is set.
type Peer struct {
	// Name is the node's name, "name@host"; "" when only the address is
	// known.
	Name string
	// Addr is the mesh address to dial, "host:port"; "" when the peer
	// cannot be dialled (no port known).
	Addr string
}

// Dialable reports whether the peer has a mesh address.
func (p Peer) Dialable() bool { return p.Addr != "" }

// Key identifies the peer in a strategy's view: its Name when known, else
// its Addr. Found with an existing key replaces that peer.
func (p Peer) Key() string {
	if p.Name != "" {
		return p.Name
	}
	return p.Addr
}

func (p Peer) String() string {
	switch {
	case p.Name == "":
		return p.Addr
	case p.Addr == "":
		return p.Name
	}
	return p.Name + " at " + p.Addr
}

// Sink receives a strategy's findings. Its methods never block, are safe
// for concurrent use, and may be called after Close (they are then
// ignored).
type Sink interface {
	// Found reports that p is present. A Found with the Key of a peer
	// already found replaces it (for example a new address for a name);
	// the same peer found again says it was heard again after a silence
	// (the facade then dials it at once if it is not linked).
	Found(p Peer)
	// Gone reports that the peer with p's Key is no longer present.
	Gone(p Peer)
}

// Strategy finds peers. The cluster facade calls Start once, Refresh any
// number of times, and Close once; a user may implement it for their own
// discovery mechanism (Lifecycle and Set do the bookkeeping).
type Strategy interface {
	// Name is the strategy's short name ("gossip", "static", ...); it is the
	// source field of discovered/lost events.
	Name() string
	// Start begins discovery. self is this node (so the strategy can
	// advertise it and ignore itself); sink receives what is found, never
	// after Close returns. ctx bounds the start only. Start returns an
	// error when discovery cannot begin (for example the port cannot be
	// bound), ErrStarted when called twice, and ErrClosed after Close.
	Start(ctx context.Context, self Peer, sink Sink) error
	// Refresh asks for a discovery round now (gossip: a heartbeat now; DNS:
	// a lookup now). It must not block.
	Refresh()
	// Close stops discovery and waits for every goroutine it started. It is
	// idempotent.
	Close() error
}

// LinkWatcher is implemented by strategies that can spend less on peers
// the mesh already watches. The facade calls Linked(name, true) when the
// mesh links the peer of that name (NodeUp) and Linked(name, false) when
// the link is gone (NodeDown), in that order for each name, from one
// goroutine. It must not block. Gossip uses it to drop most heartbeats of
// linked peers in the kernel (they would wake the node N/Interval times a
// second to say what the link already says) and not to expire them.
type LinkWatcher interface {
	Linked(name string, up bool)
}

// StatsSource is implemented by strategies that count what they do; the
// facade exports Stats of whatever strategy runs.
type StatsSource interface {
	DiscoveryStats() Stats
}

// Stats is a strategy's counters in the one shape the facade and /metrics
// use.
type Stats struct {
	// Peers is the number of peers the strategy reports now.
	Peers uint64
	// Counters are monotonic counters by snake_case name, for example
	// "heartbeats_sent" or "lookups".
	Counters map[string]uint64
	// Rejected counts dropped input by reason; every reason the strategy
	// knows is present from Start, at 0.
	Rejected map[string]uint64
}

// Lifecycle is the start/close bookkeeping every strategy needs: Start once,
// Close once, calls after Close fail with ErrClosed. The zero value is a
// new, unstarted lifecycle.
type Lifecycle struct {
	mu    sync.Mutex
	state int8 // 0 new, 1 started, 2 closed
}

// Start moves new -> started. It returns ErrStarted or ErrClosed otherwise.
// begin, if not nil, runs under the lifecycle's lock and may fail; on
// failure the lifecycle stays new.
func (l *Lifecycle) Start(begin func() error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch l.state {
	case 1:
		return ErrStarted
	case 2:
		return ErrClosed
	}
	if begin != nil {
		if err := begin(); err != nil {
			return err
		}
	}
	l.state = 1
	return nil
}

// Close moves to closed. It reports whether this call closed a started
// lifecycle (the caller then stops what Start began); false for a second
// Close or a Close before Start.
func (l *Lifecycle) Close() (stop bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	stop = l.state == 1
	l.state = 2
	return stop
}

// Closed reports whether Close was called.
func (l *Lifecycle) Closed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state == 2
}

// Set turns whole-set reports into Found and Gone calls: Report diffs the
// new set against the last one by Key. Only one goroutine may call Report.
type Set struct {
	sink Sink
	last map[string]Peer
}

// NewSet returns a Set reporting to sink.
func NewSet(sink Sink) *Set { return &Set{sink: sink, last: make(map[string]Peer)} }

// Report makes peers the current set and tells the sink what changed; it
// returns the number of peers found (new or changed) and gone.
func (s *Set) Report(peers []Peer) (found, gone int) {
	next := make(map[string]Peer, len(peers))
	for _, p := range peers {
		k := p.Key()
		if k == "" {
			continue
		}
		next[k] = p
		if old, ok := s.last[k]; !ok || old != p {
			s.sink.Found(p)
			found++
		}
	}
	for k, p := range s.last {
		if _, ok := next[k]; !ok {
			s.sink.Gone(p)
			gone++
		}
	}
	s.last = next
	return found, gone
}

// Len is the size of the last reported set.
func (s *Set) Len() int { return len(s.last) }

// ErrInvalidNode is wrapped by ParseNode errors.
var ErrInvalidNode = errors.New("invalid node")

// MaxNodeLen is the longest node field accepted (gossip wire format limit).
const MaxNodeLen = 255

// ParseNode parses a node as written in configuration and on the gossip
// wire. Accepted forms:
//
//	name@host:port      Name "name@host", Addr "host:port" (host may be an
//	                    IPv6 literal in brackets)
//	name@host           Name only: discovered but not dialable
//
// name and host must be non-empty, printable ASCII without spaces, '|' or a
// second '@'; the whole field is at most MaxNodeLen bytes.
func ParseNode(node string) (Peer, error) {
	if err := ValidateField(node); err != nil {
		return Peer{}, err
	}
	name, host, ok := strings.Cut(node, "@")
	if !ok || name == "" || host == "" || strings.Contains(host, "@") {
		return Peer{}, fmt.Errorf("%w %q: want name@host or name@host:port", ErrInvalidNode, node)
	}
	if h, port, err := net.SplitHostPort(host); err == nil {
		if err := checkHostPort(h, port); err != nil {
			return Peer{}, fmt.Errorf("%w %q: %w", ErrInvalidNode, node, err)
		}
		return Peer{Name: name + "@" + h, Addr: net.JoinHostPort(h, port)}, nil
	}
	if strings.HasPrefix(host, "[") || strings.Count(host, ":") == 1 {
		return Peer{}, fmt.Errorf("%w %q: bad host:port", ErrInvalidNode, node)
	}
	return Peer{Name: node}, nil
}

// ParseEntry parses a configured peer: any form ParseNode accepts, or a
// bare "host:port" (address only: the name is learned in the handshake).
func ParseEntry(s string) (Peer, error) {
	if strings.Contains(s, "@") {
		return ParseNode(s)
	}
	if err := ValidateField(s); err != nil {
		return Peer{}, err
	}
	h, port, err := net.SplitHostPort(s)
	if err != nil {
		return Peer{}, fmt.Errorf("%w %q: want name@host:port, name@host or host:port", ErrInvalidNode, s)
	}
	if err := checkHostPort(h, port); err != nil {
		return Peer{}, fmt.Errorf("%w %q: %w", ErrInvalidNode, s, err)
	}
	return Peer{Addr: net.JoinHostPort(h, port)}, nil
}

func checkHostPort(host, port string) error {
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	if host == "" {
		return errors.New("empty host")
	}
	return nil
}

// FormatNode is the inverse of ParseNode for a dialable peer:
// "name@host:port" with the port of addr.
func FormatNode(name, addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || name == "" {
		return name
	}
	n, host, _ := strings.Cut(name, "@")
	return n + "@" + net.JoinHostPort(host, port)
}

// ValidateField checks the generic rules for a node field: non-empty, at
// most MaxNodeLen bytes, printable ASCII (0x21-0x7e), no '|'.
func ValidateField(node string) error {
	if node == "" {
		return fmt.Errorf("%w: empty", ErrInvalidNode)
	}
	if len(node) > MaxNodeLen {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrInvalidNode, len(node), MaxNodeLen)
	}
	for i := 0; i < len(node); i++ {
		c := node[i]
		if c < 0x21 || c > 0x7e || c == '|' {
			return fmt.Errorf("%w %q: byte 0x%02x at %d not allowed", ErrInvalidNode, node, c, i)
		}
	}
	return nil
}

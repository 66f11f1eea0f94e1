// Package discovery is the small contract between peer discovery strategies
// (gossip, static, DNS, mDNS, or your own) and the cluster facade.
//
// A strategy is level-triggered: whenever its view changes it reports the
// whole current set of peers it knows. The facade diffs successive sets into
// Discovered and Lost events and dials the dialable peers. A strategy never
// has to remember what it reported before, and a missed report is repaired by
// the next one.
package discovery

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Peer is one node a strategy knows of.
type Peer struct {
	// Node is the node as the strategy heard it, for example
	// "api@10.0.0.5:9100" (a Go node: name, host and mesh port) or
	// "a@127.0.0.1" (an Erlang macula node: no port).
	Node string
	// Name is the mesh node name, "name@host": Node without the port.
	Name string
	// Addr is the mesh address to dial, "host:port", or "" when the peer
	// cannot be dialled (no port known).
	Addr string
}

// Dialable reports whether the peer has a mesh address.
func (p Peer) Dialable() bool { return p.Addr != "" }

// Strategy finds peers. The cluster facade calls Start once, Refresh any
// number of times, and Close once; a user may implement it for their own
// discovery mechanism.
type Strategy interface {
	// Name is the strategy's short name ("gossip", "static", ...); it is the
	// source field of discovered/lost events.
	Name() string
	// Start begins discovery. self is this node (so the strategy can
	// advertise it and ignore itself). report must be called with the full
	// current set of peers whenever it changes; calls must not overlap, and
	// report must not be called after Close returns. Start returns an error
	// when discovery cannot begin (for example the port cannot be bound).
	Start(self Peer, report func([]Peer)) error
	// Refresh asks for a discovery round now (gossip: a heartbeat now; DNS:
	// a lookup now). It must not block.
	Refresh()
	// Close stops discovery and waits for every goroutine it started.
	Close() error
}

// ErrInvalidNode is wrapped by ParseNode errors.
var ErrInvalidNode = errors.New("invalid node")

// MaxNodeLen is the longest node field accepted (gossip wire format limit).
const MaxNodeLen = 255

// ParseNode splits a node field into a Peer. Accepted forms:
//
//	name@host:port      dialable (host may be an IPv6 literal in brackets)
//	name@host           discovered but not dialable
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
		n, perr := strconv.Atoi(port)
		if perr != nil || n < 1 || n > 65535 || h == "" {
			return Peer{}, fmt.Errorf("%w %q: bad port %q", ErrInvalidNode, node, port)
		}
		return Peer{Node: node, Name: name + "@" + h, Addr: net.JoinHostPort(h, port)}, nil
	}
	if strings.HasPrefix(host, "[") || strings.Count(host, ":") == 1 {
		return Peer{}, fmt.Errorf("%w %q: bad host:port", ErrInvalidNode, node)
	}
	return Peer{Node: node, Name: node}, nil
}

// FormatNode is the inverse of ParseNode for a dialable node: name is
// "name@host", port the mesh port.
func FormatNode(name string, port int) string {
	n, host, _ := strings.Cut(name, "@")
	return n + "@" + net.JoinHostPort(host, strconv.Itoa(port))
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

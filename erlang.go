package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/macula-io/cluster/erldist"
	"github.com/macula-io/cluster/mesh"
)

// ProtocolErlang is Event.Protocol of an Erlang distribution link; mesh
// links have "".
const ProtocolErlang = "erlang"

// ErlangConfig makes the node a member of an Erlang (or Elixir) cluster as
// well: it serves Erlang distribution (package erldist) under its mesh name
// with the cluster cookie. Go peers keep using the mesh; Erlang nodes are
// reached through distribution:
//
//   - With gossip, each heartbeat round also announces the Erlang-form name
//     "name@host" (no port), so Erlang macula nodes connect to it; Go nodes
//     ignore that twin of a name they hear with a port (package gossip).
//   - A discovered peer without a port (an Erlang macula node's heartbeat, a
//     static "name@host" entry) is dialled through distribution, and
//     redialled every RetryInterval while it stays discovered and down.
//   - Erlang links are reported through the one event stream, NodeUp and
//     NodeDown with Protocol "erlang" (no Addr, Incarnation 0), exactly once
//     each and in order with the mesh's events, and listed by Connected with
//     Member.Erlang set. Cluster.Erlang gives the erldist.Node for messages
//     and calls to registered processes; Cluster.Send stays the mesh.
//   - A Go node's twin is not an Erlang peer: a distribution link that turns
//     out to be to a discovered Go node (its twin was heard before its port)
//     is closed, NodeDown reason "disconnected".
//
// Threat model: the cookie is Erlang's only authentication (package
// erldist). Without a gossip secret anyone on the LAN can make the node dial
// epmd at a host it names in a portless heartbeat: at most maxErlangDials
// (8) such dials run at once, each bounded by erldist's setup time (7 s).
//
// The zero value is off.
type ErlangConfig struct {
	// Enable serves Erlang distribution. false = off: every other field is
	// ignored, nodes without a port are only discovered.
	Enable bool
	// EPMDPort is the port of EPMD, where the node registers (on
	// 127.0.0.1) and looks up Erlang peers (on their hosts). 0 = 4369.
	EPMDPort int
	// EmbeddedEPMD starts an EPMD on 127.0.0.1:EPMDPort when none answers
	// there. false = an EPMD must be running (erl starts one; so does
	// `epmd -daemon`), else Start fails. The embedded one listens on
	// loopback only: Erlang nodes on other hosts need a real epmd here.
	EmbeddedEPMD bool
	// Listen is the distribution TCP address. "" = the host of the node
	// name, any free port (EPMD tells peers which).
	Listen string
	// Hidden connects as a hidden node. false = visible, as Macula needs:
	// Erlang's monitor_nodes(true) reports no nodeup/nodedown for hidden
	// nodes.
	Hidden bool
	// TickTime is net_ticktime: a silent link is down after it. 0 = 60 s,
	// Erlang's default; use the Erlang nodes' value.
	TickTime time.Duration
	// RetryInterval is how often an Erlang node that is discovered but not
	// connected is dialled again. 0 = 2 s.
	RetryInterval time.Duration
}

// maxErlangDials bounds the distribution connects in flight: a flood of
// portless heartbeats costs bounded goroutines (each name is retried on a
// later round instead).
const maxErlangDials = 8

// erlang is the cluster's Erlang distribution side.
type erlang struct {
	node  *erldist.Node
	retry time.Duration
	nudge chan struct{}
	ctx   context.Context
	stop  context.CancelFunc
	done  chan struct{}

	// guarded by Cluster.mu
	want     map[string]bool // discovered peers without a port: dial them
	inflight map[string]bool
}

// startErlang starts the distribution node under name (before the
// strategy, so that Erlang nodes answering the first heartbeat find it).
func (c *Cluster) startErlang(ctx context.Context, cfg ErlangConfig, name, cookie string) error {
	e := &erlang{retry: cfg.RetryInterval, nudge: make(chan struct{}, 1), done: make(chan struct{}),
		want: map[string]bool{}, inflight: map[string]bool{}}
	if e.retry <= 0 {
		e.retry = 2 * time.Second
	}
	n, err := erldist.Start(ctx, erldist.Config{
		Name: name, Cookie: cookie, Listen: cfg.Listen, EPMDPort: cfg.EPMDPort,
		EmbeddedEPMD: cfg.EmbeddedEPMD, Hidden: cfg.Hidden, TickTime: cfg.TickTime,
		Logger: c.log,
		OnNodeUp: func(node string) {
			c.inbox.pushErlang(mesh.Event{Kind: mesh.NodeUp, Node: node, Time: time.Now()})
		},
		OnNodeDown: func(node string, reason error) {
			c.inbox.pushErlang(mesh.Event{Kind: mesh.NodeDown, Node: node, Reason: erlangReason(reason), Time: time.Now()})
		},
	})
	if err != nil {
		return fmt.Errorf("cluster: erlang distribution: %w", err)
	}
	e.node = n
	e.ctx, e.stop = context.WithCancel(context.Background())
	c.erl = e
	go c.erlangDialer()
	return nil
}

// erlangReason maps an erldist NodeDown reason to the Event.Reason words.
func erlangReason(err error) mesh.Reason {
	switch {
	case errors.Is(err, erldist.ErrClosed):
		return "shutdown"
	case errors.Is(err, erldist.ErrTickTimeout):
		return "timeout"
	case errors.Is(err, erldist.ErrRestarted):
		return "restarted"
	case errors.Is(err, erldist.ErrDisconnected):
		return "disconnected"
	}
	return "closed"
}

// closeErlang stops dialling and closes the node: NodeDown "shutdown" for
// each Erlang link reaches the inbox before Close returns.
func (c *Cluster) closeErlang() error {
	if c.erl == nil {
		return nil
	}
	c.erl.stop()
	<-c.erl.done
	return c.erl.node.Close()
}

// wantErlang is called by the loop for a discovered peer: a peer without a
// port is dialled through distribution; one with a port is a Go node, on
// the mesh (a distribution link to it, possible only if its portless twin
// was heard first, is closed).
func (c *Cluster) wantErlang(name string, dialable bool) {
	if c.erl == nil || name == "" {
		return
	}
	c.mu.Lock()
	if !dialable {
		c.erl.want[name] = true
	} else {
		delete(c.erl.want, name)
	}
	_, linked := c.erlMembers[name]
	c.mu.Unlock()
	if !dialable {
		select {
		case c.erl.nudge <- struct{}{}:
		default:
		}
	} else if linked {
		c.erl.node.Disconnect(name)
	}
}

// unwantErlang stops dialling name (a live link stays: liveness is the
// link's job).
func (c *Cluster) unwantErlang(name string) {
	if c.erl == nil {
		return
	}
	c.mu.Lock()
	delete(c.erl.want, name)
	c.mu.Unlock()
}

// erlangDialer dials the wanted Erlang nodes that are not connected: at
// once when one is discovered, then every RetryInterval.
func (c *Cluster) erlangDialer() {
	e := c.erl
	defer close(e.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(e.retry)
	defer tick.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case <-e.nudge:
		case <-tick.C:
		}
		c.mu.Lock()
		var todo []string
		for name := range e.want {
			if _, up := c.erlMembers[name]; !up && !e.inflight[name] && len(e.inflight)+len(todo) < maxErlangDials {
				todo = append(todo, name)
			}
		}
		for _, name := range todo {
			e.inflight[name] = true
		}
		c.mu.Unlock()
		slices.Sort(todo)
		for _, name := range todo {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := e.node.Connect(e.ctx, name)
				if err != nil && e.ctx.Err() == nil {
					c.log.Debug("cluster: erlang connect failed", "node", name, "err", err)
				}
				c.mu.Lock()
				delete(e.inflight, name)
				c.mu.Unlock()
			}()
		}
	}
}

// Erlang returns the node's Erlang distribution node (Send and Call to
// registered processes of Erlang nodes, Register for names of this node),
// or nil when Config.Erlang is off.
func (c *Cluster) Erlang() *erldist.Node {
	if c.erl == nil {
		return nil
	}
	return c.erl.node
}

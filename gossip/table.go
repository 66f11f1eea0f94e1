package gossip

import (
	"bytes"
	"cmp"
	"container/list"
	"net"
	"net/netip"
	"slices"
	"time"
)

// maxSuperseded bounds the node fields a row remembers as superseded.
const maxSuperseded = 4

// row is a table entry with the table goroutine's bookkeeping.
type row struct {
	Entry
	elem        *list.Element // in Gossip.probation, established or linkedRows (listOf)
	established bool          // verified: dialable and heard over an interval
	linked      bool          // the caller holds a live link to it (quiet.go)
	pkt         []byte        // its last heartbeat, as received
	// superseded are node fields of the same name that this one replaced:
	// their heartbeats are ignored while this row lives (a replay, or a
	// copy delayed in the network, must not flap discovery).
	superseded []string
	advertised string // the address the heartbeat advertised (Peer.Addr is cleared when not dialable)
	waiting    bool   // its host name is being resolved: not reported yet
	reported   bool   // the sink was told (Found)
}

// ownAddrs is the set of this machine's interface addresses.
type ownAddrs struct{ set map[netip.Addr]struct{} }

func (o *ownAddrs) has(a netip.Addr) bool {
	if o == nil {
		return false
	}
	_, ok := o.set[a]
	return ok
}

// refreshOwn reloads this machine's addresses (at Start and whenever the
// interfaces change). On error the previous set stays.
func (g *Gossip) refreshOwn() {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return
	}
	o := &ownAddrs{set: make(map[netip.Addr]struct{}, len(addrs)+2)}
	o.set[netip.IPv6Loopback()] = struct{}{}
	o.set[netip.AddrFrom4([4]byte{127, 0, 0, 1})] = struct{}{}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			o.set[p.Addr().Unmap().WithZone("")] = struct{}{}
		}
	}
	g.own.Store(o)
}

// listOf is the list a row belongs to.
func (g *Gossip) listOf(r *row) *list.List {
	if r.linked {
		return g.linkedRows
	}
	if r.established {
		return g.established
	}
	return g.probation
}

// removeLocked takes r out of the table (g.mu held).
func (g *Gossip) removeLocked(r *row) {
	delete(g.table, r.Node)
	if g.byName[r.Name] == r.Node {
		delete(g.byName, r.Name)
	}
	g.listOf(r).Remove(r.elem)
	r.elem = nil
	if r.linked {
		g.quiet.mark()
	}
}

// victimLocked picks the entry a new node may replace in a full table: the
// least recently heard unverified one, else the least recently heard
// verified one if it has been silent for two intervals; nil if none.
func (g *Gossip) victimLocked(now time.Time) *row {
	if e := g.probation.Back(); e != nil {
		return e.Value.(*row)
	}
	if e := g.established.Back(); e != nil {
		if r := e.Value.(*row); now.Sub(r.LastSeen) > 2*g.s.interval {
			return r
		}
	}
	return nil
}

// reviveGap: a peer heard after more than reviveGap intervals of silence
// is reported Found again (apply).
const reviveGap = 2

// apply records a heartbeat: O(1) for a known node (a timestamp and a list
// move), O(1) for a new one (a map insert, at most one eviction, one Found).
func (g *Gossip) apply(r received) {
	g.mu.Lock()
	if e, ok := g.table[r.node]; ok {
		// Heard again after missing heartbeats, and not linked: the peer
		// may have been out of reach (a partition that healed, a link
		// that broke). Found again tells the caller to try it now rather
		// than at its next backoff step.
		revived := !e.linked && e.reported && !e.waiting && r.at.Sub(e.LastSeen) > reviveGap*g.s.interval
		e.LastSeen = r.at
		e.From = r.from
		if !bytes.Equal(e.pkt, r.pkt) {
			e.pkt = r.pkt
			if e.linked {
				g.quiet.mark()
			}
		}
		decided, dialable := false, false
		if e.waiting {
			var wait bool
			if dialable, wait = g.checkHost(e.advertised, r.from.Addr(), r.at); !wait {
				decided, e.waiting = true, false
				if dialable {
					e.Addr = e.advertised
				}
			}
		}
		if !e.established && e.Addr != "" && e.LastSeen.Sub(e.FirstSeen) >= g.s.interval*3/4 {
			// Heard over an interval and dialable: verified.
			g.listOf(e).Remove(e.elem)
			e.established = true
			e.elem = g.listOf(e).PushFront(e)
		} else {
			g.listOf(e).MoveToFront(e.elem)
		}
		g.mu.Unlock()
		g.heard.Add(1)
		if decided {
			g.report(e, !dialable, "")
		} else if revived {
			g.revived.Add(1)
			if g.s.sink != nil {
				g.s.sink.Found(e.Peer)
			}
			g.answerPeer(e.Peer.Name)
		}
		return
	}
	oldNode, replace := g.byName[r.peer.Name]
	var old *row
	if replace {
		old = g.table[oldNode]
		if r.peer.Addr == "" && old.advertised != "" {
			// The Erlang-form twin ("name@host") of a node heard with a
			// port: the same node announcing itself to Erlang nodes too
			// (Config.ErlangNode). Not a new peer, not a move.
			g.mu.Unlock()
			g.twins.Add(1)
			return
		}
		if slices.Contains(old.superseded, r.node) {
			// An address this name moved away from, while the newer one
			// is still heard: a replay or a stale copy.
			g.mu.Unlock()
			g.rejected[reasonIndex(ReasonSuperseded)].Add(1)
			if ok, suppressed := g.warn.Allow("\x00superseded:" + r.peer.Name); ok {
				g.s.log.Warn("gossip: ignored a superseded heartbeat (replay?)", "node", r.node,
					"current", oldNode, "from", r.from, "suppressed", suppressed)
			}
			return
		}
	}
	var evicted *row
	if !replace && len(g.table) >= g.s.maxPeers {
		evicted = g.victimLocked(r.at)
		if evicted == nil {
			g.mu.Unlock()
			g.reject(ReasonTableFull, r.from, nil)
			return
		}
		g.removeLocked(evicted)
	}
	g.heard.Add(1)
	p := r.peer
	dialable, wait := true, false
	if g.s.keyring.Len() == 0 && p.Addr != "" {
		// Unsigned: anyone could have named the address. A verified
		// signature means a member advertised it (a replay only repeats a
		// member's address): trusted as is.
		dialable, wait = g.checkHost(p.Addr, r.from.Addr(), r.at)
	}
	if !dialable {
		p.Addr = ""
	}
	n := &row{Entry: Entry{Node: r.node, Peer: p, From: r.from, FirstSeen: r.at, LastSeen: r.at},
		advertised: r.peer.Addr, waiting: wait, pkt: r.pkt, linked: g.linkedNames[p.Name]}
	if old != nil {
		// Same name@host, another port: the node restarted elsewhere.
		g.removeLocked(old)
		n.superseded = append(n.superseded, old.Node)
		for _, s := range old.superseded {
			if len(n.superseded) < maxSuperseded && s != r.node {
				n.superseded = append(n.superseded, s)
			}
		}
		if old.reported {
			g.lost.Add(1)
		}
	}
	n.elem = g.listOf(n).PushFront(n)
	if n.linked {
		g.quiet.mark()
	}
	g.table[r.node] = n
	g.byName[p.Name] = r.node
	g.peers.Store(uint64(len(g.table)))
	g.mu.Unlock()
	if evicted != nil {
		g.evicted.Add(1)
		if ok, suppressed := g.warn.Allow("\x00evicted"); ok {
			g.s.log.Warn("gossip: discovered table full, evicted the least recently heard unverified node",
				"max_peers", g.s.maxPeers, "evicted", evicted.Node, "for", r.node, "from", r.from,
				"suppressed", suppressed)
		}
		if evicted.reported {
			g.lost.Add(1)
			if g.s.sink != nil {
				g.s.sink.Gone(evicted.Peer)
			}
		}
	}
	if !wait {
		g.report(n, !dialable, oldNode)
	}
}

// report tells the sink of a new table entry (table goroutine only).
func (g *Gossip) report(n *row, undialable bool, replaces string) {
	n.reported = true
	if undialable && n.advertised != "" {
		g.rejected[reasonIndex(ReasonUndialable)].Add(1)
		if ok, suppressed := g.warn.Allow("\x00undialable:" + n.From.Addr().String()); ok {
			g.s.log.Warn("gossip: node advertises a host that is not its packet's source; discovered, not dialled "+
				"(set a gossip secret, or AcceptForeignHosts behind NAT)", "node", n.Node, "advertised", n.advertised,
				"from", n.From, "suppressed", suppressed)
		}
	}
	g.discovered.Add(1)
	g.s.log.Debug("gossip: discovered", "node", n.Node, "from", n.From, "replaces", replaces)
	if g.s.sink != nil {
		g.s.sink.Found(n.Peer) // same Key as a replaced node: Found replaces it
	}
	g.answerPeer(n.Peer.Name)
}

// answerers: how many nodes answer a newcomer (see answerPeer).
const answerers = 3

// answerPeer answers a newcomer, or a peer heard again after a silence, so
// that it learns us without waiting an interval, if we are one of the
// answerers nodes whose names follow its name (in name order, wrapping
// around) in our table. One whose name sorts lower than ours is answered at
// once: it is the one that dials (the mesh's rule: of two nodes that learn
// of each other, the higher name waits for the lower one's dial) and our
// heartbeat is how it learns our address. One with a higher name is
// dialled by us; our answer only fills its table, after answerDelay.
//
// Why only a few: an answer is multicast, so when every node answered,
// every newcomer cost N answers each waking all N nodes (N^2 wake-ups,
// plus the lab's or the switch's N copies of each): most of the CPU of a
// 100-node cluster forming or healing. The newcomer needs one link: the
// first node that links to it sends the whole list of its links (the
// mesh's transitive lists), and it dials the rest; the nodes that sort
// below it dial it anyway, on its own heartbeat. A node whose table lacks
// some of the names in between answers too (more answers, not fewer), and
// if every answer is lost the nodes that wait for the newcomer's dial dial
// it themselves after the mesh's yield (300 ms). Without a mesh (gossip
// alone), the others are learnt from their heartbeats, within an interval.
func (g *Gossip) answerPeer(name string) {
	if name != "" && !g.answers(name) {
		g.notAnswered.Add(1)
		return
	}
	if name != "" && name < g.selfName {
		g.BroadcastNow()
	} else {
		g.answer()
	}
}

// answers reports whether we are one of the answerers nodes that follow
// name (wrapping around) among the names in our table.
func (g *Gossip) answers(name string) bool {
	self := g.selfName
	between := func(n string) bool { // strictly after name, before self, cyclically
		if name < self {
			return name < n && n < self
		}
		return n > name || n < self
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	k := 0
	for n := range g.byName {
		if between(n) {
			if k++; k >= answerers {
				return false
			}
		}
	}
	return true
}

// expire drops nodes not heard for Expiry, in node order. Linked rows do
// not expire (quiet.go).
func (g *Gossip) expire(now time.Time) {
	var gone []*row
	g.mu.Lock()
	for _, e := range g.table {
		if !e.linked && now.Sub(e.LastSeen) > g.s.expiry {
			gone = append(gone, e)
		}
	}
	for _, e := range gone {
		g.removeLocked(e)
	}
	g.peers.Store(uint64(len(g.table)))
	g.mu.Unlock()
	slices.SortFunc(gone, func(a, b *row) int { return cmp.Compare(a.Node, b.Node) })
	for _, e := range gone {
		if !e.reported {
			continue
		}
		g.lost.Add(1)
		g.s.log.Debug("gossip: lost", "node", e.Node, "from", e.From)
		if g.s.sink != nil {
			g.s.sink.Gone(e.Peer)
		}
	}
}

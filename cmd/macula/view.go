package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	cluster "github.com/macula-io/cluster"
)

// The cluster view: every `macula run` tells its connected peers which
// links it has, over the mesh, so that any node can show every link of the
// whole cluster as each node sees it (the page at /, the JSON at /cluster).
//
// The message is one JSON object (linkReport) with "t": "macula.links"
// and a version "v"; a receiver ignores any other mesh message, fields it
// does not know, and reports whose "node" is not the authenticated sender.
// It is bounded: at most maxReportLinks links per report, maxReportBytes
// per message, maxReporters remembered senders, and one report accepted
// per sender every minReportGap; a node sends one every reportInterval and
// at most one every minReportGap after a membership change.
const (
	reportType     = "macula.links"
	reportVersion  = 1
	reportInterval = 2 * time.Second
	minReportGap   = 250 * time.Millisecond
	maxReportLinks = 1024
	maxReportBytes = 128 << 10
	maxReporters   = 1024
	sendTimeout    = time.Second
)

type linkReport struct {
	T     string            `json:"t"`
	V     int               `json:"v"`
	Node  string            `json:"node"`
	Addr  string            `json:"addr"`
	Seq   uint64            `json:"seq"`
	Links []reportLink      `json:"links"`
	Tags  map[string]string `json:"tags,omitempty"`
}

type reportLink struct {
	Node string `json:"node"`
	Addr string `json:"addr,omitempty"`
}

type storedReport struct {
	linkReport
	at time.Time
}

// clusterView collects the peers' link reports and sends ours.
type clusterView struct {
	log     *slog.Logger
	tags    map[string]string
	kick    chan struct{}
	dropped atomic.Uint64 // reports refused (malformed, spoofed, too frequent, table full)

	mu      sync.Mutex
	reports map[string]storedReport
}

func newClusterView(log *slog.Logger, tags map[string]string) *clusterView {
	return &clusterView{log: log, tags: tags, kick: make(chan struct{}, 1), reports: map[string]storedReport{}}
}

// receive is the mesh's OnMessage: it keeps the sender's latest report.
func (v *clusterView) receive(from string, payload []byte) {
	if len(payload) == 0 || payload[0] != '{' {
		return // not ours
	}
	if len(payload) > maxReportBytes {
		v.dropped.Add(1)
		return
	}
	var r linkReport
	if err := json.Unmarshal(payload, &r); err != nil || r.T != reportType {
		if err == nil {
			return // somebody else's JSON message
		}
		v.dropped.Add(1)
		return
	}
	if r.V < 1 || r.Node != from || len(r.Links) > maxReportLinks || len(r.Tags) > maxReportLinks {
		v.dropped.Add(1)
		v.log.Debug("cluster view: report refused", "from", from, "node", r.Node, "v", r.V, "links", len(r.Links))
		return
	}
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	old, ok := v.reports[from]
	switch {
	case ok && now.Sub(old.at) < minReportGap/2:
		v.dropped.Add(1)
		return
	case !ok && len(v.reports) >= maxReporters:
		v.dropped.Add(1)
		return
	}
	v.reports[from] = storedReport{linkReport: r, at: now}
}

// event is fed every membership event: a peer that went down no longer
// speaks for its links; any change is worth a report to the others.
func (v *clusterView) event(e cluster.Event) {
	if e.Kind == cluster.NodeDown {
		v.mu.Lock()
		delete(v.reports, e.Node)
		v.mu.Unlock()
	}
	if e.Kind == cluster.NodeUp || e.Kind == cluster.NodeDown {
		select {
		case v.kick <- struct{}{}:
		default:
		}
	}
}

// run sends our report to every connected peer every reportInterval and
// soon after each membership change, until ctx is done.
func (v *clusterView) run(ctx context.Context, c *cluster.Cluster) {
	t := time.NewTicker(reportInterval)
	defer t.Stop()
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-v.kick:
		}
		seq++
		members := c.Connected()
		r := linkReport{T: reportType, V: reportVersion, Node: c.Self().Node, Addr: c.Self().Addr, Seq: seq, Tags: v.tags, Links: []reportLink{}}
		for _, m := range members {
			if len(r.Links) == maxReportLinks {
				break
			}
			r.Links = append(r.Links, reportLink{Node: m.Node, Addr: m.Addr})
		}
		b, _ := json.Marshal(r)
		for _, m := range members {
			sctx, cancel := context.WithTimeout(ctx, sendTimeout)
			if err := c.Send(sctx, m.Node, b); err != nil {
				v.log.Debug("cluster view: report not sent", "to", m.Node, "err", err)
			}
			cancel()
		}
		select { // rate limit: at most one report per minReportGap
		case <-ctx.Done():
			return
		case <-time.After(minReportGap):
		}
	}
}

// The JSON of /cluster and the data of the page.
type clusterJSON struct {
	Self   string           `json:"self"`
	Time   time.Time        `json:"time"`
	Nodes  []viewNode       `json:"nodes"`
	Links  []viewLink       `json:"links"`
	Events []map[string]any `json:"events"`
}

type viewNode struct {
	Node  string `json:"node"`
	Addr  string `json:"addr,omitempty"`
	State string `json:"state"` // self, up, down, left, unknown (only others see it)
	// Reason of a down node.
	Reason string `json:"reason,omitempty"`
	// Reporting: we have the node's link report (it runs macula and is
	// connected to us); ReportAge is its age in milliseconds.
	Reporting bool              `json:"reporting"`
	ReportAge int64             `json:"report_age_ms,omitempty"`
	Sees      int               `json:"sees"` // links the node reports (ours for self)
	Tags      map[string]string `json:"tags,omitempty"`
}

// viewLink is the pair A < B. AB says whether A reports a link to B:
// "yes", "no", or "unknown" (no report from A).
type viewLink struct {
	A     string `json:"a"`
	B     string `json:"b"`
	AB    string `json:"a_sees_b"`
	BA    string `json:"b_sees_a"`
	State string `json:"state"` // ok, asymmetric, missing, pending
}

// snapshot builds the whole-cluster view as this node sees it.
func (v *clusterView) snapshot(c *cluster.Cluster, recent *recentTable, hub *eventHub) clusterJSON {
	now := time.Now()
	return v.build(now, c.Self(), c.Connected(), c.Discovered(), recent.list(now), hub.backlog())
}

// build is snapshot on given state (tests call it directly).
func (v *clusterView) build(now time.Time, self cluster.Member, connected []cluster.Member, discovered []cluster.Peer, recent []recentMember, events []map[string]any) clusterJSON {
	out := clusterJSON{Self: self.Node, Time: now, Nodes: []viewNode{}, Links: []viewLink{}, Events: events}
	nodes := map[string]*viewNode{}
	sees := map[string]map[string]bool{} // reporter -> peers it sees
	add := func(n viewNode) *viewNode {
		if p, ok := nodes[n.Node]; ok {
			if p.Addr == "" {
				p.Addr = n.Addr
			}
			return p
		}
		nodes[n.Node] = &n
		return &n
	}
	me := add(viewNode{Node: self.Node, Addr: self.Addr, State: "self", Reporting: true, Tags: v.tags})
	sees[self.Node] = map[string]bool{}
	for _, m := range connected {
		add(viewNode{Node: m.Node, Addr: m.Addr, State: "up", Tags: m.Tags})
		sees[self.Node][m.Node] = true
	}
	me.Sees = len(sees[self.Node])
	for _, r := range recent {
		if _, ok := nodes[r.Node]; ok {
			continue
		}
		st := "down"
		if r.Reason == "left" {
			st = "left"
		}
		add(viewNode{Node: r.Node, State: st, Reason: r.Reason})
	}
	v.mu.Lock()
	for name, r := range v.reports {
		n := add(viewNode{Node: name, Addr: r.Addr, State: "unknown"})
		n.Reporting, n.ReportAge = true, now.Sub(r.at).Milliseconds()
		if n.Tags == nil { // the handshake's tags (authenticated) come first
			n.Tags = r.Tags
		}
		set := map[string]bool{}
		for _, l := range r.Links {
			set[l.Node] = true
			add(viewNode{Node: l.Node, Addr: l.Addr, State: "unknown"})
		}
		sees[name] = set
		n.Sees = len(set)
	}
	v.mu.Unlock()
	for _, p := range discovered { // the address of a node that went down
		if n, ok := nodes[p.Node]; ok && n.Addr == "" {
			n.Addr = p.Addr
		}
	}

	names := make([]string, 0, len(nodes))
	for n := range nodes {
		names = append(names, n)
	}
	slices.Sort(names)
	live := func(n string) bool { s := nodes[n].State; return s == "self" || s == "up" || s == "unknown" }
	say := func(a, b string) string {
		s, ok := sees[a]
		switch {
		case !ok:
			return "unknown"
		case s[b]:
			return "yes"
		}
		return "no"
	}
	for i, a := range names {
		out.Nodes = append(out.Nodes, *nodes[a])
		for _, b := range names[i+1:] {
			l := viewLink{A: a, B: b, AB: say(a, b), BA: say(b, a)}
			yes := l.AB == "yes" || l.BA == "yes"
			switch {
			case l.AB == "yes" && l.BA == "yes":
				l.State = "ok"
			case yes && (l.AB == "no" || l.BA == "no"):
				l.State = "asymmetric"
			case yes:
				l.State = "pending" // the other side has not reported
			case live(a) && live(b) && l.AB == "no" && l.BA == "no":
				l.State = "missing" // a full mesh wants every pair linked
			default:
				continue
			}
			out.Links = append(out.Links, l)
		}
	}
	return out
}

// eventHub fans membership events out to the /events streams and keeps the
// last hubBacklog of them for new subscribers and the page.
const (
	hubBacklog     = 50
	hubSubscribers = 16
	hubBuffer      = 64
)

type eventHub struct {
	mu   sync.Mutex
	last []map[string]any
	subs map[chan map[string]any]struct{}
}

func newEventHub() *eventHub { return &eventHub{subs: map[chan map[string]any]struct{}{}} }

// publish never blocks: a subscriber that is hubBuffer events behind loses
// the newest ones (its stream says so).
func (h *eventHub) publish(e cluster.Event) {
	m := eventJSON(e)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = append(h.last, m)
	if len(h.last) > hubBacklog {
		h.last = slices.Delete(h.last, 0, len(h.last)-hubBacklog)
	}
	for ch := range h.subs {
		select {
		case ch <- m:
		default:
		}
	}
}

func (h *eventHub) backlog() []map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]map[string]any{}, h.last...)
}

// subscribe returns a channel of the events after the backlog it returns,
// or ok false when hubSubscribers streams are open.
func (h *eventHub) subscribe() (ch chan map[string]any, backlog []map[string]any, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) >= hubSubscribers {
		return nil, nil, false
	}
	ch = make(chan map[string]any, hubBuffer)
	h.subs[ch] = struct{}{}
	return ch, append([]map[string]any{}, h.last...), true
}

func (h *eventHub) unsubscribe(ch chan map[string]any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, ch)
}

// eventJSON is an event as `macula run --json` prints it.
func eventJSON(e cluster.Event) map[string]any {
	m := eventFields(e)
	m["time"], m["event"] = e.Time.UTC().Format(time.RFC3339Nano), e.Kind.String()
	return m
}

func eventFields(e cluster.Event) map[string]any {
	f := map[string]any{"node": e.Node}
	switch e.Kind {
	case cluster.Discovered, cluster.Lost:
		f["addr"], f["source"] = e.Addr, e.Source
	case cluster.NodeUp:
		f["addr"], f["incarnation"] = e.Addr, strconv.FormatUint(e.Incarnation, 10)
		if len(e.Tags) > 0 {
			f["tags"] = e.Tags
		}
	case cluster.NodeDown:
		f["reason"] = e.Reason
	}
	return f
}

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

// The cluster view: a node whose page (or /cluster) is being read asks
// its connected peers, over the mesh, which links they have, so that it can
// show every link of the whole cluster as each node sees it. Nothing is
// sent while nobody looks.
//
// Two messages, each one JSON object with "t" and a version "v": a request
// ("t": "macula.links.request"), sent to every connected peer at most once
// per requestEvery and only while the view is read; and the answer, a
// linkReport ("t": "macula.links") to the requester only, at most one per
// replyGap per requester. A receiver ignores any other mesh message, fields
// it does not know, and reports whose "node" is not the authenticated
// sender. Bounds: maxReportLinks links per report, maxReportBytes per
// message, maxReporters remembered senders, a queue of requestQueue
// requests to answer (more are dropped and counted); a report older than
// reportStale counts as missing.
const (
	reportType     = "macula.links"
	requestType    = "macula.links.request"
	reportVersion  = 1
	requestEvery   = time.Second
	replyGap       = 500 * time.Millisecond
	minReportGap   = 250 * time.Millisecond
	reportStale    = 10 * time.Second
	maxReportLinks = 1024
	maxReportBytes = 128 << 10
	maxReporters   = 1024
	requestQueue   = 64
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

// clusterView collects the peers' link reports and answers their requests.
type clusterView struct {
	log      *slog.Logger
	tags     map[string]string
	demandCh chan struct{}
	requests chan string   // peers that asked for our report
	dropped  atomic.Uint64 // messages refused (malformed, spoofed, too frequent, table or queue full)

	mu         sync.Mutex
	reports    map[string]storedReport
	lastDemand time.Time
}

func newClusterView(log *slog.Logger, tags map[string]string) *clusterView {
	return &clusterView{log: log, tags: tags, demandCh: make(chan struct{}, 1),
		requests: make(chan string, requestQueue), reports: map[string]storedReport{}}
}

// receive is the mesh's OnMessage: it keeps the sender's latest report and
// queues its requests. It never blocks.
func (v *clusterView) receive(from string, payload []byte) {
	if len(payload) == 0 || payload[0] != '{' {
		return // not ours
	}
	if len(payload) > maxReportBytes {
		v.dropped.Add(1)
		return
	}
	var r linkReport
	if err := json.Unmarshal(payload, &r); err != nil {
		v.dropped.Add(1)
		return
	}
	switch r.T {
	case requestType:
		if r.V < 1 {
			v.dropped.Add(1)
			return
		}
		select {
		case v.requests <- from:
		default:
			v.dropped.Add(1)
		}
		return
	case reportType:
	default:
		return // somebody else's JSON message
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
// speaks for its links.
func (v *clusterView) event(e cluster.Event) {
	if e.Kind == cluster.NodeDown {
		v.mu.Lock()
		delete(v.reports, e.Node)
		v.mu.Unlock()
	}
}

// demand says the view is being read: the peers are asked for fresh
// reports, at most once per requestEvery.
func (v *clusterView) demand(now time.Time) {
	v.mu.Lock()
	due := now.Sub(v.lastDemand) >= requestEvery
	if due {
		v.lastDemand = now
	}
	v.mu.Unlock()
	if due {
		select {
		case v.demandCh <- struct{}{}:
		default:
		}
	}
}

// run sends the requests demand asks for and answers the peers' requests,
// until ctx is done.
func (v *clusterView) run(ctx context.Context, c *cluster.Cluster) {
	var seq uint64
	replied := map[string]time.Time{}
	send := func(to string, b []byte) {
		sctx, cancel := context.WithTimeout(ctx, sendTimeout)
		defer cancel()
		if err := c.Send(sctx, to, b); err != nil {
			v.log.Debug("cluster view: not sent", "to", to, "err", err)
		}
	}
	request, _ := json.Marshal(linkReport{T: requestType, V: reportVersion, Node: c.Self().Node})
	for {
		select {
		case <-ctx.Done():
			return
		case <-v.demandCh:
			for _, m := range c.Connected() {
				send(m.Node, request)
			}
		case from := <-v.requests:
			now := time.Now()
			if now.Sub(replied[from]) < replyGap {
				v.dropped.Add(1)
				continue
			}
			if len(replied) >= maxReporters {
				clear(replied)
			}
			replied[from] = now
			seq++
			r := linkReport{T: reportType, V: reportVersion, Node: c.Self().Node, Addr: c.Self().Addr, Seq: seq, Tags: v.tags, Links: []reportLink{}}
			for _, m := range c.Connected() {
				if len(r.Links) == maxReportLinks {
					break
				}
				r.Links = append(r.Links, reportLink{Node: m.Node, Addr: m.Addr})
			}
			b, _ := json.Marshal(r)
			send(from, b)
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
	v.demand(now)
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
		add(viewNode{Node: r.Node, Addr: r.Addr, State: st, Reason: r.Reason})
	}
	v.mu.Lock()
	for name, r := range v.reports {
		if now.Sub(r.at) > reportStale {
			continue // counts as missing: asked again
		}
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
	if e.Protocol != "" {
		f["protocol"] = e.Protocol
	}
	return f
}

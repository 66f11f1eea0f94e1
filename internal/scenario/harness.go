//go:build linux

package scenario

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/macula-io/cluster/internal/netlab"
)

// harness is one scenario run: its lab, its nodes, its result.
type harness struct {
	cfg   Config
	res   *Result
	name  string
	lab   *netlab.Lab
	nodes []*node
}

// node is one cluster member: a name on a host, and the processes that ran
// it (a restart appends one).
type node struct {
	name   string
	host   *netlab.Host
	args   []string
	procs  []*netlab.Proc
	starts []time.Time // when each proc was started (just before exec)
}

func (n *node) proc() *netlab.Proc { return n.procs[len(n.procs)-1] }

func (n *node) String() string { return n.name }

func (h *harness) logf(format string, args ...any) {
	if h.cfg.Logf != nil {
		h.cfg.Logf("%s/%d: "+format, append([]any{h.name, h.cfg.Hosts}, args...)...)
	}
}

// newLab makes the run's lab with n hosts.
func (h *harness) newLab(n int, impair bool) error {
	l, err := netlab.NewLab(netlab.Options{Hosts: n, Name: h.name, Impair: impair})
	if err != nil {
		return err
	}
	h.lab = l
	return nil
}

func (h *harness) close() {
	if h.lab != nil {
		if err := h.lab.Close(); err != nil {
			h.res.note("lab close: %v", err)
		}
	}
}

// nodeName is the name of the node on lab host i.
func nodeName(host *netlab.Host) string {
	return "n" + strconv.Itoa(host.Index) + "@" + host.IP.String()
}

// defineNode prepares (does not start) a node on host with the scenario's
// flags, then extra flags (later flags win in package flag).
func (h *harness) defineNode(host *netlab.Host, name string, port int, extra ...string) *node {
	if name == "" {
		name = nodeName(host)
	}
	if port == 0 {
		port = MeshPort
	}
	args := []string{"run", "--json", "--interface", host.Iface,
		"--listen", host.IP.String() + ":" + strconv.Itoa(port),
		"--name", name,
		"--secret", h.cfg.Secret, "--cookie", h.cfg.Cookie,
		"--link-timeout", h.cfg.LinkTimeout.String(), "--interval", h.cfg.Interval.String(),
		"--log-level", cmp.Or(h.cfg.LogLevel, "info"),
	}
	n := &node{name: name, host: host, args: append(args, extra...)}
	h.nodes = append(h.nodes, n)
	return n
}

// start starts (or restarts) n's process and returns the time taken just
// before the exec.
func (h *harness) start(ctx context.Context, n *node) (time.Time, error) {
	t := time.Now()
	p, err := n.host.Start(ctx, h.cfg.Env, h.cfg.Bin, n.args...)
	if err != nil {
		return t, fmt.Errorf("start %s: %w", n.name, err)
	}
	n.procs = append(n.procs, p)
	n.starts = append(n.starts, t)
	return t, nil
}

// startAll starts nodes one after the other, as fast as possible, and
// returns the time of the last start.
func (h *harness) startAll(ctx context.Context, nodes []*node) (time.Time, error) {
	var last time.Time
	for _, n := range nodes {
		t, err := h.start(ctx, n)
		if err != nil {
			return last, err
		}
		last = t
	}
	return last, nil
}

// formCluster makes a lab of labHosts hosts and forms the cluster on its
// first cfg.Hosts hosts (see form).
func (h *harness) formCluster(ctx context.Context, labHosts int) ([]*node, time.Time, []time.Time, error) {
	if err := h.newLab(labHosts, false); err != nil {
		return nil, time.Time{}, nil, err
	}
	return h.form(ctx, nil)
}

// form starts a node on each of the lab's first cfg.Hosts hosts (with the
// extra flags of extra(i) when extra is not nil) and waits for their full
// mesh. It returns the nodes, the time of the last start and when each
// node saw its full mesh.
func (h *harness) form(ctx context.Context, extra func(i int) []string) ([]*node, time.Time, []time.Time, error) {
	var nodes []*node
	for i, host := range h.lab.Hosts[:h.cfg.Hosts] {
		var x []string
		if extra != nil {
			x = extra(i)
		}
		nodes = append(nodes, h.defineNode(host, "", 0, x...))
	}
	last, err := h.startAll(ctx, nodes)
	if err != nil {
		return nil, last, nil, err
	}
	// Every frame of an Impair lab passes through userspace forwarders,
	// impaired or not. Through them the formation of 100 hosts on a
	// slow 2-core machine took 17-59 s, and twice ran past the 30 s
	// Margin (2026-11-29): the loss scenarios measure false nodedowns,
	// not formation (the formation scenario, on a kernel-bridged lab,
	// does), so their wait is doubled.
	wait := h.cfg.Margin
	if h.lab.Impairable() {
		wait *= 2
	}
	full, err := h.waitMesh(ctx, nodes, nodes, wait)
	if err == nil {
		h.logf("formed: %d nodes, last %v after the last start", len(nodes), maxDur(latencies(last, full)).Round(time.Millisecond))
	}
	return nodes, last, full, err
}

// event is one membership line of a process.
type event struct {
	At     time.Time
	Kind   string // ready, discovered, lost, nodeup, nodedown
	Node   string
	Addr   string
	Reason string
	Inc    string
}

func toEvent(l netlab.Line) (event, bool) {
	if l.Fields == nil {
		return event{}, false
	}
	e := event{At: l.At, Kind: l.Event(), Node: l.Node(), Addr: l.Str("addr"), Reason: l.Str("reason"), Inc: l.Str("incarnation")}
	return e, e.Kind != ""
}

func events(p *netlab.Proc) []event {
	var out []event
	for _, l := range p.Events() {
		if e, ok := toEvent(l); ok {
			out = append(out, e)
		}
	}
	return out
}

// view is a process's membership as replayed from its lines.
type view struct {
	ready  time.Time
	up     map[string]string // node -> incarnation
	disc   map[string]bool
	events []event
}

func newView() *view { return &view{up: map[string]string{}, disc: map[string]bool{}} }

func (v *view) apply(e event) {
	v.events = append(v.events, e)
	switch e.Kind {
	case "ready":
		v.ready = e.At
	case "discovered":
		v.disc[e.Node] = true
	case "lost":
		delete(v.disc, e.Node)
	case "nodeup":
		v.up[e.Node] = e.Inc
	case "nodedown":
		delete(v.up, e.Node)
	}
}

// hasAllUp reports whether every name (other than self) is up.
func (v *view) hasAllUp(self string, names []string) bool {
	for _, n := range names {
		if n == self {
			continue
		}
		if _, ok := v.up[n]; !ok {
			return false
		}
	}
	return true
}

// waitView waits until pred holds for p's view and returns the time of the
// line that made it hold.
func waitView(ctx context.Context, p *netlab.Proc, pred func(v *view) bool) (time.Time, error) {
	v := newView()
	l, err := p.WaitFor(ctx, func(l netlab.Line) bool {
		e, ok := toEvent(l)
		if !ok {
			return false
		}
		v.apply(e)
		return pred(v)
	})
	return l.At, err
}

// waitAll runs waitView for every proc at once, each with its own
// predicate, bounded by d; it returns the times (zero where it failed) and
// the joined errors.
func waitAll(ctx context.Context, d time.Duration, procs []*netlab.Proc, pred func(i int) func(*view) bool) ([]time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	times := make([]time.Time, len(procs))
	errs := make([]error, len(procs))
	var wg sync.WaitGroup
	for i, p := range procs {
		wg.Go(func() {
			times[i], errs[i] = waitView(ctx, p, pred(i))
		})
	}
	wg.Wait()
	return times, errors.Join(errs...)
}

func procsOf(nodes []*node) []*netlab.Proc {
	var out []*netlab.Proc
	for _, n := range nodes {
		out = append(out, n.proc())
	}
	return out
}

func namesOf(nodes []*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.name)
	}
	return out
}

// waitMesh waits, bounded by d, until every observer has nodeup for every
// node of members (but itself); it returns when each observer got there.
// Observers that did not get there are violations naming what they lack.
func (h *harness) waitMesh(ctx context.Context, observers, members []*node, d time.Duration) ([]time.Time, error) {
	return h.waitMeshAfter(ctx, observers, members, time.Time{}, d)
}

// waitMeshAfter is waitMesh counting only states reached after t0.
func (h *harness) waitMeshAfter(ctx context.Context, observers, members []*node, t0 time.Time, d time.Duration) ([]time.Time, error) {
	names := namesOf(members)
	views := make([]*view, len(observers))
	times, err := waitAll(ctx, d, procsOf(observers), func(i int) func(*view) bool {
		self := observers[i].name
		return func(v *view) bool {
			views[i] = v
			return v.events[len(v.events)-1].At.After(t0) && v.hasAllUp(self, names)
		}
	})
	if err == nil {
		return times, nil
	}
	for i, o := range observers {
		if !times[i].IsZero() {
			continue
		}
		var missing []string
		for _, n := range names {
			if n == o.name {
				continue
			}
			if views[i] == nil {
				missing = append(missing, n)
			} else if _, ok := views[i].up[n]; !ok {
				missing = append(missing, n)
			}
		}
		h.res.violate("%s: no full mesh within %v: no link to %s", o.name, d, strings.Join(missing, ", "))
	}
	return times, fmt.Errorf("full mesh of %d nodes not reached within %v", len(members), d)
}

// checkSequences adds a violation for every nodeup of a peer already up
// and every nodedown of a peer not up, in every process of nodes.
func (h *harness) checkSequences(nodes []*node) {
	for _, n := range nodes {
		for _, p := range n.procs {
			up := map[string]string{}
			for _, e := range events(p) {
				switch e.Kind {
				case "nodeup":
					if inc, ok := up[e.Node]; ok {
						h.res.violate("%s (pid %d): duplicate nodeup for %s at %s (incarnation %s, already up with %s)",
							n.name, p.Pid(), e.Node, stamp(e.At), e.Inc, inc)
					}
					up[e.Node] = e.Inc
				case "nodedown":
					if _, ok := up[e.Node]; !ok {
						h.res.violate("%s (pid %d): nodedown for %s (%s) at %s without nodeup", n.name, p.Pid(), e.Node, e.Reason, stamp(e.At))
					}
					delete(up, e.Node)
				}
			}
		}
	}
}

// eventsBetween returns the events of kind (any when "") in p after from
// and not after to (zero to = no end).
func eventsBetween(p *netlab.Proc, kind string, from, to time.Time) []event {
	var out []event
	for _, e := range events(p) {
		if (kind == "" || e.Kind == kind) && e.At.After(from) && (to.IsZero() || !e.At.After(to)) {
			out = append(out, e)
		}
	}
	return out
}

// checkNoDown adds a violation for each nodedown in [from, to] seen by one
// of nodes for one of peers (all when peers is nil), and returns how many.
func (h *harness) checkNoDown(nodes []*node, peers []string, from, to time.Time, what string) int {
	count := 0
	for _, n := range nodes {
		for _, e := range eventsBetween(n.proc(), "nodedown", from, to) {
			if peers != nil && !slices.Contains(peers, e.Node) {
				continue
			}
			count++
			h.res.violate("%s: %s: %s reported %s down (%s) at %s", h.name, what, n.name, e.Node, e.Reason, stamp(e.At))
		}
	}
	return count
}

// dump returns the last lines and stderr of every process of the run.
func (h *harness) dump() string {
	var b strings.Builder
	for _, n := range h.nodes {
		for _, p := range n.procs {
			lines := p.Events()
			if len(lines) > 25 {
				lines = lines[len(lines)-25:]
			}
			fmt.Fprintf(&b, "--- %s %s (exit %d), last %d lines:\n", n.name, p, p.ExitCode(), len(lines))
			for _, l := range lines {
				fmt.Fprintf(&b, "  %s %s\n", stamp(l.At), l.Raw)
			}
			se := strings.TrimSpace(p.Stderr())
			if len(se) > 3000 {
				se = "..." + se[len(se)-3000:]
			}
			fmt.Fprintf(&b, "  stderr:\n%s\n", indent(se))
		}
	}
	return b.String()
}

func indent(s string) string {
	if s == "" {
		return "    (empty)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

func stamp(t time.Time) string { return t.Format("15:04:05.000") }

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// settle is how long a formed mesh is left alone before a fault, so that
// every node is past its startup heartbeats.
func (h *harness) settle() time.Duration { return max(2*h.cfg.Interval, 500*time.Millisecond) }

// latencies returns, for each time in ts, ts[i]-t0.
func latencies(t0 time.Time, ts []time.Time) []time.Duration {
	var out []time.Duration
	for _, t := range ts {
		if !t.IsZero() {
			out = append(out, t.Sub(t0))
		}
	}
	return out
}

// procStatus reads a field ("VmRSS", "VmHWM") of /proc/PID/status in bytes.
func procStatus(pid int, field string) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status %s: %w", pid, field, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// taskCPU is the CPU time process pid ran so far, to the nanosecond: the
// sum of the first field of /proc/PID/task/*/schedstat (every thread;
// /proc/PID/stat counts 10 ms ticks).
func taskCPU(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s/%s/schedstat: %w", dir, e.Name(), err)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

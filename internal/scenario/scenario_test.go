//go:build linux

package scenario

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/macula-io/cluster/internal/netlab"
)

// ciConfig is the CI size: a few hosts, short durations, 1s link timeout.
func ciConfig(t *testing.T, hosts int) Config {
	return Config{
		Bin:         maculaBin(t),
		Hosts:       hosts,
		LinkTimeout: time.Second,
		Interval:    300 * time.Millisecond,
		Short:       true,
		Logf:        t.Logf,
	}
}

// run runs a scenario and fails the test for every violation or error.
// Speed is logged, never asserted.
func run(t *testing.T, name string, cfg Config) *Result {
	t.Helper()
	netlab.Require(t)
	s, ok := Lookup(name)
	if !ok {
		t.Fatalf("no scenario %q", name)
	}
	r, err := s.Run(t.Context(), cfg)
	for _, m := range r.Measures {
		t.Logf("%-34s %12.2f %-5s %s", m.Key, m.Value, m.Unit, m.Label)
	}
	for _, n := range r.Notes {
		t.Logf("note: %s", n)
	}
	if err != nil {
		t.Errorf("%s: %v", name, err)
	}
	for _, v := range r.Violations {
		t.Errorf("violation: %s", v)
	}
	if !r.OK() {
		t.Logf("processes:\n%s", r.Logs)
	}
	t.Logf("%s with %d hosts: %s in %.1fs", name, r.Hosts, r.Outcome, r.ElapsedMS/1000)
	return r
}

func TestFormation(t *testing.T) {
	r := run(t, "formation", ciConfig(t, 6))
	if _, ok := r.Get("mesh_max_ms"); !ok && r.OK() {
		t.Error("no mesh_max_ms measure")
	}
	if _, ok := r.Get("cpu_mean_pct"); !ok && r.OK() {
		t.Error("no steady-state measure")
	}
}

func TestLateJoin(t *testing.T) {
	r := run(t, "latejoin", ciConfig(t, 4))
	if r.OK() && (r.Value("join_in_max_ms") <= 0 || r.Value("join_out_ms") <= 0) {
		t.Errorf("late join latencies missing or not positive: %v", r.Measures)
	}
}

// TestCrash is also the mesh test "a killed process is reported closed
// quickly": 2 s is far above what it takes, far below a link timeout of
// several seconds would be.
func TestCrash(t *testing.T) {
	cfg := ciConfig(t, 4)
	cfg.LinkTimeout = 5 * time.Second // so that "closed" cannot come from a timeout
	r := run(t, "crash", cfg)
	if m := r.Value("crash_detect_max_ms"); m > 2000 {
		t.Errorf("a killed process took %.0f ms to be reported closed, want < 2000 ms", m)
	}
}

// TestSilent is also the mesh test "a cut host is reported timeout within
// the link timeout plus a margin" (the runner makes a violation of a
// detection later than link timeout + max(2s, Margin/4)).
func TestSilent(t *testing.T) {
	r := run(t, "silent", ciConfig(t, 5))
	if r.OK() && r.Value("silent_collateral") != 0 {
		t.Errorf("collateral drops: %v", r.Value("silent_collateral"))
	}
}

func TestPartition(t *testing.T) {
	run(t, "partition", ciConfig(t, 6))
}

// TestLoss: 20% loss with 50 ms jitter on every host. The strict "no false
// nodedown" goal is not met by the mesh (about 0.15 false link drops per
// link-minute at a 5 s link timeout; see the README's performance section),
// so asserting it would make CI fail at random. This test asserts what the
// product does guarantee under loss: gossip expires no live peer, every link
// that drops comes back (the mesh is whole at the end), and every peer's
// events stay exact (nodeup/nodedown alternate). `macula bench` keeps the
// strict invariant and reports the count.
func TestLoss(t *testing.T) {
	cfg := ciConfig(t, 4)
	cfg.LossTolerateDowns = true
	r := run(t, "loss", cfg)
	t.Logf("false nodedowns under loss (tolerated here, reported by the bench): %v", r.Value("loss_false_nodedowns"))
}

func TestChurn(t *testing.T) {
	r := run(t, "churn", ciConfig(t, 4))
	if r.OK() && r.Value("churn_exact") != r.Value("churn_observations") {
		t.Errorf("churn: %v of %v observations exact", r.Value("churn_exact"), r.Value("churn_observations"))
	}
}

func TestSecurity(t *testing.T) {
	r := run(t, "security", ciConfig(t, 3))
	if r.OK() && r.Value("security_wrong_cookie_discovered_by") != 3 {
		// Not an invariant of the product, but the scenario is meaningless
		// if the wrong-cookie node was never even discovered.
		t.Errorf("the wrong-cookie node was discovered by %v of 3 nodes", r.Value("security_wrong_cookie_discovered_by"))
	}
}

func TestFlood(t *testing.T) {
	r := run(t, "flood", ciConfig(t, 3))
	if r.OK() && r.Value("flood_rejected_at_target") <= 0 {
		t.Errorf("the target rejected no packet: the flood did not reach it")
	}
	// The frames are addressed to the target's MAC: the bridge gives them
	// to the target's port only.
	if sent, other := r.Value("flood_sent"), r.Value("flood_rx_other_pkts"); !(other < sent/10) {
		t.Errorf("another host received %v packets during a flood of %v at the target", other, sent)
	}
}

// TestGossip is the namespace test of package gossip: three hosts on the
// bridge (multicast crossing veths), two nodes per host sharing the gossip
// port (each discovers every other node, including its neighbour on the
// same host), a fourth host with a wrong secret (never discovered, discovers
// nobody), then host 2 cut off: its two nodes expire ("lost") at every
// other node, and their links time out.
func TestGossip(t *testing.T) {
	netlab.Require(t)
	cfg := ciConfig(t, 3).withDefaults()
	h := &harness{cfg: cfg, res: &Result{}, name: "gossip"}
	defer h.close()
	if err := h.newLab(4, false); err != nil {
		t.Fatal(err)
	}
	const expiry = 2 * time.Second
	var good []*node
	for _, host := range h.lab.Hosts[:3] {
		for k, port := range []int{9100, 9101} {
			name := fmt.Sprintf("%c%d@%s", 'a'+k, host.Index, host.IP)
			good = append(good, h.defineNode(host, name, port, "--expiry", expiry.String()))
		}
	}
	bad := h.defineNode(h.lab.Hosts[3], "", 0, "--secret", "wrong-secret", "--expiry", expiry.String())
	ctx := t.Context()
	if _, err := h.startAll(ctx, append(slices.Clone(good), bad)); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("processes:\n%s", h.dump())
		}
	}()
	names := namesOf(good)
	_, err := waitAll(ctx, cfg.Margin, procsOf(good), func(i int) func(*view) bool {
		return func(v *view) bool {
			for _, n := range names {
				if n == good[i].name {
					continue
				}
				if _, up := v.up[n]; !up || !v.disc[n] {
					return false
				}
			}
			return true
		}
	})
	if err != nil {
		t.Fatalf("not every node discovered and connected every other one: %v", err)
	}
	if err := sleep(ctx, 4*cfg.Interval); err != nil {
		t.Fatal(err)
	}
	for _, n := range good {
		for _, e := range events(n.proc()) {
			if e.Node == bad.name {
				t.Errorf("%s: %s of %s, which has a wrong secret", n.name, e.Kind, e.Node)
			}
		}
	}
	for _, e := range events(bad.proc()) {
		if e.Kind != "ready" {
			t.Errorf("wrong-secret node %s: %s %s", bad.name, e.Kind, e.Node)
		}
	}

	// Cut host 2: their links time out at the others, and then they expire
	// from discovery (a linked peer does not expire while linked: its
	// heartbeats are quiet; its expiry counts from its nodedown).
	cut := good[4:]
	observers := good[:4]
	cutNames := namesOf(cut)
	t0 := time.Now()
	if err := h.lab.Hosts[2].Cut(); err != nil {
		t.Fatal(err)
	}
	type seen struct{ lost, down map[string]event }
	got := make([]seen, len(observers))
	_, err = waitAll(ctx, cfg.detect()+expiry+cfg.Margin, procsOf(observers), func(i int) func(*view) bool {
		got[i] = seen{map[string]event{}, map[string]event{}}
		return func(v *view) bool {
			e := v.events[len(v.events)-1]
			if e.At.After(t0) && slices.Contains(cutNames, e.Node) {
				switch e.Kind {
				case "lost":
					got[i].lost[e.Node] = e
				case "nodedown":
					got[i].down[e.Node] = e
				}
			}
			return len(got[i].lost) == len(cutNames) && len(got[i].down) == len(cutNames)
		}
	})
	if err != nil {
		t.Errorf("after the cut: %v", err)
	}
	slack := max(2*time.Second, cfg.Margin/4)
	for i, o := range observers {
		for _, n := range cutNames {
			d, ok := got[i].down[n]
			switch {
			case !ok:
				t.Errorf("%s: no nodedown for %s after the cut", o.name, n)
				continue
			case d.Reason != "timeout":
				t.Errorf("%s: nodedown for %s with reason %q, want timeout", o.name, n, d.Reason)
			case d.At.Sub(t0) > cfg.detect()+slack:
				t.Errorf("%s: nodedown for %s %v after the cut, want within the detector's bound %v + %v", o.name, n, d.At.Sub(t0), cfg.detect(), slack)
			}
			l, ok := got[i].lost[n]
			switch {
			case !ok:
				t.Errorf("%s: no lost for %s after the cut", o.name, n)
			case l.At.Before(d.At):
				t.Errorf("%s: lost for %s at %v, before its nodedown at %v (a linked peer expired)", o.name, n, l.At.Sub(t0), d.At.Sub(t0))
			case l.At.Sub(d.At) > expiry+slack:
				t.Errorf("%s: lost for %s %v after its nodedown, want within expiry %v + %v", o.name, n, l.At.Sub(d.At), expiry, slack)
			default:
				t.Logf("%s: nodedown %s after %v, lost %v after that", o.name, n, d.At.Sub(t0).Round(time.Millisecond), l.At.Sub(d.At).Round(time.Millisecond))
			}
		}
	}
	// Nothing else happened between the observers.
	for _, o := range observers {
		for _, e := range eventsBetween(o.proc(), "", t0, time.Time{}) {
			if !slices.Contains(cutNames, e.Node) {
				t.Errorf("%s: collateral %s %s (%s)", o.name, e.Kind, e.Node, e.Reason)
			}
		}
	}
	h.checkSequences(good)
	for _, v := range h.res.Violations {
		t.Error(v)
	}
}

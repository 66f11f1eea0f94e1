package swim

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// A deterministic discrete-event simulation: a virtual clock, an event
// queue, and an in-memory lossy network. Addresses are node names.

type event struct {
	at  time.Time
	seq int
	fn  func()
}

type eventQ []*event

func (q eventQ) Len() int { return len(q) }
func (q eventQ) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q eventQ) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQ) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQ) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type seen struct {
	at    time.Duration // since the sim's start
	by    string
	about string
	state State
}

type simNode struct {
	name    string
	d       *Detector
	crashed bool
	paused  time.Time // no processing before this
	timerAt time.Time // the tick currently scheduled
	delayIn time.Duration
}

type sim struct {
	t       *testing.T
	start   time.Time
	now     time.Time
	q       eventQ
	seq     int
	rng     *rand.Rand
	nodes   map[string]*simNode
	names   []string
	loss    float64       // per packet
	delay   time.Duration // base one-way delay
	jitter  time.Duration // uniform extra delay
	blocked map[[2]string]bool
	log     []seen
	sent    int
	trace   func(from, to string, pkt []byte)
	recv    func(to, from string, pkt []byte)
}

func newSim(t *testing.T, n int, seed uint64, tune func(*Config)) *sim {
	s := &sim{t: t, start: time.Unix(1_000_000, 0), rng: rand.New(rand.NewPCG(seed, 1)),
		nodes: make(map[string]*simNode), blocked: make(map[[2]string]bool), delay: time.Millisecond}
	s.now = s.start
	for i := range n {
		s.names = append(s.names, fmt.Sprintf("n%02d", i))
	}
	for i, name := range s.names {
		cfg := Config{Name: name, ID: uint64(i + 1), Rand: rand.New(rand.NewPCG(seed, uint64(i+2)))}
		if tune != nil {
			tune(&cfg)
		}
		sn := &simNode{name: name}
		cfg.Send = func(to string, pkt []byte) { s.transmit(name, to, pkt) }
		sn.d = New(cfg)
		s.nodes[name] = sn
	}
	for i, name := range s.names {
		for j, other := range s.names {
			if i != j {
				s.nodes[name].d.Add(other, uint64(j+1), other)
			}
		}
	}
	for _, name := range s.names {
		s.arm(s.nodes[name])
	}
	return s
}

func (s *sim) at(t time.Time, fn func()) {
	s.seq++
	heap.Push(&s.q, &event{at: t, seq: s.seq, fn: fn})
}

func (s *sim) transmit(from, to string, pkt []byte) {
	s.sent++
	if s.trace != nil {
		s.trace(from, to, pkt)
	}
	if s.blocked[[2]string{from, to}] || s.rng.Float64() < s.loss {
		return
	}
	d := s.delay
	if s.jitter > 0 {
		d += time.Duration(s.rng.Int64N(int64(s.jitter)))
	}
	dst := s.nodes[to]
	if dst == nil {
		return
	}
	d += dst.delayIn
	buf := slices.Clone(pkt)
	s.at(s.now.Add(d), func() { s.deliver(dst, from, buf) })
}

func (s *sim) deliver(n *simNode, from string, pkt []byte) {
	if n.crashed {
		return
	}
	if n.paused.After(s.now) {
		s.at(n.paused, func() { s.deliver(n, from, pkt) })
		return
	}
	if s.recv != nil {
		s.recv(n.name, from, pkt)
	}
	ch, err := n.d.Handle(s.now, from, pkt)
	if err != nil {
		s.t.Fatalf("%s: handle from %s: %v", n.name, from, err)
	}
	s.record(n, ch)
	s.arm(n)
}

func (s *sim) record(n *simNode, ch []Change) {
	for _, c := range ch {
		s.log = append(s.log, seen{at: s.now.Sub(s.start), by: n.name, about: c.Name, state: c.State})
	}
}

// arm schedules n's next tick (superseding any earlier one).
func (s *sim) arm(n *simNode) {
	at := n.d.Next()
	if at.Before(s.now) {
		at = s.now
	}
	if at.Equal(n.timerAt) {
		return
	}
	n.timerAt = at
	s.at(at, func() { s.tick(n, at) })
}

func (s *sim) tick(n *simNode, at time.Time) {
	if n.crashed || !n.timerAt.Equal(at) {
		return
	}
	if n.paused.After(s.now) {
		// A paused process's timer fires when it resumes: late.
		n.timerAt = n.paused
		s.at(n.paused, func() { s.tick(n, n.paused) })
		return
	}
	n.timerAt = time.Time{}
	s.record(n, n.d.Tick(s.now))
	s.arm(n)
}

// run advances the clock by d.
func (s *sim) run(d time.Duration) {
	end := s.now.Add(d)
	for steps := 0; s.q.Len() > 0 && steps < 50_000_000; steps++ {
		if s.q[0].at.After(end) {
			break
		}
		e := heap.Pop(&s.q).(*event)
		s.now = e.at
		e.fn()
	}
	s.now = end
}

func (s *sim) deaths() []seen {
	var out []seen
	for _, e := range s.log {
		if e.state == Dead {
			out = append(out, e)
		}
	}
	return out
}

func (s *sim) count(st State) int {
	n := 0
	for _, e := range s.log {
		if e.state == st {
			n++
		}
	}
	return n
}

func (s *sim) sum(f func(Stats) uint64) uint64 {
	var n uint64
	for _, sn := range s.nodes {
		n += f(sn.d.Stats())
	}
	return n
}

// The detector's worst case for a crash: the member is probed within two
// passes (2N periods, doubled while suspect probes take every other
// period), one period to fail the probe, then the suspicion
// timeout without confirmations (max).
func crashBound(n int, c Config) time.Duration {
	minT := suspicionMin(n, c)
	return time.Duration(4*n+1)*c.ProbeInterval + time.Duration(c.SuspicionMaxMult)*minT + 2*DefaultProbeTimeout
}

func defaults() Config {
	return Config{ProbeInterval: DefaultProbeInterval, SuspicionMult: DefaultSuspicionMult,
		SuspicionMaxMult: DefaultSuspicionMaxMult}
}

func TestSteadyNoSuspicion(t *testing.T) {
	s := newSim(t, 10, 1, nil)
	s.run(5 * time.Second) // past the introductions (a ping to each new member)
	sent0 := s.sent
	s.run(60 * time.Second)
	s.sent -= sent0
	if len(s.log) != 0 {
		t.Fatalf("changes in a healthy cluster: %v", s.log)
	}
	// Every member is probed within 2N periods: each node probed each
	// other at least 60/(2*10) times... check the constant cost instead:
	// per node per period one ping + one ack, nothing else.
	perNodePerPeriod := float64(s.sent) / 10 / float64(60*time.Second/DefaultProbeInterval)
	if perNodePerPeriod > 2.05 {
		t.Fatalf("%.2f packets per period per node in steady state, want 2", perNodePerPeriod)
	}
	for _, sn := range s.nodes {
		if h := sn.d.Health(); h != 0 {
			t.Fatalf("%s health %d in a healthy cluster", sn.name, h)
		}
	}
}

func TestEveryMemberProbedWithinBound(t *testing.T) {
	const n = 8
	var probes []string
	d := New(Config{Name: "self", Send: func(to string, pkt []byte) {
		if p, _ := decode(pkt); p != nil && p.Type == typePing {
			probes = append(probes, to)
		}
	}, Rand: rand.New(rand.NewPCG(7, 7))})
	for i := range n {
		d.Add(fmt.Sprint("m", i), uint64(i+1), fmt.Sprint("m", i))
	}
	now := time.Unix(0, 0)
	for range 20 * n {
		d.Tick(now)
		// ack every probe at once
		if d.probe != nil {
			pkt := encode(&packet{Type: typeAck, Seq: d.probe.seq, From: d.probe.target})
			if _, err := d.Handle(now, d.probe.addr, pkt); err != nil {
				t.Fatal(err)
			}
		}
		now = d.Next()
	}
	last := map[string]int{}
	for i, to := range probes {
		if j, ok := last[to]; ok && i-j > 2*n {
			t.Fatalf("%s probed at %d and %d: gap > 2N", to, j, i)
		}
		last[to] = i
	}
	if len(last) != n {
		t.Fatalf("probed %d members, want %d", len(last), n)
	}
}

// lossySim is a simulation of n members losing each packet with
// probability loss, delayed 0-100 ms one way as in macula bench (50 ms
// jitter).
func lossySim(t *testing.T, n int, seed uint64, loss float64) *sim {
	s := newSim(t, n, seed, nil)
	s.loss = loss
	s.delay, s.jitter = 0, 100*time.Millisecond
	return s
}

func TestNoFalseDeadUnderLoss(t *testing.T) {
	for _, n := range []int{5, 10, 30, 100} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("n%d/seed%d", n, seed), func(t *testing.T) {
				t.Parallel() // each simulation is one goroutine: use the cores
				s := lossySim(t, n, seed+100, 0.2)
				d := 120 * time.Second
				if n >= 100 {
					d = 60 * time.Second // as the bench's loss row; 3x120 s took 30 s under -race
				}
				s.run(d)
				if d := s.deaths(); len(d) > 0 {
					t.Fatalf("false dead under 20%% loss: %v", d)
				}
				t.Logf("n=%d suspicions=%d refutes=%d indirect=%d packets/node/s=%.2f",
					n, s.count(Suspect), s.sum(func(st Stats) uint64 { return st.Refutes }),
					s.sum(func(st Stats) uint64 { return st.IndirectProbes }), float64(s.sent)/float64(n)/d.Seconds())
			})
		}
	}
}

// TestNoFalseDeadUnderHeavyLoss: twice the bench's loss, where a live
// member misses a few probes in a row now and then. A verdict needs
// deadFails of our own probes unanswered, verification rounds going through
// 2k relays. These runs are a sample: with 2 failures and k relays, these
// seeds declared 6 live members dead (15 in 32 seeds, against 1 with the
// rule), so the test allows one; if a change of the detector makes it
// fail, count the deaths over many more seeds before and after.
func TestNoFalseDeadUnderHeavyLoss(t *testing.T) {
	var mu sync.Mutex
	var deaths []seen
	t.Run("sims", func(t *testing.T) {
		for seed := range uint64(8) {
			t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
				t.Parallel()
				s := lossySim(t, 30, seed+1000, 0.4)
				s.run(120 * time.Second)
				mu.Lock()
				deaths = append(deaths, s.deaths()...)
				mu.Unlock()
			})
		}
	})
	if len(deaths) > 1 {
		t.Fatalf("%d false deaths in 8 runs of 120 s under 40%% loss (want at most 1): %v", len(deaths), deaths)
	}
}

func TestCrashDetected(t *testing.T) {
	for _, n := range []int{3, 10, 30, 100} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("n%d/seed%d", n, seed), func(t *testing.T) {
				s := newSim(t, n, seed+200, nil)
				s.loss = 0.05
				s.jitter = 10 * time.Millisecond
				s.run(10 * time.Second)
				victim := s.nodes["n00"]
				victim.crashed = true
				crashAt := s.now.Sub(s.start)
				bound := crashBound(n, defaults())
				s.run(bound + time.Second)
				var first, last time.Duration
				for _, name := range s.names[1:] {
					var at time.Duration
					for _, e := range s.deaths() {
						if e.by == name && e.about == "n00" {
							at = e.at - crashAt
							break
						}
					}
					if at == 0 {
						t.Fatalf("%s never declared the crashed n00 dead (bound %v)", name, bound)
					}
					if at > bound {
						t.Fatalf("%s declared n00 dead after %v, bound %v", name, at, bound)
					}
					if first == 0 || at < first {
						first = at
					}
					last = max(last, at)
				}
				for _, e := range s.deaths() {
					if e.about != "n00" {
						t.Fatalf("false dead: %+v", e)
					}
				}
				t.Logf("n=%d crash detected first after %v, everywhere after %v (bound %v)", n, first, last, bound)
			})
		}
	}
}

func TestRefutation(t *testing.T) {
	var sent [][]byte
	d := New(Config{Name: "a", ID: 1, Send: func(_ string, p []byte) { sent = append(sent, slices.Clone(p)) }})
	d.Add("b", 2, "b")
	now := time.Unix(0, 0)
	sus := encode(&packet{Type: typeAck, Seq: 1, From: node{"b", 2},
		Updates: []update{{Kind: KindSuspect, Node: node{"a", 1}, Inc: 0, From: "b"}}})
	if _, err := d.Handle(now, "b", sus); err != nil {
		t.Fatal(err)
	}
	if d.Incarnation() != 1 || d.Stats().Refutes != 1 || d.Health() != 1 {
		t.Fatalf("after suspicion: inc %d refutes %d health %d, want 1 1 1", d.Incarnation(), d.Stats().Refutes, d.Health())
	}
	// Suspicion of another process of our name, or of an older
	// incarnation, is ignored.
	old := encode(&packet{Type: typeAck, Seq: 1, From: node{"b", 2},
		Updates: []update{{Kind: KindSuspect, Node: node{"a", 9}, Inc: 5, From: "b"}, {Kind: KindDead, Node: node{"a", 1}, Inc: 0, From: "b"}}})
	if _, err := d.Handle(now, "b", old); err != nil {
		t.Fatal(err)
	}
	if d.Incarnation() != 1 {
		t.Fatalf("incarnation %d after stale news, want 1", d.Incarnation())
	}
	// The refutation rides on the next packet.
	d.Tick(now)
	p, err := decode(sent[len(sent)-1])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(p.Updates, func(u update) bool { return u.Kind == KindAlive && u.Node == (node{"a", 1}) && u.Inc == 1 }) {
		t.Fatalf("no alive(a,1) piggybacked: %+v", p.Updates)
	}
	// On the other side: b suspected by c's gossip, then refuted.
	d.Add("c", 3, "c")
	msg := func(us ...update) []byte {
		return encode(&packet{Type: typeNack, Seq: 0, From: node{"c", 3}, Updates: us})
	}
	ch, _ := d.Handle(now, "c", msg(update{Kind: KindSuspect, Node: node{"b", 2}, Inc: 0, From: "c"}))
	if len(ch) != 1 || ch[0].State != Suspect {
		t.Fatalf("changes %+v, want b suspect", ch)
	}
	ch, _ = d.Handle(now, "c", msg(update{Kind: KindAlive, Node: node{"b", 2}, Inc: 0}))
	if len(ch) != 0 {
		t.Fatalf("alive at the same incarnation refuted: %+v", ch)
	}
	ch, _ = d.Handle(now, "c", msg(update{Kind: KindAlive, Node: node{"b", 2}, Inc: 1}))
	if len(ch) != 1 || ch[0].State != Alive {
		t.Fatalf("changes %+v, want b alive", ch)
	}
}

func TestSuspicionTimeout(t *testing.T) {
	// 10 members incl. self: k = 2, min = 4*log10(11)*1s, max = 6*min.
	s := &suspicion{min: 4 * time.Second, max: 24 * time.Second, k: 2, accusers: map[string]struct{}{"x": {}}}
	if got := s.timeout(); got != 24*time.Second {
		t.Fatalf("no confirmations: %v, want max", got)
	}
	s.accusers["y"] = struct{}{}
	if got := s.timeout(); got <= 4*time.Second || got >= 24*time.Second {
		t.Fatalf("one confirmation: %v, want between", got)
	}
	s.accusers["z"] = struct{}{}
	if got := s.timeout(); got != 4*time.Second {
		t.Fatalf("k confirmations: %v, want min", got)
	}
	s.k = 0
	if got := s.timeout(); got != 4*time.Second {
		t.Fatalf("k=0: %v, want min", got)
	}
}

// A node paused (starved) for 2 s: nobody declares it dead, it refutes
// whatever suspicion it hears, and it does not accuse the others on resume.
func TestSlowNodeNoFalseDead(t *testing.T) {
	for seed := range uint64(5) {
		s := newSim(t, 10, seed+300, nil)
		s.loss = 0.05
		s.jitter = 20 * time.Millisecond
		slow := s.nodes["n03"]
		for i := range 10 {
			s.run(5*time.Second + time.Duration(i)*137*time.Millisecond)
			slow.paused = s.now.Add(2 * time.Second)
		}
		s.run(20 * time.Second)
		if d := s.deaths(); len(d) > 0 {
			t.Fatalf("seed %d: false dead with a node paused 2 s at a time: %v", seed, d)
		}
		if slow.d.Stats().LateTicks == 0 {
			t.Fatalf("seed %d: the paused node saw no late tick", seed)
		}
		t.Logf("seed %d: suspicions %d, refutes by the slow node %d, its late ticks %d",
			seed, s.count(Suspect), slow.d.Stats().Refutes, slow.d.Stats().LateTicks)
	}
}

// Lifeguard: a node that cannot hear anyone (its inbound is cut) raises its
// health score and stretches its period; a healthy cluster lowers it again.
func TestLocalHealthStretch(t *testing.T) {
	s := newSim(t, 6, 9, nil)
	s.run(5 * time.Second)
	iso := s.nodes["n05"]
	for _, name := range s.names {
		s.blocked[[2]string{name, "n05"}] = true
	}
	before := iso.d.Stats().ProbesSent
	s.run(30 * time.Second)
	if h := iso.d.Health(); h < 4 {
		t.Fatalf("isolated node health %d, want high", h)
	}
	sent := iso.d.Stats().ProbesSent - before
	if sent > 15 {
		t.Fatalf("isolated node started %d probes in 30 s: period not stretched", sent)
	}
	for _, name := range s.names {
		delete(s.blocked, [2]string{name, "n05"})
	}
	// n05 heard no ping, so it could not answer and the others declared
	// it dead, as it declared them. The owner (the mesh) re-adds members
	// when links come back; then acks lower the score again.
	for i, name := range s.names[:5] {
		iso.d.Add(name, uint64(i+1), name)
		s.nodes[name].d.Add("n05", 6, "n05")
	}
	s.run(60 * time.Second)
	if h := iso.d.Health(); h != 0 {
		t.Fatalf("health %d after healing, want 0", h)
	}
	t.Logf("isolated node: %d probes in 30 s (30 unstretched), deaths it declared %d", sent, len(s.deaths()))
}

// A node answering slowly (all its inbound delayed beyond the probe
// timeout) is probed indirectly and not declared dead.
func TestSlowLinkIndirect(t *testing.T) {
	s := newSim(t, 8, 11, nil)
	s.nodes["n02"].delayIn = 600 * time.Millisecond
	s.run(60 * time.Second)
	if d := s.deaths(); len(d) > 0 {
		t.Fatalf("false dead: %v", d)
	}
}

func TestPartitionBothSides(t *testing.T) {
	for _, n := range []int{6, 50, 100} {
		t.Run(fmt.Sprint(n), func(t *testing.T) { testPartition(t, n) })
	}
}

func testPartition(t *testing.T, n int) {
	s := newSim(t, n, 13, nil)
	s.run(5 * time.Second)
	half := n / 2
	side := func(name string) bool { return slices.Index(s.names, name) < half }
	for _, a := range s.names[:half] {
		for _, b := range s.names[half:] {
			s.blocked[[2]string{a, b}] = true
			s.blocked[[2]string{b, a}] = true
		}
	}
	// Relays across the cut never answer; those on our side do, so each
	// side's health rises only when all relays of a probe are across
	// (one probe in eight). Every node must report
	// the whole other side, and nobody on its own side, within a minute.
	var at time.Duration
	peak := 0.0 // the highest mean health over the nodes, sampled every second
	for at = 0; at < time.Minute; at += time.Second {
		s.run(time.Second)
		sum := 0
		for _, a := range s.names {
			sum += s.nodes[a].d.Health()
		}
		peak = max(peak, float64(sum)/float64(n))
		done := true
		for _, a := range s.names {
			for _, b := range s.names {
				if st, _ := s.nodes[a].d.State(b); a != b && side(a) != side(b) && st != Dead {
					done = false
				}
			}
		}
		if done {
			break
		}
	}
	for _, a := range s.names {
		for _, b := range s.names {
			if a == b {
				continue
			}
			st, _ := s.nodes[a].d.State(b)
			cross := side(a) != side(b)
			if cross && st != Dead || !cross && st != Alive {
				t.Fatalf("%s sees %s %v (cross=%v) %v after the partition", a, b, st, cross, at)
			}
		}
	}
	// Half the relays are across the cut: a probe fails with nacks from
	// the others, which is no sign of this node's own trouble. Counting
	// each missing nack (memberlist) raised every node's health (mean
	// 1.8-2.8 at its peak here, single nodes to 5-6 of the cap 7) and took
	// 13 / 18 s at 50 / 100 nodes. A node whose relays of a probe were all
	// across the cut still scores up to 3 at once, so one node may read
	// 3-5 at any moment: the mean over the nodes is the measure.
	health := 0
	for _, a := range s.names {
		health = max(health, s.nodes[a].d.Health())
	}
	if peak > 1 {
		t.Errorf("mean health up to %.2f during the partition (one node at %d at the end), want low", peak, health)
	}
	t.Logf("n=%d: every node reported the other side dead %v after the partition; mean health up to %.2f, one node at %d at the end", n, at+time.Second, peak, health)
}

// Gossip about a member not heard since it was added (a link that just
// came back after a partition) is older than the membership: ignored.
func TestStaleVerdictOfNewMemberIgnored(t *testing.T) {
	d := New(Config{Name: "a", ID: 1, Send: func(string, []byte) {}})
	d.Add("c", 3, "c")
	d.Add("b", 2, "b")
	now := time.Unix(0, 0)
	hint := encode(&packet{Type: typeGossip, From: node{"c", 3},
		Updates: []update{{Kind: KindDead, Node: node{"b", 2}, Inc: 0, From: "c"}, {Kind: KindSuspect, Node: node{"b", 2}, Inc: 0, From: "c"}}})
	if ch, err := d.Handle(now, "c", hint); err != nil || len(ch) != 0 {
		t.Fatalf("verdicts about an unheard new member: %+v %v, want ignored", ch, err)
	}
	// Once b is heard, news about it counts again.
	if _, err := d.Handle(now, "b", encode(&packet{Type: typeNack, From: node{"b", 2}})); err != nil {
		t.Fatal(err)
	}
	if ch, _ := d.Handle(now, "c", hint); len(ch) != 1 || ch[0].State != Suspect {
		t.Fatalf("after hearing b: %+v, want b suspect", ch)
	}
}

// Another member's dead verdict is a hint: this node verifies it with one
// round of its own (pings carrying the suspicion, and indirect probes), and
// an answer from the member keeps it alive here.
func TestDeadHintVerified(t *testing.T) {
	for _, answer := range []bool{true, false} {
		var sent []sentPkt
		d := New(Config{Name: "a", ID: 1, Send: func(to string, p []byte) { sent = append(sent, sentPkt{to, slices.Clone(p)}) }})
		d.Add("c", 3, "c")
		now := time.Unix(0, 0)
		d.Tick(now) // probes c: answer it, so no probe is in flight
		first, err := decode(sent[len(sent)-1].pkt)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Handle(now, "c", encode(&packet{Type: typeAck, Seq: first.Seq, From: node{"c", 3}})); err != nil {
			t.Fatal(err)
		}
		d.Add("b", 2, "b")
		// b was heard once, long ago (gossip about a member never heard
		// since it was added is ignored: it predates the membership).
		if _, err := d.Handle(now.Add(-10*time.Second), "b", encode(&packet{Type: typePing, Seq: 7, From: node{"b", 2}, Target: node{"a", 1}})); err != nil {
			t.Fatal(err)
		}
		now = now.Add(100 * time.Millisecond)
		sent = nil
		hint := encode(&packet{Type: typeGossip, From: node{"c", 3},
			Updates: []update{{Kind: KindDead, Node: node{"b", 2}, Inc: 0, From: "c"}}})
		ch, err := d.Handle(now, "c", hint)
		if err != nil {
			t.Fatal(err)
		}
		if len(ch) != 1 || ch[0].State != Suspect {
			t.Fatalf("after the hint: %+v, want b suspect (not dead)", ch)
		}
		now = now.Add(time.Millisecond)
		d.Tick(now) // the verification round
		var pings []*packet
		for _, s := range sent {
			p, err := decode(s.pkt)
			if err != nil {
				t.Fatal(err)
			}
			if s.to == "b" && p.Type == typePing {
				pings = append(pings, p)
			}
		}
		if len(pings) < 2 || !slices.ContainsFunc(pings[0].Updates, func(u update) bool { return u.Kind == KindSuspect && u.Node.Name == "b" }) {
			t.Fatalf("verification pings to b: %+v, want two carrying the suspicion", pings)
		}
		if answer {
			// b answers at its old incarnation (it has not refuted yet).
			ack := encode(&packet{Type: typeAck, Seq: pings[0].Seq, From: node{"b", 2}})
			if _, err := d.Handle(now.Add(10*time.Millisecond), "b", ack); err != nil {
				t.Fatal(err)
			}
		}
		// Nothing else from b: within 2 s (less than a suspicion timeout,
		// 2.4 s here) an unanswered round confirms the hint; an answer
		// keeps b alive that long at least.
		var deadAt time.Duration
		for i := range 200 {
			at := time.Duration(i) * 50 * time.Millisecond
			for _, c := range d.Tick(now.Add(at)) {
				if c.Name == "b" && c.State == Dead && deadAt == 0 {
					deadAt = at
				}
			}
		}
		switch {
		case answer && deadAt > 0 && deadAt < 2*time.Second:
			t.Fatalf("b answered the verification, declared dead %v later anyway", deadAt)
		case answer && deadAt == 0:
			t.Fatalf("b answered once, then nothing for 10 s: never declared dead")
		case !answer && (deadAt == 0 || deadAt > 2*time.Second):
			t.Fatalf("unanswered verification of a dead hint: dead after %v, want within 2 s", deadAt)
		}
	}
}

type sentPkt struct {
	to  string
	pkt []byte
}

// A stopped process handles the packets that waited in its socket before
// its overdue timer fires: that tick is still late (and a packet that
// arrives in time does not make the next tick look late).
func TestLateTickAfterHandle(t *testing.T) {
	d := New(Config{Name: "a", ID: 1, Send: func(string, []byte) {}})
	d.Add("b", 2, "b")
	t0 := time.Unix(0, 0)
	d.Tick(t0)
	ping := encode(&packet{Type: typePing, Seq: 9, From: node{"b", 2}, Target: node{"a", 1}})
	if _, err := d.Handle(t0.Add(10*time.Millisecond), "b", ping); err != nil {
		t.Fatal(err)
	}
	d.Tick(d.Next())
	if n := d.Stats().LateTicks; n != 0 {
		t.Fatalf("late ticks %d after a punctual tick", n)
	}
	stopped := d.Next().Add(3 * time.Second)
	if _, err := d.Handle(stopped, "b", ping); err != nil {
		t.Fatal(err)
	}
	d.Tick(stopped.Add(time.Millisecond))
	if n := d.Stats().LateTicks; n != 1 {
		t.Fatalf("late ticks %d after a 3 s stop, want 1", n)
	}
}

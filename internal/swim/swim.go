// Package swim is a SWIM failure detector with the Lifeguard extensions
// (Das, Gupta, Motivala 2002; Dadgar et al. 2018), in the line of
// hashicorp/memberlist. It is a state machine without I/O and without a
// clock: the owner feeds it packets (Handle) and the time (Tick at Next),
// and it sends through Config.Send. One goroutine (or one lock) must
// serialize all calls; nothing here blocks.
//
// Each protocol period the detector probes one member, taken from a
// shuffled round-robin list (re-shuffled after each pass; a new member is
// inserted at a random position), so every member is probed within two
// passes, at most 2N periods. A probe is a ping answered by an ack. With no
// ack within ProbeTimeout, it pings again and asks k = IndirectChecks other
// members (fewer when fewer exist) to probe the target (ping-req); each
// answers with the target's ack (even after its nack, until the period
// ends) or with a nack. With no ack by the end of the period the target
// becomes suspect. The suspicion is gossiped (piggybacked on every probe
// packet, each update sent at most RetransmitMult*ceil(log10(N+1)) times;
// news this node originates, its own new suspicion, confirmation or dead
// verdict, is also pushed at once to that many members), and the suspect
// refutes it with a higher incarnation (refutation counter). The
// suspicion's timeout is
//
//	min = max(SuspicionMult * log10(N+1), MinSuspicionPeriods) * ProbeInterval
//	max = SuspicionMaxMult * min
//	timeout(c) = max(min, max - (max-min) * log(c+1)/log(k+1)),  k = SuspicionMult-2 (0 if N-2 < k)
//
// where c counts independent confirmations (other accusers) and N is the
// number of live members including this node: memberlist's suspicion
// timer, with a floor. With k = 0 the timeout is min at once.
//
// Unlike memberlist, dead needs this node's own evidence (expire): when
// the timeout passes, the member is declared dead only if nothing was
// heard from it (a packet of its own, or an ack relayed for it) for a
// whole timeout, and deadFails (3) of our own probes of it went
// unanswered (full probes, or verification rounds sent then: two direct
// pings and 2k ping-reqs). Another member's dead verdict is a hint: one
// unanswered verification round here (two pings, k ping-reqs) confirms
// it. A refutation lost on its way to one node thus cannot make that node
// declare a live member dead.
//
// Local health (Lifeguard): a score 0..MaxHealth-1 rises when a probe of
// ours fails with no nack at all (by the number of relays asked, or by one
// when none was: a relay that answered in time shows that this node and
// its network work, and the relays that did not are likely cut off with
// the target; across a 50/50 partition, counting each of them as
// memberlist does raised every node's score to 5-6 and stretched its
// period as much), when we are suspected and refute, and when this
// node's own timers fire late (the process was starved); it falls by one
// per successful probe. The probe timeout and the period are multiplied by
// score+1. A tick that fires more than ProbeTimeout/2 late abandons the
// probe in flight without a verdict and postpones every suspicion deadline
// that passed by one period, so a node that was itself paused does not
// accuse the others of its own silence.
package swim

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// State is a member's liveness.
type State uint8

// Member states.
const (
	Alive State = iota
	Suspect
	Dead
)

func (s State) String() string {
	switch s {
	case Alive:
		return "alive"
	case Suspect:
		return "suspect"
	case Dead:
		return "dead"
	}
	return "unknown"
}

// Defaults: a LAN, tuned to declare a silent member dead about 3-4 s after
// it stopped answering (memberlist's DefaultLANConfig probes every 1 s with
// SuspicionMult 4: 5-7 s at 10-50 members).
const (
	DefaultProbeInterval    = 400 * time.Millisecond
	DefaultProbeTimeout     = 200 * time.Millisecond
	DefaultIndirectChecks   = 3
	DefaultSuspicionMult    = 3
	DefaultSuspicionMaxMult = 2
	// MinSuspicionPeriods: a suspicion lasts at least this many protocol
	// periods whatever N, so a process stopped for 2 s (a long GC pause,
	// SIGSTOP, a VM migration) at the default period is not declared dead.
	MinSuspicionPeriods   = 5
	DefaultRetransmitMult = 4
	DefaultMaxHealth      = 8
	maxRelays             = 256  // ping-reqs being served at once
	maxTold               = 256  // accusers remembered (tellAccuser)
	maxSuspicionStretch   = 2    // local health stretches a suspicion at most this much
	maxBroadcasts         = 1024 // queued gossip updates
	maxMembers            = 1 << 16
	gossipNodes           = 3  // members per gossip round (memberlist's GossipNodes)
	envelopeReserve       = 96 // bytes left for the owner's envelope (MAC, nonce)
)

// Config configures a Detector. Zero values mean the defaults.
type Config struct {
	Name string // this node's name (required)
	ID   uint64 // this process's identity: a restarted process has another
	// ProbeInterval is the protocol period. 0 = 500 ms.
	ProbeInterval time.Duration
	// ProbeTimeout is the wait for a direct ack before indirect probes;
	// a relay waits half of it before it sends a nack. 0 = 250 ms; at
	// most 2/3 of ProbeInterval. A second direct ping goes out with the
	// indirect probes.
	ProbeTimeout time.Duration
	// IndirectChecks is k, the relays asked after a missed ack. 0 = 3;
	// negative = none.
	IndirectChecks int
	// SuspicionMult scales the suspicion timeout (see the package doc).
	// 0 = 3.
	SuspicionMult int
	// SuspicionMaxMult: the timeout without confirmations is this times
	// the minimum. 0 = 2.
	SuspicionMaxMult int
	// RetransmitMult: each gossip update rides on at most
	// RetransmitMult*ceil(log10(N+1)) packets. 0 = 4.
	RetransmitMult int
	// MaxHealth bounds the local-health multiplier. 0 = 8.
	MaxHealth int
	// OnlyMembers: answer pings only from members (the owner's membership
	// is symmetric, as mesh links are), so a node that dropped us does not
	// vouch for itself to us.
	OnlyMembers bool
	// Send transmits one packet to addr (best effort, must not block).
	Send func(addr string, pkt []byte)
	// Rand is the randomness for target order and relay choice. nil = a
	// random seed.
	Rand *rand.Rand
}

// Change is a member's new state, returned by Tick and Handle.
type Change struct {
	Name  string
	ID    uint64
	State State
	Inc   uint64
}

// Stats are counters since New.
type Stats struct {
	ProbesSent     uint64 // direct pings of our own probes
	ProbesAcked    uint64 // our probes that got an ack (direct or relayed)
	IndirectProbes uint64 // ping-reqs sent
	IndirectAcks   uint64 // acks that came through a relay
	NacksReceived  uint64
	NacksMissing   uint64 // nacks expected but not received by the end of a period
	ProbesFailed   uint64 // our probes without any ack
	Suspicions     uint64 // members that became suspect here (ours or gossiped)
	Confirmations  uint64 // independent accusers added to a suspicion
	Refutes        uint64 // suspicions of this node that it refuted
	Deaths         uint64 // members that became dead here
	DeadHints      uint64 // dead verdicts gossiped by others (verified here before they count)
	Pushed         uint64 // gossip packets pushed at once (own new suspicions and verdicts)
	Gossiped       uint64 // gossip packets of gossip rounds (while news waits)
	Verifications  uint64 // suspects pinged at the end of a suspicion we had not probed ourselves
	Revivals       uint64 // suspect or dead members seen alive again with a higher incarnation
	LateTicks      uint64 // ticks that fired late (this node was starved)
	PingsAnswered  uint64
	Relayed        uint64 // ping-reqs served
	RelaysDropped  uint64 // ping-reqs refused: table full or unknown target
	BadPackets     uint64 // undecodable packets
	Misdirected    uint64 // pings for another name or process
	NotMembers     uint64 // pings not answered: the sender is not a member (OnlyMembers)
}

type suspicion struct {
	start    time.Time
	min, max time.Duration
	k        int
	accusers map[string]struct{} // bounded by k+1
	deadline time.Time
	hinted   bool // another member declared it dead: verify at once
	fails    int  // our unanswered probes of it during the suspicion (verification rounds included)
}

// deadFails is how many of our own probes of a suspect (full probes or
// verification rounds) must go unanswered before we declare it dead, and
// verifyRelays times IndirectChecks is how many relays a verification
// round of our own asks. Under heavy loss a live member can miss a few
// probes in a row: in the simulation (50 members, 40% loss, 100 ms
// jitter, 8 x 300 s) 2 failures and k relays declared 56 live members
// dead, 3 and k 9, 3 and 2k 4 (2k in every round: 2; at 30% loss the old
// rule 3, 3 and 2k 0; at 20% 0 and 0). A crashed member fails every probe
// of the accuser's suspicion (it probes a suspect every other period), so
// the third failure is in by the time the timeout ends: crash detection
// took as long with either rule (median 3.2 s, max 4.0 s at 50 members).
const (
	deadFails    = 3
	verifyRelays = 2
)

func (s *suspicion) timeout() time.Duration {
	c := len(s.accusers) - 1 // the first accuser is the suspicion itself
	if s.k < 1 || c <= 0 {
		if s.k < 1 {
			return s.min
		}
		return s.max
	}
	frac := math.Log(float64(c)+1) / math.Log(float64(s.k)+1)
	t := time.Duration(float64(s.max) - frac*float64(s.max-s.min))
	return max(t, s.min)
}

type member struct {
	node
	addr   string
	state  State
	inc    uint64
	susp   *suspicion
	probed int       // our priority probes since the suspicion began
	acked  bool      // it has answered one of our pings itself
	heard  time.Time // last packet from it, or an ack relayed for it
	// unheard: nothing heard from it since Add. Other members' suspicion
	// or dead verdict of it is then ignored (our own probes still count):
	// it predates this membership, as after a partition heals, when old
	// verdicts still travel while the links come back, and the member may
	// not answer us before it has re-added us.
	unheard bool
}

type probe struct {
	target     node
	addr       string
	seq        uint32
	indirectAt time.Time
	end        time.Time
	indirect   bool // ping-reqs sent
	expected   int  // nacks expected
	nacks      int
}

type relay struct {
	addr     string // requester
	seq      uint32 // requester's seq
	deadline time.Time
	nacked   bool // the nack went out; a late ack is still relayed until end
	end      time.Time
}

// verify is a verification round in flight: its acks count as hearing
// from target until the round's end.
type verify struct {
	target node
	end    time.Time
}

type bcast struct {
	u     update
	sends int
}

// Detector is the failure detector state machine. It is not safe for
// concurrent use.
type Detector struct {
	cfg         Config
	rng         *rand.Rand
	self        node
	inc         uint64
	health      int
	seq         uint32
	members     map[string]*member
	order       []string
	idx         int
	probe       *probe
	next        time.Time // next protocol period
	relays      map[uint32]*relay
	verifying   map[uint32]verify // verification rounds in flight (expire), by seq
	bq          []*bcast
	changes     []Change
	suspectTurn bool              // the last probe was a suspect's
	told        map[string]uint64 // accusers pinged with our refutation, and at which incarnation
	due         time.Time         // when the owner's timer is due (flush): a Tick much later is late
	nextGossip  time.Time         // next gossip round while there is news to spread
	st          Stats
	started     bool
}

// New returns a detector. It panics if cfg.Name is empty or cfg.Send is
// nil (programming errors).
func New(cfg Config) *Detector {
	if cfg.Name == "" || cfg.Send == nil {
		panic("swim: Config.Name and Config.Send are required")
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	cfg.ProbeTimeout = min(cfg.ProbeTimeout, cfg.ProbeInterval*2/3)
	switch {
	case cfg.IndirectChecks == 0:
		cfg.IndirectChecks = DefaultIndirectChecks
	case cfg.IndirectChecks < 0:
		cfg.IndirectChecks = 0
	}
	if cfg.SuspicionMult <= 0 {
		cfg.SuspicionMult = DefaultSuspicionMult
	}
	if cfg.SuspicionMaxMult <= 0 {
		cfg.SuspicionMaxMult = DefaultSuspicionMaxMult
	}
	if cfg.RetransmitMult <= 0 {
		cfg.RetransmitMult = DefaultRetransmitMult
	}
	if cfg.MaxHealth <= 0 {
		cfg.MaxHealth = DefaultMaxHealth
	}
	rng := cfg.Rand
	if rng == nil {
		rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &Detector{
		cfg:       cfg,
		rng:       rng,
		self:      node{Name: cfg.Name, ID: cfg.ID},
		seq:       rng.Uint32(),
		members:   make(map[string]*member),
		relays:    make(map[uint32]*relay),
		verifying: make(map[uint32]verify),
		told:      make(map[string]uint64),
	}
}

// Health is the local-health score, 0 (healthy) to MaxHealth-1.
func (d *Detector) Health() int { return d.health }

// Incarnation is this node's refutation counter.
func (d *Detector) Incarnation() uint64 { return d.inc }

// Stats returns the counters.
func (d *Detector) Stats() Stats { return d.st }

// Len is the number of members (any state), self excluded.
func (d *Detector) Len() int { return len(d.members) }

// Acked reports whether member (name, id) has answered one of our pings
// itself (with OnlyMembers: it counts us as a member).
func (d *Detector) Acked(name string, id uint64) bool {
	m := d.members[name]
	return m != nil && m.ID == id && m.acked
}

// Heard reports when this node last heard member (name, id): a packet of
// its own or an ack relayed for it. ok is false for an unknown member or
// one not heard since Add.
func (d *Detector) Heard(name string, id uint64) (at time.Time, ok bool) {
	m := d.members[name]
	if m == nil || m.ID != id || m.unheard {
		return time.Time{}, false
	}
	return m.heard, true
}

// Member reports whether (name, id) is a member.
func (d *Detector) Member(name string, id uint64) bool {
	m := d.members[name]
	return m != nil && m.ID == id
}

// State reports a member's state; ok is false for an unknown name.
func (d *Detector) State(name string) (s State, ok bool) {
	m := d.members[name]
	if m == nil {
		return 0, false
	}
	return m.state, true
}

func (d *Detector) scale() time.Duration { return time.Duration(d.health + 1) }

func (d *Detector) addHealth(delta int) {
	d.health = min(max(d.health+delta, 0), d.cfg.MaxHealth-1)
}

// Add makes name (process id, probe address addr) a member, alive. A
// member re-added with the same id keeps its incarnation; with another id
// it starts afresh (a restarted process).
func (d *Detector) Add(name string, id uint64, addr string) {
	if name == d.self.Name || name == "" || len(name) > MaxNameLen {
		return
	}
	if m := d.members[name]; m != nil {
		m.addr = addr
		if m.ID != id {
			m.ID, m.inc = id, 0
		}
		m.state, m.susp, m.unheard = Alive, nil, true
		return
	}
	if len(d.members) >= maxMembers {
		return
	}
	d.members[name] = &member{node: node{Name: name, ID: id}, addr: addr, unheard: true}
	// Introduce ourselves: its ack tells the owner (Acked) that the new
	// member counts us as one too, without waiting up to 2N periods for
	// the round robin to reach it.
	d.seq++
	d.send(addr, &packet{Type: typePing, Seq: d.seq, Target: node{Name: name, ID: id}}, name)
	// Insert at a random position of the rest of this pass.
	i := d.idx + d.rng.IntN(len(d.order)-d.idx+1)
	d.order = append(d.order, "")
	copy(d.order[i+1:], d.order[i:])
	d.order[i] = name
}

// Remove forgets a member.
func (d *Detector) Remove(name string) {
	if d.members[name] == nil {
		return
	}
	delete(d.members, name)
	if d.probe != nil && d.probe.target.Name == name {
		d.probe = nil
	}
	if i := slices.Index(d.order, name); i >= 0 {
		d.order = slices.Delete(d.order, i, i+1)
		if i < d.idx {
			d.idx--
		}
	}
}

func sortMembers(ms []*member) {
	slices.SortFunc(ms, func(a, b *member) int { return strings.Compare(a.Name, b.Name) })
}

// sortBcasts orders the queue by sends, fewest first (stable: older first).
func sortBcasts(bs []*bcast) {
	slices.SortStableFunc(bs, func(a, b *bcast) int { return a.sends - b.sends })
}

// live is N: members not dead, plus this node.
func (d *Detector) live() int {
	n := 1
	for _, m := range d.members {
		if m.state != Dead {
			n++
		}
	}
	return n
}

// Next is when Tick must run next (zero before the first Tick: at once).
func (d *Detector) Next() time.Time {
	if !d.started {
		return time.Time{}
	}
	t := d.next
	early := func(u time.Time) {
		if u.Before(t) {
			t = u
		}
	}
	if p := d.probe; p != nil {
		if !p.indirect {
			early(p.indirectAt)
		}
		early(p.end)
	}
	for _, m := range d.members {
		if m.susp != nil {
			early(m.susp.deadline)
		}
	}
	if len(d.bq) > 0 {
		early(d.nextGossip)
	}
	for _, r := range d.relays {
		if r.nacked {
			early(r.end)
		} else {
			early(r.deadline)
		}
	}
	return t
}

// flush returns the changes, and notes when the owner's timer is due next:
// at Next, or at once (now) if Next has passed (a confirmation can bring a
// deadline into the past). After a Handle, a tick that was already overdue
// stays overdue: a process that was stopped may handle the packets that
// waited in its socket before its late timer fires, and that tick must
// still count as late.
func (d *Detector) flush(now time.Time, tick bool) []Change {
	due := d.Next()
	if due.Before(now) {
		due = now
	}
	if tick || !d.due.Before(now) || due.Before(d.due) {
		d.due = due
	}
	c := d.changes
	d.changes = nil
	return c
}

// Tick runs everything due at now and returns the state changes.
func (d *Detector) Tick(now time.Time) []Change {
	if !d.started {
		d.started = true
		d.next = now
	} else if late := now.Sub(d.due); late > d.cfg.ProbeTimeout/2 {
		// Our own deadline passed long ago: this process was starved.
		// Nothing we failed to hear in that time is evidence against
		// anyone else.
		d.st.LateTicks++
		d.addHealth(1)
		d.probe = nil
		grace := now.Add(d.cfg.ProbeInterval * d.scale())
		for _, m := range d.members {
			if m.susp != nil && !m.susp.deadline.After(now) {
				m.susp.deadline = grace
			}
		}
		if d.next.Before(now) {
			d.next = now
		}
	}
	for seq, r := range d.relays {
		switch {
		case !r.end.After(now):
			delete(d.relays, seq)
		case !r.nacked && !r.deadline.After(now):
			r.nacked = true
			d.send(r.addr, &packet{Type: typeNack, Seq: r.seq}, "")
		}
	}
	for seq, v := range d.verifying {
		if now.After(v.end) {
			delete(d.verifying, seq)
		}
	}
	if p := d.probe; p != nil {
		if !p.indirect && !p.indirectAt.After(now) {
			d.indirect(p)
		}
		if !p.end.After(now) {
			d.probeFailed(p, now)
		}
	}
	for _, m := range d.members {
		if m.susp != nil && !m.susp.deadline.After(now) {
			d.expire(m, now)
		}
	}
	if d.probe == nil && !d.next.After(now) {
		d.startProbe(now)
	}
	if len(d.bq) > 0 && !d.nextGossip.After(now) {
		d.gossip(now)
	}
	return d.flush(now, true)
}

// expire: m's suspicion deadline passed. It is declared dead only on this
// node's own evidence: nothing heard from it (no packet of its own, no ack
// relayed for it) for a whole suspicion timeout, and deadFails probes of
// ours (full probes, or rounds of verification pings sent here)
// unanswered.
// Gossip alone (another member's suspicion or dead verdict) never kills a
// member here, so a refutation lost on the way to one node does not make
// that node report a live member down.
func (d *Detector) expire(m *member, now time.Time) {
	s := m.susp
	if !s.hinted {
		// Local health stretches the suspicion as well (at most
		// twice): a node that misses probes itself is slow to call
		// anyone dead.
		if ext := s.start.Add(s.timeout() * min(d.scale(), maxSuspicionStretch)); ext.After(now) {
			s.deadline = ext
			return
		}
	}
	if t := s.timeout(); now.Sub(m.heard) < t {
		// Heard from it within a timeout: it lives (or did lately), and
		// our pings carry the suspicion to it, so its refutation is on
		// the way. Dead only after a whole timeout of silence.
		s.deadline = m.heard.Add(t)
		s.hinted = false
		return
	}
	if p := d.probe; p != nil && p.target == m.node {
		s.deadline = p.end // our probe of it is in flight
		return
	}
	need := deadFails
	if s.hinted {
		need = 1 // another member verified it dead already
	}
	if s.fails < need {
		// Not enough of our own probes failed: a verification round, two
		// direct pings (they carry the suspicion, so it can refute) and
		// indirect probes through 2k members at once (k to confirm
		// another member's verdict: after a partition every member of
		// the other side is confirmed so, and the relays of 2k rounds
		// doubled the packets of the whole cluster), then decide.
		relays := verifyRelays * d.cfg.IndirectChecks
		if s.hinted {
			relays = d.cfg.IndirectChecks
		}
		s.fails++
		d.st.Verifications++
		d.seq++
		s.deadline = now.Add(2 * d.cfg.ProbeTimeout * min(d.scale(), maxSuspicionStretch))
		if len(d.verifying) < maxMembers {
			d.verifying[d.seq] = verify{m.node, s.deadline}
		}
		for range 2 {
			d.send(m.addr, &packet{Type: typePing, Seq: d.seq, Target: m.node}, m.Name)
		}
		d.pingReqs(m.node, d.seq, relays)
		return
	}
	d.declareDead(m)
}

func (d *Detector) nextTarget() *member {
	for range 2 {
		for d.idx < len(d.order) {
			m := d.members[d.order[d.idx]]
			d.idx++
			if m.state != Dead {
				return m
			}
		}
		// End of a pass: shuffle for the next.
		d.idx = 0
		d.rng.Shuffle(len(d.order), func(i, j int) { d.order[i], d.order[j] = d.order[j], d.order[i] })
	}
	return nil
}

func (d *Detector) startProbe(now time.Time) {
	period := d.cfg.ProbeInterval * d.scale()
	d.next = now.Add(period)
	// While we hold suspicions, every other period probes the suspect we
	// probed least during its suspicion (the round robin takes the
	// others, so its bound doubles at most): our ping carries the
	// suspicion to it (buddy system) and its ack carries its refutation
	// back; if it is really gone, our failed probe is an independent
	// confirmation.
	var m *member
	if !d.suspectTurn {
		for _, name := range d.order {
			if c := d.members[name]; c.state == Suspect && (m == nil || c.probed < m.probed) {
				m = c
			}
		}
	}
	d.suspectTurn = m != nil
	if m == nil {
		m = d.nextTarget()
	}
	if m == nil {
		return
	}
	if m.state == Suspect {
		m.probed++
	}
	d.seq++
	p := &probe{target: m.node, addr: m.addr, seq: d.seq,
		indirectAt: now.Add(d.cfg.ProbeTimeout * d.scale()), end: now.Add(period)}
	d.probe = p
	d.st.ProbesSent++
	d.send(m.addr, &packet{Type: typePing, Seq: p.seq, Target: m.node}, m.Name)
}

func (d *Detector) indirect(p *probe) {
	p.indirect = true
	// A second direct ping beside the indirect probes: under loss, the
	// first ping or its ack is the likeliest packet to have been lost.
	d.send(p.addr, &packet{Type: typePing, Seq: p.seq, Target: p.target}, p.target.Name)
	p.expected = d.pingReqs(p.target, p.seq, d.cfg.IndirectChecks)
}

// pingReqs asks up to k random alive members to probe target for our
// probe seq, and returns how many it asked.
func (d *Detector) pingReqs(target node, seq uint32, k int) int {
	if k == 0 {
		return 0
	}
	n := 0
	for _, m := range d.pick(k, target.Name) {
		d.st.IndirectProbes++
		n++
		d.send(m.addr, &packet{Type: typePingReq, Seq: seq, Target: target}, "")
	}
	return n
}

func (d *Detector) probeFailed(p *probe, now time.Time) {
	d.probe = nil
	d.st.ProbesFailed++
	if p.expected > 0 {
		miss := p.expected - p.nacks
		d.st.NacksMissing += uint64(miss)
		if p.nacks == 0 {
			d.addHealth(miss) // not a single relay answered: our own trouble?
		}
	} else {
		d.addHealth(1)
	}
	m := d.members[p.target.Name]
	if m == nil || m.ID != p.target.ID {
		return
	}
	switch m.state {
	case Alive:
		d.suspect(m, m.inc, d.self.Name, now)
		m.susp.fails = 1
		d.push(update{Kind: KindSuspect, Node: m.node, Inc: m.inc, From: d.self.Name})
	case Suspect:
		u := update{Kind: KindSuspect, Node: m.node, Inc: m.inc, From: d.self.Name}
		if _, dup := m.susp.accusers[d.self.Name]; !dup {
			d.push(u) // a new independent confirmation
		}
		d.apply(u, now)
		m.susp.fails++
	}
}

func (d *Detector) acked(now time.Time) {
	d.probe = nil
	d.st.ProbesAcked++
	d.addHealth(-1)
}

// suspect starts a suspicion of m (alive) at incarnation inc by accuser.
func (d *Detector) suspect(m *member, inc uint64, accuser string, now time.Time) {
	n := d.live()
	k := d.cfg.SuspicionMult - 2
	if n-2 < k {
		k = 0
	}
	minT := suspicionMin(n, d.cfg)
	s := &suspicion{start: now, min: minT, max: time.Duration(d.cfg.SuspicionMaxMult) * minT, k: k,
		accusers: map[string]struct{}{accuser: {}}}
	s.deadline = now.Add(s.timeout())
	m.state, m.inc, m.susp, m.probed = Suspect, inc, s, 0
	if accuser == d.self.Name {
		m.probed = 1
	}
	d.st.Suspicions++
	d.changes = append(d.changes, Change{Name: m.Name, ID: m.ID, State: Suspect, Inc: inc})
	d.broadcast(update{Kind: KindSuspect, Node: m.node, Inc: inc, From: accuser})
}

func (d *Detector) declareDead(m *member) {
	m.state, m.susp = Dead, nil
	d.st.Deaths++
	if d.probe != nil && d.probe.target.Name == m.Name {
		d.probe = nil
	}
	d.changes = append(d.changes, Change{Name: m.Name, ID: m.ID, State: Dead, Inc: m.inc})
	u := update{Kind: KindDead, Node: m.node, Inc: m.inc, From: d.self.Name}
	d.broadcast(u)
	d.push(u)
}

// pick returns up to k random live members other than exclude (relays,
// gossip and push targets).
func (d *Detector) pick(k int, exclude string) []*member {
	cands := make([]*member, 0, len(d.members))
	for _, m := range d.members {
		if m.state == Alive && m.Name != exclude {
			cands = append(cands, m)
		}
	}
	// Deterministic order before the random pick (map order is random).
	sortMembers(cands)
	k = min(k, len(cands))
	for i := range k {
		j := i + d.rng.IntN(len(cands)-i)
		cands[i], cands[j] = cands[j], cands[i]
	}
	return cands[:k]
}

// gossip is a gossip round (memberlist's gossip timer): while updates wait
// in the queue, every half period a gossip packet carrying them goes to
// gossipNodes random live members. Piggybacking on probes alone spreads
// news at a few packets per period per node, too slowly when many members
// change at once (a partition). Nothing is sent while the queue is empty:
// no steady cost.
func (d *Detector) gossip(now time.Time) {
	d.nextGossip = now.Add(d.cfg.ProbeInterval / 2)
	for _, m := range d.pick(gossipNodes, "") {
		if len(d.bq) == 0 {
			break
		}
		d.st.Gossiped++
		d.send(m.addr, &packet{Type: typeGossip}, m.Name)
	}
}

// push sends u at once, in a gossip packet, to the fan-out: as many
// random live members (not its subject) as each update is piggybacked on,
// RetransmitMult*ceil(log10(N+1)). Only for news this node originates (its
// own probe failed, its own verdict): piggybacking alone takes O(log N)
// periods to spread it, and the other members' suspicion timers (so the
// detection time) start when the news reaches them.
func (d *Detector) push(u update) {
	for _, m := range d.pick(d.retransmitLimit(), u.Node.Name) {
		d.st.Pushed++
		d.send(m.addr, &packet{Type: typeGossip}, "", u)
	}
}

// tellAccuser pings the node that accused us, once per incarnation: the
// ping's header carries our new incarnation, which refutes its suspicion
// even if the gossip misses it.
func (d *Detector) tellAccuser(name string) {
	m := d.members[name]
	if m == nil || m.state == Dead || d.told[name] == d.inc {
		return
	}
	if len(d.told) >= maxTold {
		clear(d.told)
	}
	d.told[name] = d.inc
	d.seq++
	d.send(m.addr, &packet{Type: typePing, Seq: d.seq, Target: m.node}, m.Name)
}

func (d *Detector) refute(inc uint64) {
	d.inc = max(d.inc, inc) + 1
	d.st.Refutes++
	d.addHealth(1)
	d.broadcast(update{Kind: KindAlive, Node: d.self, Inc: d.inc})
}

// Handle processes one packet from addr and returns the state changes. A
// packet that does not decode is counted and its error returned.
func (d *Detector) Handle(now time.Time, addr string, b []byte) ([]Change, error) {
	p, err := decode(b)
	if err != nil {
		d.st.BadPackets++
		return nil, err
	}
	if p.From.Name == d.self.Name {
		return nil, nil // our own packet reflected back
	}
	if m := d.members[p.From.Name]; m != nil && m.ID == p.From.ID {
		m.heard, m.unheard = now, false
	}
	// The sender's own word about itself first: it refutes any older
	// suspicion at once, whatever gossip still lags.
	d.apply(update{Kind: KindAlive, Node: p.From, Inc: p.FromInc}, now)
	for _, u := range p.Updates {
		d.apply(u, now)
	}
	switch p.Type {
	case typePing:
		if p.Target != d.self {
			d.st.Misdirected++
			break
		}
		if m := d.members[p.From.Name]; d.cfg.OnlyMembers && (m == nil || m.ID != p.From.ID) {
			d.st.NotMembers++
			break
		}
		d.st.PingsAnswered++
		d.send(addr, &packet{Type: typeAck, Seq: p.Seq}, p.From.Name)
	case typePingReq:
		m := d.members[p.Target.Name]
		if m == nil || m.ID != p.Target.ID || len(d.relays) >= maxRelays {
			d.st.RelaysDropped++
			break
		}
		d.st.Relayed++
		d.seq++
		// The nack must reach the requester before its period ends
		// (ProbeInterval-ProbeTimeout after it asked): wait half a
		// probe timeout, ample for a round trip to the target.
		d.relays[d.seq] = &relay{addr: addr, seq: p.Seq, deadline: now.Add(d.cfg.ProbeTimeout / 2),
			end: now.Add(d.cfg.ProbeInterval)}
		d.send(m.addr, &packet{Type: typePing, Seq: d.seq, Target: m.node}, m.Name)
	case typeAck:
		if m := d.members[p.From.Name]; m != nil && m.ID == p.From.ID {
			m.acked = true
		}
		if pr := d.probe; pr != nil && pr.seq == p.Seq {
			if p.From != pr.target {
				d.st.IndirectAcks++
				if m := d.members[pr.target.Name]; m != nil && m.node == pr.target {
					m.heard = now
				}
			}
			d.acked(now)
		} else if v, ok := d.verifying[p.Seq]; ok {
			if m := d.members[v.target.Name]; m != nil && m.node == v.target {
				m.heard = now // a verification answered, directly or relayed
			}
		} else if r := d.relays[p.Seq]; r != nil {
			delete(d.relays, p.Seq)
			// Vouch for the target's incarnation, which its ack just
			// told us, so a relayed ack refutes an old suspicion too.
			d.send(r.addr, &packet{Type: typeAck, Seq: r.seq}, "",
				update{Kind: KindAlive, Node: p.From, Inc: p.FromInc})
		}
	case typeNack:
		if pr := d.probe; pr != nil && pr.seq == p.Seq && pr.nacks < pr.expected {
			pr.nacks++
			d.st.NacksReceived++
		}
	}
	return d.flush(now, false), nil
}

// apply merges one gossiped update (memberlist's aliveNode, suspectNode,
// deadNode rules).
func (d *Detector) apply(u update, now time.Time) {
	if u.Node.Name == d.self.Name {
		if u.Node.ID != d.self.ID {
			return // news about another process of our name
		}
		switch u.Kind {
		case KindSuspect, KindDead:
			if u.Inc >= d.inc {
				d.refute(u.Inc)
			} else if !d.queued(d.self.Name) {
				// Someone still holds an old suspicion: repeat our
				// refutation (it rides first on the answer).
				d.broadcast(update{Kind: KindAlive, Node: d.self, Inc: d.inc})
			}
			d.tellAccuser(u.From)
		case KindAlive:
			if u.Inc > d.inc { // someone claims a newer us: outbid it
				d.refute(u.Inc)
			}
		}
		return
	}
	m := d.members[u.Node.Name]
	if m == nil || m.ID != u.Node.ID {
		return // membership comes from the owner, not from gossip
	}
	if m.unheard && u.From != d.self.Name && (u.Kind == KindSuspect || u.Kind == KindDead) {
		return // older than our membership of it (see member.unheard)
	}
	switch u.Kind {
	case KindAlive:
		if u.Inc <= m.inc {
			return
		}
		m.inc = u.Inc
		if m.state != Alive {
			m.state, m.susp = Alive, nil
			d.st.Revivals++
			d.changes = append(d.changes, Change{Name: m.Name, ID: m.ID, State: Alive, Inc: m.inc})
		}
		d.broadcast(u)
	case KindSuspect:
		if u.Inc < m.inc || m.state == Dead {
			return
		}
		if m.state == Suspect && u.Inc == m.inc {
			s := m.susp
			if _, dup := s.accusers[u.From]; dup || u.From == "" || len(s.accusers) > s.k {
				return
			}
			s.accusers[u.From] = struct{}{}
			if t := s.start.Add(s.timeout()); t.Before(s.deadline) {
				s.deadline = t // a confirmation only ever brings it closer
			}
			d.st.Confirmations++
			d.broadcast(u)
			return
		}
		if u.From == "" {
			u.From = "?"
		}
		d.suspect(m, u.Inc, u.From, now)
	case KindDead:
		// Another member's verdict: a strong hint, verified here (see
		// expire) before this node declares it dead too.
		if u.Inc < m.inc || m.state == Dead {
			return
		}
		if m.state == Alive || u.Inc > m.inc {
			if u.From == "" {
				u.From = "?"
			}
			d.suspect(m, u.Inc, u.From, now)
		}
		d.st.DeadHints++
		m.susp.hinted = true
		m.susp.deadline = now
	}
}

// broadcast queues u for piggybacking, replacing older news about the
// same member.
func (d *Detector) broadcast(u update) {
	for i, b := range d.bq {
		if b.u.Node.Name == u.Node.Name {
			if b.u.Kind == KindSuspect && u.Kind == KindSuspect && b.u.Inc == u.Inc && b.u.From != u.From {
				continue // a confirmation travels beside the suspicion
			}
			d.bq = append(d.bq[:i], d.bq[i+1:]...)
			break
		}
	}
	if len(d.bq) >= maxBroadcasts {
		d.bq = d.bq[1:] // drop the oldest
	}
	d.bq = append(d.bq, &bcast{u: u})
}

func (d *Detector) queued(name string) bool {
	return slices.ContainsFunc(d.bq, func(b *bcast) bool { return b.u.Node.Name == name && b.sends == 0 })
}

func (d *Detector) retransmitLimit() int {
	return d.cfg.RetransmitMult * int(math.Ceil(math.Log10(float64(d.live())+1)))
}

// send encodes p from us, piggybacks gossip (first the suspicion we hold
// of the recipient, if any: Lifeguard's buddy system, so a suspect hears
// of it from every node that suspects it as soon as they exchange a probe)
// and hands it to Config.Send.
func (d *Detector) send(addr string, p *packet, target string, extra ...update) {
	p.From, p.FromInc = d.self, d.inc
	b := encodeHeader(make([]byte, 0, 256), p)
	budget := MaxPacketSize - envelopeReserve - len(b) - 1
	us := extra
	for _, u := range extra {
		budget -= updateSize(u)
	}
	if target != "" {
		if m := d.members[target]; m != nil && m.state == Suspect {
			u := update{Kind: KindSuspect, Node: m.node, Inc: m.inc, From: d.self.Name}
			us = append(us, u)
			budget -= updateSize(u)
		}
	}
	if len(d.bq) > 0 {
		sortBcasts(d.bq)
		limit := d.retransmitLimit()
		keep := d.bq[:0]
		for _, bc := range d.bq {
			if len(us) < MaxUpdates && updateSize(bc.u) <= budget {
				us = append(us, bc.u)
				budget -= updateSize(bc.u)
				bc.sends++
			}
			if bc.sends < limit {
				keep = append(keep, bc)
			}
		}
		clear(d.bq[len(keep):])
		d.bq = keep
	}
	d.cfg.Send(addr, encodeUpdates(b, us))
}

func log10(x float64) float64 { return math.Log10(x) }

// suspicionMin is the suspicion timeout with enough confirmations, for n
// live members (this node included).
func suspicionMin(n int, c Config) time.Duration {
	scale := max(1, log10(float64(n)+1))
	t := time.Duration(float64(c.SuspicionMult) * scale * float64(c.ProbeInterval))
	return max(t, MinSuspicionPeriods*c.ProbeInterval)
}

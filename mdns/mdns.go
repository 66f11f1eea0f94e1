package mdns

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/macula-io/cluster/discovery"
	"github.com/macula-io/cluster/internal/mcast"
	"github.com/macula-io/cluster/internal/ratelimit"
)

// Timing (RFC 6762 where it says so).
const (
	announceCount    = 2           // §8.3: at least two, one second apart
	announceGap      = time.Second //
	minMulticastGap  = time.Second // §6: a record at most once per second per interface
	firstQueryGap    = time.Second // §5.2: one second, then doubling
	maxQueryGap      = time.Minute // cap of the doubling (the RFC allows up to an hour)
	goodbyeGrace     = time.Second // §10.1: a TTL 0 record is kept for one second
	maxRecordTTL     = 4500        // seconds; longer TTLs heard are cut to this
	newRecordTTL     = 120         // seconds; the cap for an instance not yet verified
	verifyAfter      = time.Second // an instance heard again this long after its first record is verified (§8.3: announcements are 1 s apart)
	txtAsks          = 3           // TXT queries for an instance known only by PTR
	queueLen         = 128         // received packets waiting for the owner goroutine
	warnPeriod       = time.Minute // one warning per source per period
	refreshStages    = 4           // §5.2: queries at 80, 85, 90, 95% of the TTL
	refreshFirstPct  = 80
	refreshStepPct   = 5
	refreshJitterPct = 2
)

// Stats are the strategy's counters.
type Stats struct {
	QueriesSent      uint64 // query packets multicast (browse, refresh, TXT)
	QueriesReceived  uint64 // query packets received
	AnswersSent      uint64 // response packets multicast (answers, announcements, goodbyes)
	AnswersReceived  uint64 // response packets received
	GoodbyesReceived uint64 // goodbye (TTL 0) records for known instances
	Expired          uint64 // instances dropped because their records expired
	Evicted          uint64 // unverified instances dropped to make room for a new one in a full table
	Malformed        uint64 // packets that could not be parsed
	SendErrors       uint64 // failed sends
	// Rejected counts packets and records dropped by reason:
	// "not_multicast" (unicast to the port), "bad_port" (response not from
	// the mDNS port), "unknown_interface", "queue_full", "table_full" (the
	// table is full of verified instances; unverified ones are evicted
	// instead, see Evicted),
	// "bad_node" (TXT without a valid node=), "version" (v= other than 1),
	// "bad_name" (record names that could not be read).
	Rejected   map[string]uint64
	Peers      uint64 // peers in the current set
	Interfaces uint64 // interfaces joined
}

// Strategy is the mDNS discovery.Strategy. Create it with NewStrategy.
type Strategy struct {
	cfg Config

	life    discovery.Lifecycle
	stop    chan struct{}
	done    chan struct{}
	refresh chan struct{}

	queriesSent, queriesReceived, answersSent, answersReceived atomic.Uint64
	goodbyes, expired, malformed, sendErrors, evicted          atomic.Uint64
	rejMu                                                      sync.Mutex
	rejected                                                   map[string]uint64
	peers                                                      atomic.Pointer[[]discovery.Peer]
	ifnames                                                    atomic.Pointer[[]string]
}

var (
	_ discovery.Strategy    = (*Strategy)(nil)
	_ discovery.StatsSource = (*Strategy)(nil)
)

// NewStrategy returns a strategy for cfg; Start validates cfg.
func NewStrategy(cfg Config) *Strategy {
	return &Strategy{cfg: cfg, refresh: make(chan struct{}, 1), rejected: make(map[string]uint64)}
}

// Name is "mdns".
func (s *Strategy) Name() string { return "mdns" }

// Start validates the configuration, binds the sockets, joins the groups
// and starts advertising self and browsing for the others. sink hears of
// every change of the peer set, from one goroutine, never after Close
// returns.
func (s *Strategy) Start(ctx context.Context, self discovery.Peer, sink discovery.Sink) error {
	return s.life.Start(func() error { return s.start(ctx, self, sink) })
}

func (s *Strategy) start(ctx context.Context, self discovery.Peer, sink discovery.Sink) error {
	st, err := s.cfg.settings()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	selfNode := discovery.FormatNode(self.Name, self.Addr)
	if err := discovery.ValidateField(selfNode); err != nil {
		return fmt.Errorf("mdns: self node: %w", err)
	}
	_, portStr, err := net.SplitHostPort(self.Addr)
	port, perr := strconv.Atoi(portStr)
	if err != nil || perr != nil || port < 1 || port > 65535 {
		return fmt.Errorf("%w: %q (addr %q)", ErrNotDialable, self.Name, self.Addr)
	}
	ours, err := newOurRecords(st.service, selfNode, uint16(port), st.ttl)
	if err != nil {
		return err
	}

	found, missing, err := scanInterfaces(st.ifaces)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: interface %s not found or down", ErrNoInterface, strings.Join(missing, ", "))
	}
	if len(found) == 0 {
		return fmt.Errorf("%w: no up, running, multicast-capable, non-loopback interface", ErrNoInterface)
	}
	c, err6, err := openConn(st.port, st.v6, func(err error) { st.log.Debug("mdns: read", "err", err) })
	if err != nil {
		return err
	}
	if st.v6 && err6 != nil {
		st.log.Debug("mdns: IPv6 unavailable", "err", err6)
	}
	e := &engine{
		s: s, st: st, self: self, set: discovery.NewSet(sink), ours: ours, conn: c,
		svcKey:     lower(ours.service.String()),
		instKey:    lower(ours.instance.String()),
		hostKey:    lower(ours.host.String()),
		ifaces:     make(map[int]*joined),
		lastMcast:  make(map[mcastKey]time.Time),
		table:      make(map[string]*entry),
		in:         make(chan packet, queueLen),
		warn:       ratelimit.New(warnPeriod, 0),
		queryGap:   firstQueryGap,
		readerDone: make(chan struct{}, 2),
	}
	now := time.Now()
	for i := range found {
		e.joinIface(found[i])
	}
	if len(e.ifaces) == 0 {
		c.close()
		return fmt.Errorf("%w: could not join the mDNS group on %s", ErrNoInterface, ifaceNames(found))
	}
	e.publishIfaces()
	e.announceLeft, e.nextAnnounce = announceCount, now
	// §5.2: the first query after a random 20-120 ms delay.
	e.nextQuery = now.Add(20*time.Millisecond + rand.N(100*time.Millisecond))

	s.stop = make(chan struct{})
	s.done = make(chan struct{})
	readers := 0
	if c.c4 != nil {
		readers++
		go e.read(c.c4, false)
	}
	if c.c6 != nil {
		readers++
		go e.read(c.c6, true)
	}
	e.readers = readers
	st.log.Debug("mdns discovery started", "instance", ours.instance.String(), "interfaces", ifaceNames(found),
		"port", st.port, "ipv6", c.c6 != nil)
	go e.run()
	return nil
}

// Refresh asks for a browse query now (at most one per second); it does
// not block.
func (s *Strategy) Refresh() {
	select {
	case s.refresh <- struct{}{}:
	default:
	}
}

// Close sends goodbyes for this node's records, closes the sockets and
// waits for every goroutine. It is idempotent.
func (s *Strategy) Close() error {
	if s.life.Close() {
		close(s.stop)
		<-s.done
	}
	return nil
}

// Peers returns a copy of the current peer set, sorted by Name.
func (s *Strategy) Peers() []discovery.Peer {
	if p := s.peers.Load(); p != nil {
		return slices.Clone(*p)
	}
	return nil
}

// Interfaces returns the names of the interfaces currently joined.
func (s *Strategy) Interfaces() []string {
	if p := s.ifnames.Load(); p != nil {
		return slices.Clone(*p)
	}
	return nil
}

// Stats returns the counters.
func (s *Strategy) Stats() Stats {
	st := Stats{
		QueriesSent: s.queriesSent.Load(), QueriesReceived: s.queriesReceived.Load(),
		AnswersSent: s.answersSent.Load(), AnswersReceived: s.answersReceived.Load(),
		GoodbyesReceived: s.goodbyes.Load(), Expired: s.expired.Load(), Evicted: s.evicted.Load(),
		Malformed: s.malformed.Load(), SendErrors: s.sendErrors.Load(),
	}
	s.rejMu.Lock()
	st.Rejected = maps.Clone(s.rejected)
	s.rejMu.Unlock()
	if p := s.peers.Load(); p != nil {
		st.Peers = uint64(len(*p))
	}
	if p := s.ifnames.Load(); p != nil {
		st.Interfaces = uint64(len(*p))
	}
	return st
}

// rejectReasons are the keys of Stats.Rejected.
var rejectReasons = []string{"not_multicast", "bad_name", "queue_full", "unknown_interface", "bad_port",
	"table_full", "version", "bad_node", "malformed"}

// DiscoveryStats implements discovery.StatsSource.
func (s *Strategy) DiscoveryStats() discovery.Stats {
	st := s.Stats()
	rej := make(map[string]uint64, len(rejectReasons))
	for _, r := range rejectReasons {
		rej[r] = 0
	}
	maps.Copy(rej, st.Rejected)
	rej["malformed"] = st.Malformed
	return discovery.Stats{
		Peers: st.Peers,
		Counters: map[string]uint64{
			"queries_sent": st.QueriesSent, "queries_received": st.QueriesReceived,
			"answers_sent": st.AnswersSent, "answers_received": st.AnswersReceived,
			"goodbyes_received": st.GoodbyesReceived, "expired": st.Expired, "evicted": st.Evicted,
			"send_errors": st.SendErrors, "interfaces": st.Interfaces,
		},
		Rejected: rej,
	}
}

func (s *Strategy) reject(reason string) {
	s.rejMu.Lock()
	s.rejected[reason]++
	s.rejMu.Unlock()
}

// packet is a parsed packet handed from a reader to the owner goroutine.
type packet struct {
	msg     message
	ifIndex int
	v6      bool
	src     netip.AddrPort
}

// joined is an interface in use.
type joined struct {
	info     ifaceInfo
	ok4, ok6 bool // group joined
	mute6    bool // IPv6 sends fail here (no IPv6 multicast route); retried after an address change
}

func (j *joined) canSend(v6 bool) bool {
	if v6 {
		return j.ok6 && !j.mute6
	}
	return j.ok4
}

func (j *joined) src4() netip.Addr {
	if len(j.info.addrs.v4) > 0 {
		return j.info.addrs.v4[0]
	}
	return netip.Addr{}
}

type mcastKey struct {
	ifIndex int
	v6      bool
	kind    rrKind
}

// entry is one discovered service instance.
type entry struct {
	target string    // instance name as heard (for known answers)
	first  time.Time // first PTR heard

	ptrRecv   time.Time
	ptrTTL    time.Duration
	ptrExp    time.Time
	ptrStage  int
	goodbye   bool // PTR goodbye heard: no refresh queries
	jitterPct float64

	hasTXT   bool
	txtRecv  time.Time
	txtTTL   time.Duration
	txtExp   time.Time
	txtStage int
	peer     discovery.Peer
	valid    bool // TXT gave a usable node

	asks    int
	askNext time.Time
}

func (e *entry) stageTime(recv time.Time, ttl time.Duration, stage int) time.Time {
	pct := float64(refreshFirstPct+refreshStepPct*stage) + e.jitterPct
	return recv.Add(time.Duration(float64(ttl) * pct / 100))
}

// engine is the state owned by the owner goroutine (run). Readers only
// touch conn, in, s and warn.
type engine struct {
	s    *Strategy
	st   settings
	self discovery.Peer
	set  *discovery.Set
	ours *ourRecords
	conn *conn
	warn *ratelimit.PerKey
	in   chan packet

	svcKey, instKey, hostKey string

	ifaces    map[int]*joined
	lastMcast map[mcastKey]time.Time
	table     map[string]*entry
	last      []discovery.Peer
	dirty     bool // table changed since the last maybeReport

	announceLeft int
	nextAnnounce time.Time
	nextQuery    time.Time
	lastQuery    time.Time
	refreshAt    time.Time // zero: no Refresh pending
	queryGap     time.Duration

	readers    int
	readerDone chan struct{}
	buf        []byte
}

func ifaceNames(fs []ifaceInfo) string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.ifi.Name
	}
	return strings.Join(names, ",")
}

func (e *engine) joinIface(info ifaceInfo) {
	ok4, ok6, err := e.conn.join(&info.ifi)
	if !ok4 && !ok6 {
		e.st.log.Warn("mdns: cannot join the mDNS group", "interface", info.ifi.Name, "err", err)
		return
	}
	if err != nil {
		e.st.log.Debug("mdns: joined one family only", "interface", info.ifi.Name, "ipv4", ok4, "ipv6", ok6, "err", err)
	}
	e.ifaces[info.ifi.Index] = &joined{info: info, ok4: ok4, ok6: ok6}
}

func (e *engine) publishIfaces() {
	names := make([]string, 0, len(e.ifaces))
	for _, j := range e.ifaces {
		names = append(names, j.info.ifi.Name)
	}
	slices.Sort(names)
	e.s.ifnames.Store(&names)
}

// --- readers ---

// read reads c (the IPv4 or IPv6 socket) until it is closed.
func (e *engine) read(c *mcast.Conn, v6 bool) {
	defer func() { e.readerDone <- struct{}{} }()
	buf := make([]byte, maxPacket+1)
	for {
		p, err := c.Read(buf)
		if err != nil {
			return // closed: the socket retries the errors it survives
		}
		e.ingest(buf[:p.N], p.Dst == c.Group().Addr(), p.IfIndex, v6, p.Src)
	}
}

// ingest parses one packet in a reader goroutine and queues it.
func (e *engine) ingest(b []byte, toGroup bool, ifIndex int, v6 bool, from netip.AddrPort) {
	if !toGroup {
		e.s.reject("not_multicast")
		return
	}
	msg, err := parseMessage(b)
	if err != nil {
		e.s.malformed.Add(1)
		key := from.Addr().String()
		if ok, n := e.warn.Allow(key); ok {
			e.st.log.Warn("mdns: malformed packet", "from", from, "err", err, "suppressed", n)
		}
		return
	}
	if msg.Skipped > 0 {
		e.s.reject("bad_name")
	}
	select {
	case e.in <- packet{msg: msg, ifIndex: ifIndex, v6: v6, src: from}:
	default:
		e.s.reject("queue_full")
	}
}

// --- owner goroutine ---

func (e *engine) run() {
	defer close(e.s.done)
	watch := mcast.Watch(context.Background()) // signals at once, then on each interface change
	defer watch.Close()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-e.s.stop:
			e.shutdown()
			return
		case p := <-e.in:
			e.handle(p, time.Now())
		case <-watch.C:
			e.rescan(time.Now())
		case <-e.s.refresh:
			// A query now, or a second after the last one (§5.2), outside
			// the doubling browse schedule.
			e.refreshAt = later(e.lastQuery.Add(firstQueryGap), time.Now())
		case <-timer.C:
		}
		now := time.Now()
		next := e.tick(now)
		e.maybeReport(now)
		timer.Reset(max(next.Sub(time.Now()), time.Millisecond))
	}
}

func (e *engine) shutdown() {
	// Goodbyes for our records, except the shared service-type PTR.
	var k kinds
	for _, x := range []rrKind{kindPTR, kindSRV, kindTXT, kindA, kindAAAA} {
		k.add(x)
	}
	for _, j := range e.ifaces {
		e.sendResponse(j, false, k, 0, true)
		e.sendResponse(j, true, k, 0, true)
	}
	e.conn.close()
	for range e.readers {
		<-e.readerDone
	}
	e.st.log.Debug("mdns discovery stopped")
}

// tick does whatever is due at now and returns the next deadline.
func (e *engine) tick(now time.Time) time.Time {
	if e.announceLeft > 0 && !now.Before(e.nextAnnounce) {
		e.announce(now)
		e.announceLeft--
		e.nextAnnounce = now.Add(announceGap)
	}
	e.expire(now)

	ptrDue := false
	var txtDue []string
	for _, en := range e.table {
		if !en.goodbye {
			for en.ptrStage < refreshStages && !now.Before(en.stageTime(en.ptrRecv, en.ptrTTL, en.ptrStage)) {
				ptrDue = true
				en.ptrStage++
			}
		}
		if en.hasTXT {
			due := false
			for en.txtStage < refreshStages && !now.Before(en.stageTime(en.txtRecv, en.txtTTL, en.txtStage)) {
				due = true
				en.txtStage++
			}
			if due {
				txtDue = append(txtDue, en.target)
			}
		} else if !en.goodbye && en.asks < txtAsks && !now.Before(en.askNext) {
			en.asks++
			en.askNext = now.Add(time.Second)
			txtDue = append(txtDue, en.target)
		}
	}
	if !now.Before(e.nextQuery) {
		ptrDue = true
		e.nextQuery = now.Add(e.queryGap)
		e.queryGap = min(2*e.queryGap, maxQueryGap)
	}
	if !e.refreshAt.IsZero() && !now.Before(e.refreshAt) {
		ptrDue = true
		e.refreshAt = time.Time{}
	}
	if ptrDue || len(txtDue) > 0 {
		e.sendQuery(now, ptrDue, txtDue)
	}

	next := e.nextQuery
	if e.announceLeft > 0 {
		next = earlier(next, e.nextAnnounce)
	}
	if !e.refreshAt.IsZero() {
		next = earlier(next, e.refreshAt)
	}
	for _, en := range e.table {
		next = earlier(next, en.ptrExp)
		if !en.goodbye && en.ptrStage < refreshStages {
			next = earlier(next, en.stageTime(en.ptrRecv, en.ptrTTL, en.ptrStage))
		}
		if en.hasTXT {
			next = earlier(next, en.txtExp)
			if en.txtStage < refreshStages {
				next = earlier(next, en.stageTime(en.txtRecv, en.txtTTL, en.txtStage))
			}
		} else if !en.goodbye && en.asks < txtAsks {
			next = earlier(next, en.askNext)
		}
	}
	return next
}

func (e *engine) expire(now time.Time) {
	for key, en := range e.table {
		if !now.Before(en.ptrExp) {
			if !en.goodbye {
				e.s.expired.Add(1)
			}
			e.st.log.Debug("mdns: instance gone", "instance", en.target, "goodbye", en.goodbye)
			delete(e.table, key)
			e.dirty = true
			continue
		}
		if en.hasTXT && !now.Before(en.txtExp) {
			en.hasTXT, en.valid, en.asks = false, false, 0
			e.dirty = true
		}
	}
}

func (e *engine) rescan(now time.Time) {
	found, _, err := scanInterfaces(e.st.ifaces)
	if err != nil {
		e.st.log.Debug("mdns: rescan", "err", err)
		return
	}
	changed := false
	seen := make(map[int]bool, len(found))
	for _, f := range found {
		seen[f.ifi.Index] = true
		j, ok := e.ifaces[f.ifi.Index]
		if !ok {
			e.joinIface(f)
			if _, ok := e.ifaces[f.ifi.Index]; ok {
				e.st.log.Info("mdns: interface joined", "interface", f.ifi.Name)
				changed = true
			}
			continue
		}
		if !slices.Equal(j.info.addrs.v4, f.addrs.v4) || !slices.Equal(j.info.addrs.v6, f.addrs.v6) {
			changed = true
			j.mute6 = false
		}
		j.info = f
	}
	for idx, j := range e.ifaces {
		if !seen[idx] {
			e.conn.leave(&j.info.ifi, j.ok4, j.ok6)
			delete(e.ifaces, idx)
			e.st.log.Info("mdns: interface left", "interface", j.info.ifi.Name)
		}
	}
	e.publishIfaces()
	if changed {
		e.announceLeft, e.nextAnnounce = announceCount, now
		e.nextQuery, e.queryGap = now, firstQueryGap
	}
}

func allKinds() kinds {
	var k kinds
	for x := range numKinds {
		k.add(x)
	}
	return k
}

func (e *engine) announce(now time.Time) {
	k := allKinds()
	for idx, j := range e.ifaces {
		for _, v6 := range []bool{false, true} {
			if e.sendResponse(j, v6, k, 0, false) {
				for x := range numKinds {
					e.lastMcast[mcastKey{idx, v6, x}] = now
				}
			}
		}
	}
}

// sendResponse multicasts a response on one interface and family; it
// reports whether a packet went out.
func (e *engine) sendResponse(j *joined, v6 bool, answers, additional kinds, goodbye bool) bool {
	if !j.canSend(v6) {
		return false
	}
	b, err := e.ours.appendResponse(e.buf[:0], answers, additional, j.info.addrs, goodbye)
	if err != nil {
		e.st.log.Debug("mdns: build response", "err", err)
		return false
	}
	e.buf = b
	if err := e.send(j, b, v6); err != nil {
		return false
	}
	e.s.answersSent.Add(1)
	return true
}

// send multicasts b on j; an IPv6 failure mutes IPv6 sends on j until its
// addresses change.
func (e *engine) send(j *joined, b []byte, v6 bool) error {
	err := e.conn.send(b, j.info.ifi.Index, v6, j.src4())
	if err != nil {
		e.s.sendErrors.Add(1)
		if v6 {
			j.mute6 = true
		}
		e.st.log.Debug("mdns: send", "interface", j.info.ifi.Name, "ipv6", v6, "err", err)
	}
	return err
}

func (e *engine) sendQuery(now time.Time, ptr bool, txtFor []string) {
	var known []knownPTR
	if ptr {
		for _, en := range e.table {
			left := en.ptrExp.Sub(now)
			if !en.goodbye && left > en.ptrTTL/2 {
				known = append(known, knownPTR{target: en.target, ttl: uint32(left / time.Second)})
			}
		}
	}
	slices.Sort(txtFor)
	b, err := appendQuery(e.buf[:0], e.ours.service, ptr, txtFor, known)
	if err != nil {
		e.st.log.Debug("mdns: build query", "err", err)
		return
	}
	e.buf = b
	e.lastQuery = now
	for _, j := range e.ifaces {
		for _, v6 := range []bool{false, true} {
			if !j.canSend(v6) || e.send(j, b, v6) != nil {
				continue
			}
			e.s.queriesSent.Add(1)
		}
	}
}

func (e *engine) handle(p packet, now time.Time) {
	if p.msg.OpCode != 0 {
		return
	}
	j, ok := e.ifaces[p.ifIndex]
	if !ok {
		e.s.reject("unknown_interface")
		return
	}
	if p.msg.Response {
		e.s.answersReceived.Add(1)
		if int(p.src.Port()) != e.st.port {
			e.s.reject("bad_port") // RFC 6762 §6: ignore responses not from the mDNS port
			return
		}
		e.learn(p, now)
		return
	}
	e.s.queriesReceived.Add(1)
	if int(p.src.Port()) != e.st.port {
		return // legacy unicast query (§6.7): not supported
	}
	e.answer(j, p, now)
}

// answer responds to a query received on interface j.
func (e *engine) answer(j *joined, p packet, now time.Time) {
	var ans, add kinds
	for _, q := range p.msg.Questions {
		all := q.Type == dnsmessage.TypeALL
		switch lower(q.Name) {
		case e.svcKey:
			if all || q.Type == dnsmessage.TypePTR {
				ans.add(kindPTR)
				add.add(kindSRV)
				add.add(kindTXT)
				add.add(kindA)
				add.add(kindAAAA)
			}
		case enumName:
			if all || q.Type == dnsmessage.TypePTR {
				ans.add(kindEnum)
			}
		case e.instKey:
			if all || q.Type == dnsmessage.TypeSRV {
				ans.add(kindSRV)
				add.add(kindA)
				add.add(kindAAAA)
			}
			if all || q.Type == dnsmessage.TypeTXT {
				ans.add(kindTXT)
			}
		case e.hostKey:
			if all || q.Type == dnsmessage.TypeA {
				ans.add(kindA)
				add.add(kindAAAA)
			}
			if all || q.Type == dnsmessage.TypeAAAA {
				ans.add(kindAAAA)
				add.add(kindA)
			}
		}
	}
	if ans == 0 {
		return
	}
	// Known-answer suppression (§7.1).
	half := e.ours.ttl / 2
	for _, r := range p.msg.Records {
		if r.TTL < half {
			continue
		}
		name := lower(r.Name)
		switch {
		case r.Type == dnsmessage.TypePTR && name == e.svcKey && lower(r.Target) == e.instKey:
			ans &^= 1 << kindPTR
		case r.Type == dnsmessage.TypePTR && name == enumName && lower(r.Target) == e.svcKey:
			ans &^= 1 << kindEnum
		case r.Type == dnsmessage.TypeSRV && name == e.instKey:
			ans &^= 1 << kindSRV
		case r.Type == dnsmessage.TypeTXT && name == e.instKey:
			ans &^= 1 << kindTXT
		}
	}
	// At most once per second per record and interface (§6).
	for x := range numKinds {
		if ans.has(x) && now.Sub(e.lastMcast[mcastKey{j.info.ifi.Index, p.v6, x}]) < minMulticastGap {
			ans &^= 1 << x
		}
	}
	if len(j.info.addrs.v4) == 0 {
		ans &^= 1 << kindA
	}
	if len(j.info.addrs.v6) == 0 {
		ans &^= 1 << kindAAAA
	}
	if ans == 0 {
		return
	}
	if e.sendResponse(j, p.v6, ans, add, false) {
		for x := range numKinds {
			if ans.has(x) {
				e.lastMcast[mcastKey{j.info.ifi.Index, p.v6, x}] = now
			}
		}
	}
}

// instanceKey returns the lower-case instance name if name is an instance
// of our service type (and not ours), else "".
func (e *engine) instanceKey(name string) string {
	k := lower(name)
	if k == e.instKey || len(k) <= len(e.svcKey)+1 || !strings.HasSuffix(k, e.svcKey) || k[len(k)-len(e.svcKey)-1] != '.' {
		return ""
	}
	return k
}

// clampTTL caps a record TTL: 4500 s for a verified instance, 120 s for a
// new one, so a flood of long-lived fake records cannot hold the table.
func clampTTL(ttl uint32, verified bool) time.Duration {
	limit := uint32(newRecordTTL)
	if verified {
		limit = maxRecordTTL
	}
	return time.Duration(min(ttl, limit)) * time.Second
}

// verified reports whether en was heard again at least verifyAfter after
// its first record (a real responder announces twice, 1 s apart, and
// answers refresh queries) and carries a usable node.
func (en *entry) verified(now time.Time) bool {
	return en.valid && now.Sub(en.first) >= verifyAfter
}

// victim picks the instance a new one may replace in a full table: one
// without a usable node, else an unverified one, the least recently heard
// first; nil when every instance is verified. O(table), only when full.
func (e *engine) victim(now time.Time) (key string, en *entry) {
	rank := func(x *entry) int {
		switch {
		case !x.valid:
			return 0
		case x.ptrRecv.Sub(x.first) < verifyAfter:
			return 1
		}
		return 2
	}
	for k, x := range e.table {
		r := rank(x)
		if r == 2 {
			continue
		}
		if en == nil || r < rank(en) || (r == rank(en) && x.ptrRecv.Before(en.ptrRecv)) {
			key, en = k, x
		}
	}
	return key, en
}

// learn updates the table from a response.
func (e *engine) learn(p packet, now time.Time) {
	// PTRs first, so that TXTs in the same packet find their entry.
	for _, r := range p.msg.Records {
		if r.Type != dnsmessage.TypePTR || lower(r.Name) != e.svcKey {
			continue
		}
		key := e.instanceKey(r.Target)
		if key == "" {
			continue
		}
		e.dirty = true
		en := e.table[key]
		if r.TTL == 0 {
			if en != nil {
				e.s.goodbyes.Add(1)
				en.goodbye = true
				en.ptrExp = earlier(en.ptrExp, now.Add(goodbyeGrace))
				e.st.log.Debug("mdns: goodbye", "instance", r.Target)
			}
			continue
		}
		if en == nil {
			if len(e.table) >= e.st.maxPeers {
				vk, v := e.victim(now)
				if v == nil {
					e.s.reject("table_full")
					if ok, n := e.warn.Allow("\x00table_full"); ok {
						e.st.log.Warn("mdns: table full of verified instances, dropping a new one",
							"instance", r.Target, "from", p.src, "max_peers", e.st.maxPeers, "suppressed", n)
					}
					continue
				}
				delete(e.table, vk)
				e.s.evicted.Add(1)
				if ok, n := e.warn.Allow("\x00evicted"); ok {
					e.st.log.Warn("mdns: table full, evicted the least recently heard unverified instance",
						"evicted", v.target, "for", r.Target, "from", p.src, "max_peers", e.st.maxPeers, "suppressed", n)
				}
			}
			en = &entry{target: r.Target, first: now, jitterPct: rand.Float64() * refreshJitterPct}
			e.table[key] = en
			e.st.log.Debug("mdns: instance seen", "instance", r.Target, "from", p.src)
		}
		ttl := clampTTL(r.TTL, en.verified(now))
		en.ptrRecv, en.ptrTTL, en.ptrExp = now, ttl, now.Add(ttl)
		en.ptrStage, en.goodbye, en.asks = 0, false, 0
	}
	for _, r := range p.msg.Records {
		if r.Type != dnsmessage.TypeTXT {
			continue
		}
		key := e.instanceKey(r.Name)
		en := e.table[key]
		if key == "" || en == nil {
			continue
		}
		e.dirty = true
		if r.TTL == 0 {
			if en.hasTXT {
				en.txtExp = earlier(en.txtExp, now.Add(goodbyeGrace))
			}
			continue
		}
		ttl := clampTTL(r.TTL, en.verified(now))
		en.hasTXT, en.txtRecv, en.txtTTL, en.txtExp = true, now, ttl, now.Add(ttl)
		en.txtStage, en.valid = 0, false
		node, v, hasNode, hasV := txtNode(r.Text)
		if hasV && v != "1" {
			e.s.reject("version")
			continue
		}
		peer, err := discovery.ParseNode(node)
		if !hasNode || err != nil {
			e.s.reject("bad_node")
			if ok, n := e.warn.Allow(p.src.Addr().String()); ok {
				e.st.log.Warn("mdns: instance without a valid node= TXT key", "instance", r.Name, "from", p.src,
					"node", node, "suppressed", n)
			}
			continue
		}
		en.peer, en.valid = peer, true
	}
}

// maybeReport reports what changed in the peer set, if anything did.
func (e *engine) maybeReport(now time.Time) {
	if !e.dirty {
		return
	}
	e.dirty = false
	// Two live instances may carry one name (a node restarted on another
	// port while its old records live out their TTL): the most recently
	// heard wins, then the lower address, so the choice does not flap.
	best := make(map[string]*entry, len(e.table))
	for _, en := range e.table {
		if !en.valid || !en.hasTXT || !now.Before(en.ptrExp) {
			continue
		}
		if en.peer.Name == e.self.Name || (en.peer.Addr != "" && en.peer.Addr == e.self.Addr) {
			continue
		}
		k := en.peer.Key()
		if b := best[k]; b == nil || en.txtRecv.After(b.txtRecv) ||
			(en.txtRecv.Equal(b.txtRecv) && en.peer.Addr < b.peer.Addr) {
			best[k] = en
		}
	}
	peers := make([]discovery.Peer, 0, len(best))
	for _, en := range best {
		peers = append(peers, en.peer)
	}
	slices.SortFunc(peers, func(a, b discovery.Peer) int { return strings.Compare(a.Name, b.Name) })
	if slices.Equal(peers, e.last) {
		return
	}
	e.last = peers
	e.s.peers.Store(&peers)
	e.set.Report(peers)
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

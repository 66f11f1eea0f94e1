package gossip

import (
	"cmp"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
)

// Quiet peers: a node's heartbeats are needed to discover it; once the mesh
// holds a live link to it (Linked), its liveness is the mesh's job and the
// heartbeats only repeat what the table knows. Yet each one costs a wake-up
// of the reader (on a small VM about 150 us of CPU in the Go runtime for a
// 100-byte datagram), and a node hears N/Interval of them: at 100 nodes 67
// per second, three quarters of the node's idle CPU. So the socket gets a
// kernel filter (classic BPF, Linux) that drops the exact heartbeat of each
// linked node but one in quietSample, chosen at random: newcomers, changed
// heartbeats (a restart elsewhere, a new secret) and everything else still
// wake the reader at once. A linked row does not expire while linked (its
// LastSeen moves with the sampled heartbeats); when the link goes, it is
// heard in full again and its expiry starts afresh. Where the filter
// cannot be attached (other systems), every heartbeat is read as before.

// quietSample: one heartbeat in quietSample of a linked node passes the
// filter (the kernel's random number), so the table still sees the node
// about every 64 intervals (96 s by default). Nothing depends on it but
// the entry's LastSeen; it keeps the filter from being a black hole. At
// 100 nodes it is one wake-up a second. A power of two.
const quietSample = 64

// maxFilterInsns bounds the program. The kernel takes at most 4096
// instructions (BPF_MAXINSNS), and charges a filter against the socket's
// option memory (net.core.optmem_max, 128 KiB on recent kernels, 20 KiB on
// old ones) at about 54 bytes per instruction once translated: 2,048 fit
// under 128 KiB: about 150 unsigned heartbeats of 20-byte node fields (13
// instructions each), about 220 signed ones (9 each). Where the kernel
// refuses a program for memory, the table tries again with half as many
// instructions. Linked rows beyond the bound are simply not filtered.
const maxFilterInsns = 2048

// macTailBytes: a signed heartbeat is told apart by its length and the
// last 16 hex digits of its HMAC (64 bits); an unsigned one by its length
// and every byte of its node field, up to maxCompareWords words.
const (
	macTailBytes    = 16
	maxCompareWords = 64
	udpHeaderLen    = 8 // a UDP socket's filter sees the UDP header first
)

// quietFilter builds the socket filter that drops, but one in quietSample,
// the datagrams equal to one of pkts (heartbeats, each longer than Prefix).
// signed says the heartbeats end with an HMAC. Heartbeats that do not fit
// in maxInsns instructions are left out; n says how many are in.
func quietFilter(pkts [][]byte, signed bool, maxInsns int) (prog []bpf.Instruction, n int) {
	pkts = slices.Clone(pkts)
	slices.SortStableFunc(pkts, func(a, b []byte) int { return cmp.Compare(len(a), len(b)) })
	const tailLen = 7 // the sample and the two returns, after the groups
	var toSample []int
	for i := 0; i < len(pkts); {
		l := len(pkts[i])
		// A group: the heartbeats of length l. "if len != l, skip it".
		head := len(prog)
		prog = append(prog,
			bpf.LoadExtension{Num: bpf.ExtLen},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(udpHeaderLen + l), SkipTrue: 1},
			bpf.Jump{}) // Skip set below
		for ; i < len(pkts) && len(pkts[i]) == l; i++ {
			offs := compareOffsets(l, signed)
			if len(prog)+2*len(offs)+1+tailLen > maxInsns {
				break
			}
			// "if any word differs, go to the next heartbeat; else sample".
			for k, off := range offs {
				prog = append(prog,
					bpf.LoadAbsolute{Off: uint32(udpHeaderLen + off), Size: 4},
					bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(pkts[i][off:]),
						SkipFalse: uint8(2*(len(offs)-k) - 1)})
			}
			toSample = append(toSample, len(prog))
			prog = append(prog, bpf.Jump{})
			n++
		}
		if len(prog) == head+3 { // out of room before its first heartbeat
			prog = prog[:head]
			break
		}
		prog[head+2] = bpf.Jump{Skip: uint32(len(prog) - (head + 3))}
		if i < len(pkts) && len(pkts[i]) == l { // out of room within it
			break
		}
	}
	prog = append(prog, bpf.RetConstant{Val: math.MaxUint32}) // not a quiet heartbeat: keep
	sample := len(prog)
	for _, j := range toSample {
		prog[j] = bpf.Jump{Skip: uint32(sample - (j + 1))}
	}
	prog = append(prog,
		bpf.LoadExtension{Num: bpf.ExtRand},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: quietSample - 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipFalse: 1},
		bpf.RetConstant{Val: math.MaxUint32},
		bpf.RetConstant{Val: 0})
	return prog, n
}

// compareOffsets are the payload offsets of the 4-byte words compared for
// a heartbeat of length l: the node field (after Prefix) or, signed, the
// HMAC's last macTailBytes; at most maxCompareWords words, from the end.
// The last word ends at l (it may overlap the one before).
func compareOffsets(l int, signed bool) []int {
	from := len(Prefix)
	if signed {
		from = max(from, l-macTailBytes)
	}
	from = max(from, l-4*maxCompareWords)
	if l-from < 4 {
		from = l - 4 // Prefix is longer than 4: still inside the packet
	}
	var offs []int
	for off := from; off+4 < l; off += 4 {
		offs = append(offs, off)
	}
	return append(offs, l-4)
}

// The filter is updated filterSettle after the last change, or
// filterMaxWait after the first one if changes keep coming. An update is
// O(N) to build, and the kernel translates and compiles the program (a
// millisecond or more for 100 peers, on every node): while a cluster forms,
// links come up for a second or more, and one update after them is enough.
// Meanwhile the new peers' heartbeats are simply read.
//
// A peer leaving the filter (its link went) is another matter: until the
// filter follows, its heartbeats are still dropped, and a partition that
// heals in that time is not heard (the heal of a 100-host partition took 8 s
// when this waited like the rest). It is followed filterUnlinked after.
const (
	filterSettle   = time.Second
	filterMaxWait  = 5 * time.Second
	filterUnlinked = 200 * time.Millisecond
)

// quietState is the filter's bookkeeping (table goroutine).
type quietState struct {
	dirty            bool      // the linked rows or their heartbeats changed
	first, last, due time.Time // first and last change since the last update; when it is scheduled
	unlinked         time.Time // first unlinking since the last update (zero: none)
	attached         bool      // a filter is on the socket
	off              bool      // the socket takes no filter (unsupported): stop trying
	maxInsns         int       // budget; halved when the kernel lacks the memory
}

// mark notes a change the filter must follow.
func (q *quietState) mark() {
	now := time.Now()
	if !q.dirty {
		q.dirty, q.first = true, now
	}
	q.last = now
}

// schedule returns when the update is due and whether that moved since the
// last call (the table loop then resets its timer).
func (q *quietState) schedule() (time.Time, bool) {
	if !q.dirty {
		return time.Time{}, false
	}
	due := q.last.Add(filterSettle)
	if m := q.first.Add(filterMaxWait); m.Before(due) {
		due = m
	}
	if u := q.unlinked.Add(filterUnlinked); !q.unlinked.IsZero() && u.Before(due) {
		due = u
	}
	if due.Equal(q.due) {
		return due, false
	}
	q.due = due
	return due, true
}

// Linked tells gossip that the caller holds (up) or lost (!up) a live link
// to the node named name ("name@host", the mesh's name), so that its
// liveness is watched elsewhere: while linked, its heartbeats are dropped
// in the kernel but one in 64 (Linux) and its entry does not expire; when
// the link goes, its heartbeats are read again and its expiry starts from
// then. It does not block; the filter follows filterSettle after the
// last change (filterMaxWait at most), filterUnlinked after an unlinking.
func (g *Gossip) Linked(name string, up bool) {
	g.linkMu.Lock()
	g.linkNotes[name] = up
	g.linkMu.Unlock()
	select {
	case g.linkWake <- struct{}{}:
	default:
	}
}

// applyLinkNotes applies what Linked noted (table goroutine). The linked
// set is bounded like the table (MaxPeers): names beyond it stay loud.
func (g *Gossip) applyLinkNotes() {
	g.linkMu.Lock()
	notes := g.linkNotes
	g.linkNotes = make(map[string]bool)
	g.linkMu.Unlock()
	now := time.Now()
	g.mu.Lock()
	for name, up := range notes {
		switch {
		case up && !g.linkedNames[name] && len(g.linkedNames) < g.s.maxPeers:
			g.linkedNames[name] = true
		case !up:
			delete(g.linkedNames, name)
		}
		node, ok := g.byName[name]
		r := g.table[node]
		if !ok || r == nil || r.linked == g.linkedNames[name] {
			continue
		}
		g.listOf(r).Remove(r.elem)
		r.linked = !r.linked
		if !r.linked {
			// While linked it was heard one heartbeat in 64: the end of
			// the link counts as a hearing. Its expiry counts from now,
			// and it is revived (apply) only after a real silence from
			// now: a peer still announcing after a Disconnect or a false
			// nodedown is not redialled by us on its next heartbeat.
			r.LastSeen = now
		}
		r.elem = g.listOf(r).PushFront(r)
		g.quiet.mark()
		if !r.linked && g.quiet.unlinked.IsZero() {
			g.quiet.unlinked = now
		}
	}
	g.linked.Store(uint64(len(g.linkedNames)))
	g.mu.Unlock()
}

// refilter attaches a filter for the heartbeats of the linked rows (table
// goroutine), or a pass-all one when there are none and one was attached.
func (g *Gossip) refilter() {
	q := &g.quiet
	q.dirty, q.first, q.due, q.unlinked = false, time.Time{}, time.Time{}, time.Time{}
	if q.off {
		return
	}
	var pkts [][]byte
	g.mu.Lock()
	for e := g.linkedRows.Front(); e != nil; e = e.Next() {
		if r := e.Value.(*row); len(r.pkt) > len(Prefix) {
			pkts = append(pkts, r.pkt)
		}
	}
	g.mu.Unlock()
	if len(pkts) > 0 {
		// Our own heartbeats come back (multicast loopback) only to be
		// ignored: quiet too, while there is a filter at all.
		pkts = append(pkts, g.pkt)
		if g.erlPkt != nil {
			pkts = append(pkts, g.erlPkt)
		}
	}
	if len(pkts) == 0 && !q.attached {
		return
	}
	for {
		prog, n := []bpf.Instruction{bpf.RetConstant{Val: math.MaxUint32}}, 0
		if len(pkts) > 0 {
			prog, n = quietFilter(pkts, g.s.keyring.Len() > 0, q.maxInsns)
		}
		raw, err := bpf.Assemble(prog)
		if err == nil {
			err = g.conn.c.SetFilter(raw)
		}
		switch {
		case err == nil:
			q.attached = len(pkts) > 0
			g.quietN.Store(uint64(n))
			g.filterUpdates.Add(1)
			g.s.log.Debug("gossip: heartbeat filter updated", "quiet", n, "linked", len(pkts), "instructions", len(prog))
			return
		case errors.Is(err, syscall.ENOMEM) && q.maxInsns > 64:
			q.maxInsns /= 2
			g.s.log.Info("gossip: the kernel refused the heartbeat filter for memory (net.core.optmem_max); trying a smaller one",
				"instructions", len(prog), "next", q.maxInsns)
		case errors.Is(err, errors.ErrUnsupported):
			q.off = true
			g.s.log.Debug("gossip: no heartbeat filter on this system: every heartbeat of a linked peer is read", "err", err)
			return
		default:
			if ok, suppressed := g.opWarn.Allow("filter"); ok {
				g.s.log.Warn("gossip: cannot attach the heartbeat filter: every heartbeat is read", "err", err, "suppressed", suppressed)
			}
			q.attached = true // unknown state: the next update tries again
			g.quietN.Store(0)
			return
		}
	}
}

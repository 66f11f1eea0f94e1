package mesh

import (
	"crypto/cipher"
	"encoding/binary"
	"math"
	"sync"
)

// sendQueue is a link's outbound queue: Send appends to it under a short
// lock, the link's writer takes a batch at a time (take) and writes it.
// A member whose link flaps keeps its queue: the next link adopts it (and
// rekeys what is in it, rekey).
//
// On a sealed link the queue holds the frame stream already cut into
// records, each with its record number reserved in queue order:
//
//   - small frames are appended to the open plaintext item (cur), which the
//     writer seals in place as one record (so a burst of small messages
//     costs one copy into the queue and one seal, no allocation per
//     message);
//   - a message body of directSeal bytes or more is sealed by Send itself,
//     from the caller's slice into records of its own: the encryption
//     replaces the copy Send makes anyway, and runs on the sender's
//     goroutine. Its frame header ends the plaintext item before it.
//
// Without a record layer (TLS, wire version 1) items hold plain frames.
type sendQueue struct {
	wake chan struct{} // cap 1: the writer has work (sent when the queue becomes non-empty)

	mu        sync.Mutex
	items     []*qitem // closed items, in order
	cur       *qitem   // the open plaintext item, after items; nil = none
	n         int      // messages queued (items and cur): at most limit
	limit     int
	room      chan struct{} // closed when the writer takes the queue; nil: nobody waits
	aead      cipher.AEAD   // the key records are sealed with; nil: plain frames
	ctr       uint64        // the next record number to reserve
	taken     []*qitem      // spare slice for take
	lastPlain int           // plaintext bytes of the last plaintext item: the size of the next
}

// qitem is a run of the frame stream.
type qitem struct {
	// buf: plain: recordHeaderLen bytes of room for a record header, then
	// frames, with capacity for the tag behind them; sealed: records.
	buf    []byte
	sealed bool
	aead   cipher.AEAD   // sealed: the key buf was sealed with
	sctr   uint64        // sealed: the record number buf was sealed from
	ctr    uint64        // the first record number reserved for this item under q.aead
	ready  chan struct{} // sealed: closed once buf holds the records
	err    error         // errCounter: no record number left
	msgs   int           // messages in buf (not the writer's own frames)
	bytes  int           // their payload bytes
	pooled bool          // buf came from recFree (getRecBuf)
}

// directSeal is the smallest message body Send seals into records of its
// own. Below it, copying into the open plaintext item and sharing a record
// is cheaper than a record of its own (20 bytes and one more seal and open).
const directSeal = 16 << 10

// The writer's batch: it takes from the queue at most writeBatch messages
// or writeBatchBytes at once (past the bound by one item at most).
const (
	writeBatch      = 256
	writeBatchBytes = 1 << 20
)

// Buffers of items come from free lists by size class: class k holds
// recordHeaderLen + 2^k + sealOverhead bytes (a record of up to 2^k bytes of
// plaintext, or a plaintext item of that size with room for its header and
// tag), k from minClass to log2(maxRecordPlain). The writer returns them
// once written.
const (
	minClass    = 9 // 512 bytes
	maxClass    = 17
	recOverhead = recordHeaderLen + sealOverhead
)

// recFree are the free buffers by class: stacks, so that the buffer
// reused next is the one written last (still in cache, where a sync.Pool's
// buffer taken on another processor is the oldest), of at most freeBytes
// per class (a writer's batch, writeBatchBytes, and more: what one batch
// frees serves the next). Buffers beyond go to a sync.Pool (recPools),
// which the garbage collector empties: an idle node keeps at most 18 MiB.
var (
	recFree [maxClass + 1]struct {
		mu   sync.Mutex
		bufs [][]byte
	}
	recPools [maxClass + 1]sync.Pool
)

const freeBytes = 2 << 20

// classOf is the smallest class holding n bytes of plaintext; -1: larger
// than a record.
func classOf(n int) int {
	if n > 1<<maxClass {
		return -1
	}
	k := minClass
	for 1<<k < n {
		k++
	}
	return k
}

// getRecBuf returns an empty buffer with room for n bytes of plaintext and a
// record's overhead, pooled when n fits in a record.
func getRecBuf(n int) (buf []byte, pooled bool) {
	k := classOf(n)
	if k < 0 {
		return make([]byte, 0, n+recOverhead), false
	}
	f := &recFree[k]
	f.mu.Lock()
	if n := len(f.bufs); n > 0 {
		b := f.bufs[n-1]
		f.bufs[n-1] = nil
		f.bufs = f.bufs[:n-1]
		f.mu.Unlock()
		return b, true
	}
	f.mu.Unlock()
	if b, ok := recPools[k].Get().(*[]byte); ok {
		return (*b)[:0], true
	}
	return make([]byte, 0, 1<<k+recOverhead), true
}

func putRecBuf(b []byte) {
	c := cap(b) - recOverhead
	if k := classOf(c); k >= 0 && 1<<k == c {
		f := &recFree[k]
		f.mu.Lock()
		if len(f.bufs) < freeBytes>>k {
			f.bufs = append(f.bufs, b[:0])
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		b = b[:0]
		recPools[k].Put(&b)
	}
}

func newSendQueue(limit int, aead cipher.AEAD) *sendQueue {
	return &sendQueue{wake: make(chan struct{}, 1), limit: limit, aead: aead}
}

// records is the number of records of a plaintext of n bytes.
func records(n int) uint64 {
	if n <= maxRecordPlain {
		return 1
	}
	return uint64((n + maxRecordPlain - 1) / maxRecordPlain)
}

// reserve reserves k record numbers in queue order. Called with q.mu held.
func (q *sendQueue) reserve(it *qitem, k uint64) {
	if q.ctr > math.MaxUint64-k {
		it.err = errCounter
		return
	}
	it.ctr = q.ctr
	q.ctr += k
}

// cutLocked closes the open plaintext item: its record number is reserved
// now, so that what comes behind it is numbered after it.
func (q *sendQueue) cutLocked() {
	it := q.cur
	if it == nil {
		return
	}
	q.cur = nil
	q.lastPlain = len(it.buf) - recordHeaderLen
	if q.aead != nil {
		q.reserve(it, records(q.lastPlain))
	}
	q.items = append(q.items, it)
}

// appendLocked appends a frame (type typ, body p) to the open plaintext
// item, opening one (or cutting the current one when the frame would not
// fit in its record).
func (q *sendQueue) appendLocked(typ frameType, p []byte, msg bool) {
	need := frameHeaderLen + len(p)
	if q.cur != nil && len(q.cur.buf)+need > recordHeaderLen+maxRecordPlain {
		q.cutLocked()
	}
	if q.cur != nil && cap(q.cur.buf)-len(q.cur.buf) < need+sealOverhead {
		q.growLocked(need)
	}
	if q.cur == nil {
		q.openLocked(need)
	}
	it := q.cur
	it.buf = binary.BigEndian.AppendUint32(it.buf, uint32(1+len(p)))
	it.buf = append(it.buf, byte(typ))
	it.buf = append(it.buf, p...)
	if msg {
		it.msgs++
		it.bytes += len(p)
	}
}

// openLocked opens a plaintext item for at least need bytes, sized like the
// last one (a busy queue fills whole records).
func (q *sendQueue) openLocked(need int) {
	it := &qitem{}
	it.buf, it.pooled = getRecBuf(max(need, q.lastPlain))
	it.buf = it.buf[:recordHeaderLen]
	q.cur = it
}

// growLocked moves the open plaintext item to a buffer of the next classes
// with room for need more bytes.
func (q *sendQueue) growLocked(need int) {
	it := q.cur
	n := len(it.buf) - recordHeaderLen
	size := max(2*n, n+need)
	if n+need <= maxRecordPlain {
		size = min(size, maxRecordPlain)
	}
	nb, pooled := getRecBuf(size)
	nb = append(nb, it.buf...)
	if it.pooled {
		putRecBuf(it.buf)
	}
	it.buf, it.pooled = nb, pooled
}

// signalLocked wakes the writer if the queue was empty.
func (q *sendQueue) signalLocked(wasEmpty bool) {
	if wasEmpty {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

func (q *sendQueue) emptyLocked() bool { return q.cur == nil && len(q.items) == 0 }

// push queues message p, or returns a channel closed when there may be
// room. A body of directSeal bytes or more on a sealed queue is sealed here,
// outside the lock, into records numbered in queue order.
func (q *sendQueue) push(p []byte) (wait chan struct{}) {
	q.mu.Lock()
	if q.n >= q.limit {
		if q.room == nil {
			q.room = make(chan struct{})
		}
		wait = q.room
		q.mu.Unlock()
		return wait
	}
	q.n++
	wasEmpty := q.emptyLocked()
	aead := q.aead
	if aead == nil || len(p) < directSeal {
		q.appendLocked(frameMessage, p, true)
		q.signalLocked(wasEmpty)
		q.mu.Unlock()
		return nil
	}
	// The frame header ends the plaintext before the body's records.
	var hdr [frameHeaderLen]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(1+len(p)))
	hdr[4] = byte(frameMessage)
	q.appendHeaderLocked(hdr[:])
	q.cutLocked()
	it := &qitem{sealed: true, aead: aead, msgs: 1, bytes: len(p), ready: make(chan struct{})}
	q.reserve(it, records(len(p)))
	it.sctr = it.ctr
	q.items = append(q.items, it)
	q.signalLocked(wasEmpty)
	q.mu.Unlock()

	if it.err == nil {
		it.buf = sealRecords(it, aead, p)
	}
	close(it.ready)
	return nil
}

// appendHeaderLocked appends raw frame bytes (a frame header) to the open
// plaintext item.
func (q *sendQueue) appendHeaderLocked(b []byte) {
	if q.cur != nil && len(q.cur.buf)+len(b) > recordHeaderLen+maxRecordPlain {
		q.cutLocked()
	}
	if q.cur != nil && cap(q.cur.buf)-len(q.cur.buf) < len(b)+sealOverhead {
		q.growLocked(len(b))
	}
	if q.cur == nil {
		q.openLocked(len(b))
	}
	q.cur.buf = append(q.cur.buf, b...)
}

// sealRecords seals p into records numbered from it.sctr.
func sealRecords(it *qitem, aead cipher.AEAD, p []byte) []byte {
	var out []byte
	if records(len(p)) == 1 {
		out, it.pooled = getRecBuf(len(p))
	} else {
		out = make([]byte, 0, sealedLen(len(p)))
	}
	return appendSealed(out, aead, it.sctr, p)
}

// sealedLen is the length of p bytes sealed into records.
func sealedLen(p int) int { return p + int(records(p))*recOverhead }

// appendSealed appends p to out sealed into records of at most
// maxRecordPlain bytes, numbered from ctr.
func appendSealed(out []byte, aead cipher.AEAD, ctr uint64, p []byte) []byte {
	var nonce [12]byte
	for len(p) > 0 {
		m := min(len(p), maxRecordPlain)
		h := len(out)
		out = binary.BigEndian.AppendUint32(out, uint32(m+sealOverhead))
		out = aead.Seal(out, recordNonce(&nonce, ctr), p[:m], out[h:])
		p, ctr = p[m:], ctr+1
	}
	return out
}

// pushFrame queues a frame of the writer's own (tick, peers, goodbye):
// never refused, not counted against the limit.
func (q *sendQueue) pushFrame(typ frameType, body []byte) {
	q.mu.Lock()
	q.appendLocked(typ, body, false)
	q.mu.Unlock()
}

// take removes the items at the head of the queue, in order, up to
// writeBatch messages or writeBatchBytes (the writer's batch; what it
// takes is out of the queue, so the bound on what is queued and being
// written stays near SendQueue messages), and wakes the Sends waiting for
// room. If items remain, the writer is woken again. The slice is valid
// until the next take.
func (q *sendQueue) take() []*qitem {
	q.mu.Lock()
	k, msgs, size := 0, 0, 0
	for k < len(q.items) && msgs < writeBatch && size < writeBatchBytes {
		it := q.items[k]
		msgs += it.msgs
		if it.sealed {
			size += it.bytes // buf may be being sealed
		} else {
			size += len(it.buf)
		}
		k++
	}
	if k == len(q.items) && msgs < writeBatch && size < writeBatchBytes && q.cur != nil {
		msgs += q.cur.msgs
		q.cutLocked()
		k++
	}
	its := append(q.taken[:0], q.items[:k]...)
	rest := copy(q.items, q.items[k:])
	clear(q.items[rest:])
	q.items = q.items[:rest]
	q.taken = its
	q.n -= msgs
	if q.room != nil {
		close(q.room)
		q.room = nil
	}
	if !q.emptyLocked() {
		q.signalLocked(true)
	}
	q.mu.Unlock()
	return its
}

// rekey makes the queue's records those of a new link (its send key aead,
// numbered from 0): what was queued for the broken link, sealed or not,
// is numbered again in order, and sealed items are marked for the writer
// to open with their old key and seal again (recover). Called by the new
// link's writer once the old one is gone.
func (q *sendQueue) rekey(aead cipher.AEAD) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.aead = aead
	q.ctr = 0
	if aead == nil {
		return
	}
	for _, it := range q.items {
		if it.sealed {
			// Its records: as many as its plaintext needs (the writer
			// opens them before they are numbered again).
			q.reserve(it, uint64(recordsOfSealed(it)))
		} else {
			q.reserve(it, records(len(it.buf)-recordHeaderLen))
		}
	}
}

// recordsOfSealed is the number of records of a sealed item, from its
// message size (its records were cut at maxRecordPlain).
func recordsOfSealed(it *qitem) int { return int(records(it.bytes)) }

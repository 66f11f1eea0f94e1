package mesh

import (
	"bufio"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	readBufSize  = 64 << 10
	writeBufSize = 64 << 10
)

// link is one authenticated connection to a peer. It has a reader and a
// writer goroutine; the first error on either closes it (fail).
type link struct {
	m        *Mesh
	peer     hello
	outbound bool
	since    time.Time
	maxSend  int
	conn     net.Conn // TLS or raw
	raw      net.Conn // the TCP connection

	q          *sendQueue    // outbound messages (queue.go)
	wake       chan struct{} // peersDirty was set
	peersDirty atomic.Bool
	// What to tell the peer about our links (guarded by m.mu): the whole
	// list once when the link comes up, then only the links added since
	// (a delta: receivers only add). Sending the whole list to every link
	// on each new link cost O(N^2) entries per node at formation.
	peersFull  bool
	peersNew   []peerInfo
	stop       chan struct{} // graceful close requested (Close)
	stopOnce   sync.Once
	done       chan struct{} // closed by fail
	failOnce   sync.Once
	readerDone chan struct{}

	removed bool   // guarded by m.mu: out of the table, NodeDown reported (or the member held, flap.go)
	dialled string // the address we dialled; "" inbound (set by admit)

	noFlap     atomic.Bool   // the failure is a verdict on the member (protocol error, detector's dead)
	prev       *link         // set by admit: the broken link whose queue this one adopted
	writerDone chan struct{} // closed when writeLoop returns
}

func newLink(m *Mesh, peer hello, conn, raw net.Conn, outbound bool) *link {
	return &link{
		m:          m,
		peer:       peer,
		outbound:   outbound,
		since:      time.Now(),
		maxSend:    min(m.cfg.MaxMessageSize, int(min(peer.MaxMessage, MaxMessageSizeLimit))),
		conn:       conn,
		raw:        raw,
		q:          newSendQueue(m.cfg.SendQueue, peer.sess.sendAEAD()),
		wake:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
	}
}

func (l *link) info() Link {
	return Link{Node: l.peer.Name, Addr: l.peer.Addr, Incarnation: l.peer.Incarnation,
		Since: l.since, Outbound: l.outbound, Tags: decodeTags(l.peer.Tags)}
}

// start runs the reader and writer. The caller is a goroutine counted in
// m.wg, so the Add cannot race with Close's Wait.
func (l *link) start() {
	if l.m.probes != nil {
		setUserTimeout(l.raw, l.m.cfg.LinkTimeout)
		// No TCP keepalive either (Go's default probes every 15 s): the
		// detector watches the member, TCP_USER_TIMEOUT a stall with
		// data. Keepalives on every link made the steady cost grow with
		// N (about 430 B/s sent per node at 50 nodes).
		if tc, ok := l.raw.(*net.TCPConn); ok {
			tc.SetKeepAlive(false)
		}
	}
	l.m.wg.Add(2)
	go l.readLoop()
	go l.writeLoop()
}

// fail closes the link once and reports it down (unless it was already
// taken out of the table). It must not be called with m.mu held.
func (l *link) fail(r Reason) {
	l.failOnce.Do(func() {
		close(l.done)
		// Report before closing, so NodeDown is queued here before the
		// peer can observe the close.
		l.m.linkDown(l, r)
		l.raw.Close()
	})
}

// shutdown asks the writer to send goodbye and close.
func (l *link) shutdown() {
	l.stopOnce.Do(func() { close(l.stop) })
}

// Link ticks. Without probes a link is the liveness signal: a tick every
// LinkTimeout/4 on an idle link, and LinkTimeout of silence fails it. Once
// the peer is a member of the failure detector (it probes, we heard it),
// membership comes from the detector and the link only has to notice a
// stall: no ticks at all (the steady cost per node is then the probing,
// constant in N), no silence limit, and data not acknowledged for
// LinkTimeout fails the connection (TCP_USER_TIMEOUT on Linux, and the
// write deadline).
//
// The two ends switch at different moments, safely: the reader drops its
// limit once the peer is a member of our detector; the writer stops
// ticking only once the peer has answered our ping, which it does only
// when we are a member of its detector, so its reader has dropped its
// limit already.
func (l *link) readSilence() time.Duration {
	if l.m.probes != nil && l.m.probes.member(l.peer.Name, l.peer.Incarnation) {
		return 0
	}
	return l.m.cfg.LinkTimeout
}

func (l *link) needTicks() bool {
	return l.m.probes == nil || !l.m.probes.acked(l.peer.Name, l.peer.Incarnation)
}

func linkReason(err error) Reason {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ReasonTimeout
	}
	if unreachable(err) {
		// The network lost the peer (a cut cable ends in "no route to
		// host" once ARP gives up): a silent failure, not a close.
		return ReasonTimeout
	}
	return ReasonClosed
}

// deadlineReader refreshes the read deadline before every read: a link from
// which nothing arrives for d() fails with a timeout (0: no limit).
type deadlineReader struct {
	c net.Conn
	d func() time.Duration
}

func (r *deadlineReader) Read(p []byte) (int, error) {
	for {
		if d := r.d(); d > 0 {
			r.c.SetReadDeadline(time.Now().Add(d))
		} else {
			r.c.SetReadDeadline(time.Time{})
		}
		n, err := r.c.Read(p)
		var ne net.Error
		if n == 0 && errors.As(err, &ne) && ne.Timeout() && r.d() == 0 {
			// The limit was lifted while we waited (the peer became
			// a member of the detector): not a failure.
			continue
		}
		return n, err
	}
}

// deadlineWriter sets the write deadline before every write of at most
// writeChunk bytes: a peer that does not drain a chunk for d fails the link
// with a timeout, while a slow but steady peer survives large messages. A
// non-zero until is an absolute deadline instead (graceful close).
type deadlineWriter struct {
	c     writeConn
	d     time.Duration
	until time.Time
}

// writeConn is what deadlineWriter writes to: a net.Conn.
type writeConn interface {
	io.Writer
	SetWriteDeadline(time.Time) error
}

// writeChunk is 144 KiB: two sealed 64 KiB messages (each its frame
// header's record and its body's record, 65,581 bytes) go out in one write.
// 72 KiB (one such message per write) cost 4-8% more CPU per message and
// a lower rate in 5 interleaved rounds: a write system call and a wake-up
// of the reader more per message; 256 and 512 KiB measured the same as
// 144. A peer must drain a chunk within the deadline (LinkTimeout): 29
// KB/s at the default 5 s.
const writeChunk = 144 << 10

func (w *deadlineWriter) setDeadline() {
	dl := w.until
	if dl.IsZero() {
		dl = time.Now().Add(w.d)
	}
	w.c.SetWriteDeadline(dl)
}

// writeBuffers writes bufs, in groups of at most writeChunk bytes (a
// larger buffer alone, in chunks) with one system call (writev) per group
// and a fresh deadline before each. It consumes the slices in bufs.
func (w *deadlineWriter) writeBuffers(bufs [][]byte) error {
	for len(bufs) > 0 {
		n, size := 1, len(bufs[0])
		for n < len(bufs) && size+len(bufs[n]) <= writeChunk {
			size += len(bufs[n])
			n++
		}
		if n == 1 {
			if _, err := w.Write(bufs[0]); err != nil {
				return err
			}
		} else {
			w.setDeadline()
			nb := net.Buffers(bufs[:n])
			if _, err := nb.WriteTo(w.c); err != nil {
				return err
			}
		}
		bufs = bufs[n:]
	}
	return nil
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		w.setDeadline()
		k, err := w.c.Write(p[n:min(len(p), n+writeChunk)])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (l *link) readLoop() {
	m := l.m
	defer m.wg.Done()
	defer close(l.readerDone)
	var src io.Reader = &deadlineReader{c: l.conn, d: l.readSilence}
	if s := l.peer.sess; s != nil && s.recv != nil {
		src = newOpenReader(src, s.recv)
	} else {
		src = bufio.NewReaderSize(src, readBufSize)
	}
	fr := frameReader{r: src, limit: m.cfg.MaxMessageSize + 1}
	for {
		typ, body, err := fr.next()
		if err != nil {
			switch {
			case errors.Is(err, errTampered):
				l.protocolError(HSTampered, err)
			case errors.Is(err, errFrameTooLarge):
				l.protocolError(HSFrameTooLarge, err)
			case errors.Is(err, errMalformed):
				l.protocolError(HSMalformed, err)
			default:
				// An EOF after the kernel aborted the connection itself
				// (TCP_USER_TIMEOUT, set only with probes) is a stall, not
				// the peer's FIN.
				r := linkReason(err)
				if l.m.probes != nil && errors.Is(err, io.EOF) && abortedLocally(l.raw) {
					r = ReasonTimeout
				}
				l.fail(r)
			}
			return
		}
		switch typ {
		case frameTick:
		case frameMessage:
			m.st.msgsRecv.Add(1)
			m.st.bytesRecv.Add(uint64(len(body)))
			if m.cfg.OnMessage != nil {
				if body == nil {
					body = []byte{}
				}
				m.cfg.OnMessage(l.peer.Name, body)
			}
		case framePeers:
			ps, err := parsePeers(body)
			if err != nil {
				l.protocolError(HSMalformed, err)
				return
			}
			m.learnPeers(l, ps)
		case frameGoodbye:
			l.fail(ReasonLeft)
			return
		default:
			if typ <= lastHandshakeFrame {
				l.protocolError(HSUnexpectedFrame, fmt.Errorf("handshake frame %v on a link", typ))
				return
			}
			// A frame of a later version: ignored (see lastHandshakeFrame).
		}
	}
}

// protocolError closes the link after a bad frame from an authenticated peer.
func (l *link) protocolError(reason HandshakeReason, err error) {
	select {
	case <-l.done:
		return // we closed it ourselves
	default:
	}
	m := l.m
	m.st.count(&m.st.proto, string(reason))
	l.noFlap.Store(true)
	if ok, suppressed := m.warns.Allow("link:" + l.peer.Name); ok {
		m.log.Warn("mesh: protocol error, closing link", "node", l.peer.Name, "reason", reason,
			"err", err, "suppressed", suppressed)
	}
	l.fail(ReasonClosed)
}

func (l *link) writeLoop() {
	m := l.m
	defer m.wg.Done()
	defer close(l.writerDone)
	if l.prev != nil {
		// The broken link's writer must be gone before this one reads
		// the queue it shares (what it took is lost with it).
		select {
		case <-l.prev.writerDone:
		case <-l.done:
			return
		}
		l.prev = nil
	}
	q := l.q
	w := &queueWriter{q: q, dw: &deadlineWriter{c: l.conn, d: m.cfg.LinkTimeout},
		aead: l.peer.sess.sendAEAD(), st: &m.st}
	// An adopted queue holds what was queued for the broken link, under
	// its keys: number it (and recover it) for this one.
	q.rekey(w.aead)
	ticker := time.NewTicker(m.cfg.LinkTimeout / 4)
	defer ticker.Stop()
	tick := ticker.C
	wrote := false
	var err error
	for err == nil {
		select {
		case <-l.done:
			return
		case <-l.stop:
			l.goodbye(w)
			return
		case <-q.wake:
			err = w.flush()
			wrote = true
		case <-l.wake:
			if l.peersDirty.Swap(false) {
				body := appendPeers(nil, m.peersToSend(l), l.maxSend)
				if len(body) > 2 {
					q.pushFrame(framePeers, body)
					err = w.flush()
					wrote = true
				}
			}
		case <-tick:
			if !l.needTicks() {
				// The peer answers our probes, so its reader has
				// dropped its silence limit for the rest of this
				// link's life (a dead verdict closes the link): no
				// more ticks, and no more wake-ups of this goroutine
				// (at 100 hosts they were 80 per second per node).
				ticker.Stop()
				tick = nil
				break
			}
			if !wrote {
				q.pushFrame(frameTick, nil)
				err = w.flush()
			}
			wrote = false
		}
	}
	l.fail(linkReason(err))
}

// queueWriter writes what a link's queue holds: it takes a batch (take),
// seals the plaintext items in place (each one record), waits for the
// bodies Send is still sealing, and writes the records with as few system
// calls as writeChunk allows.
type queueWriter struct {
	q     *sendQueue
	dw    *deadlineWriter
	aead  cipher.AEAD // this link's send key; nil: plain frames (TLS, v1)
	st    *counters
	nonce [12]byte
	bufs  [][]byte
}

// flush writes a batch of what is queued (take wakes the writer again if
// more is).
func (w *queueWriter) flush() error {
	its := w.q.take()
	if len(its) == 0 {
		return nil
	}
	bufs := w.bufs[:0]
	msgs, bytes := 0, 0
	for _, it := range its {
		if it.err != nil {
			return it.err
		}
		msgs, bytes = msgs+it.msgs, bytes+it.bytes
		if !it.sealed {
			if w.aead == nil {
				bufs = append(bufs, it.buf[recordHeaderLen:])
			} else {
				bufs = w.seal(bufs, it)
			}
			continue
		}
		<-it.ready
		if it.aead == w.aead {
			bufs = append(bufs, it.buf)
			continue
		}
		// Sealed for a broken link: open it with that link's key, then
		// seal it again with this one's (or send it plain).
		var err error
		if bufs, err = w.recover(bufs, it); err != nil {
			return err
		}
	}
	w.bufs = bufs
	err := w.dw.writeBuffers(bufs)
	clear(bufs) // WriteTo consumed the slices; drop the references
	if err != nil {
		return err
	}
	for _, it := range its {
		if it.pooled {
			putRecBuf(it.buf)
		}
	}
	clear(its)
	w.st.msgsSent.Add(uint64(msgs))
	w.st.bytesSent.Add(uint64(bytes))
	return nil
}

// seal seals a plaintext item: in place when it is one record (always,
// unless it was queued without a record layer), else into a new buffer.
func (w *queueWriter) seal(bufs [][]byte, it *qitem) [][]byte {
	pt := it.buf[recordHeaderLen:]
	if len(pt) <= maxRecordPlain && cap(it.buf)-len(it.buf) >= sealOverhead {
		binary.BigEndian.PutUint32(it.buf, uint32(len(pt)+sealOverhead))
		ct := w.aead.Seal(pt[:0], recordNonce(&w.nonce, it.ctr), pt, it.buf[:recordHeaderLen])
		return append(bufs, it.buf[:recordHeaderLen+len(ct)])
	}
	return append(bufs, appendSealed(make([]byte, 0, sealedLen(len(pt))), w.aead, it.ctr, pt))
}

// recover opens the records of a body sealed under a broken link's key (the
// queue was adopted) in place, and queues them sealed again under this
// link's key with the numbers rekey reserved, or plain.
func (w *queueWriter) recover(bufs [][]byte, it *qitem) ([][]byte, error) {
	b := it.buf
	ctr, nctr := it.sctr, it.ctr
	for len(b) > 0 {
		n := recordHeaderLen + int(binary.BigEndian.Uint32(b))
		rec := b[:n]
		pt, err := it.aead.Open(rec[recordHeaderLen:recordHeaderLen], recordNonce(&w.nonce, ctr), rec[recordHeaderLen:], rec[:recordHeaderLen])
		if err != nil {
			return bufs, fmt.Errorf("mesh: reopening a queued record: %w", err)
		}
		if w.aead == nil {
			bufs = append(bufs, pt)
		} else {
			ct := w.aead.Seal(pt[:0], recordNonce(&w.nonce, nctr), pt, rec[:recordHeaderLen])
			bufs = append(bufs, rec[:recordHeaderLen+len(ct)])
		}
		b, ctr, nctr = b[n:], ctr+1, nctr+1
	}
	return bufs, nil
}

// goodbye flushes what is queued, sends goodbye, half-closes and waits
// (bounded) for the peer to close, then closes the link. The whole sequence
// is bounded by closeGrace.
func (l *link) goodbye(w *queueWriter) {
	grace := min(l.m.cfg.LinkTimeout, closeGrace)
	w.dw.until = time.Now().Add(grace)
	l.q.pushFrame(frameGoodbye, nil)
	err := w.flush()
	if err == nil {
		if cw, ok := l.raw.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		t := time.NewTimer(time.Until(w.dw.until))
		select {
		case <-l.readerDone:
		case <-l.done:
		case <-t.C:
		}
		t.Stop()
	}
	l.fail(ReasonShutdown)
}

//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultImpairLimit is the delay queue bound, in frames per direction, when
// Impairment.Limit is 0.
const DefaultImpairLimit = 10000

// MaxImpairDelay bounds Impairment.Delay + Impairment.Jitter.
const MaxImpairDelay = time.Minute

// ErrNotImpairable is returned by the Impair methods of a lab made without
// Options.Impair; it wraps errors.ErrUnsupported.
var ErrNotImpairable = fmt.Errorf("netlab: lab not made with Options.Impair: %w", errors.ErrUnsupported)

// Impairment is what the forwarder of an Impair lab does to the frames of
// one direction of a host's link, like netem: each frame is dropped with
// probability Loss, otherwise delivered after Delay plus a uniform random
// amount in [-Jitter, +Jitter] (clamped at 0). With Jitter, frames overtake
// each other, as with netem. The zero value forwards frames at once.
type Impairment struct {
	// Loss is the probability (0..1) that a frame is dropped (0 = none).
	Loss float64
	// Delay is how long a frame is held (0 = none).
	Delay time.Duration
	// Jitter widens Delay to a uniform [Delay-Jitter, Delay+Jitter],
	// clamped at 0 (0 = none).
	Jitter time.Duration
	// Limit bounds the frames held at once; more are dropped and counted
	// in DroppedQueue (0 = DefaultImpairLimit; netem's default is 1000).
	Limit int
}

// IsZero reports whether im does nothing.
func (im Impairment) IsZero() bool { return im == Impairment{} }

func (im Impairment) String() string {
	var parts []string
	if im.Loss > 0 {
		parts = append(parts, "loss "+strconv.FormatFloat(im.Loss*100, 'g', -1, 64)+"%")
	}
	if im.Delay > 0 || im.Jitter > 0 {
		s := "delay " + im.Delay.String()
		if im.Jitter > 0 {
			s += " " + im.Jitter.String()
		}
		parts = append(parts, s)
	}
	if im.Limit > 0 {
		parts = append(parts, "limit "+strconv.Itoa(im.Limit))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

func (im Impairment) validate() error {
	switch {
	case !(im.Loss >= 0 && im.Loss <= 1): // also rejects NaN
		return fmt.Errorf("loss %v: want 0..1", im.Loss)
	case im.Delay < 0 || im.Jitter < 0:
		return fmt.Errorf("delay %v jitter %v: want >= 0", im.Delay, im.Jitter)
	case im.Delay > MaxImpairDelay || im.Jitter > MaxImpairDelay || im.Delay+im.Jitter > MaxImpairDelay:
		return fmt.Errorf("delay %v jitter %v: want delay+jitter <= %v", im.Delay, im.Jitter, MaxImpairDelay)
	case im.Limit < 0:
		return fmt.Errorf("limit %d: want >= 0", im.Limit)
	}
	return nil
}

// ImpairStats are the forwarder counters of one host of an Impair lab.
type ImpairStats struct {
	// Egress is the host -> switch direction, Ingress switch -> host.
	Egress, Ingress ImpairDirStats
}

// ImpairDirStats are the counters of one direction, in frames.
type ImpairDirStats struct {
	Forwarded    uint64 // delivered
	DroppedLoss  uint64 // dropped by Impairment.Loss
	DroppedQueue uint64 // dropped because the delay queue was full
	DroppedCut   uint64 // dropped while the host was Cut (queued frames included)
	WriteErrors  uint64 // delivery failed (e.g. the destination interface is down)
	ReadErrors   uint64 // reads that failed for another reason than Close
	Queued       uint64 // held in the delay queue now
}

// Impairable reports whether the lab was made with Options.Impair, so that
// Host.Impair works and Host.Netem works without kernel netem.
func (l *Lab) Impairable() bool { return l.impair }

var (
	tunOnce sync.Once
	tunErr  error
)

// ImpairSupported reports whether Options.Impair can work here (nil when
// it can): it opens /dev/net/tun once per process. New skips the test (or
// fails it when CI=true) when an Impair lab is asked for and this fails.
func ImpairSupported() error {
	tunOnce.Do(func() {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			tunErr = fmt.Errorf("netlab: Options.Impair needs TAP devices (/dev/net/tun, CONFIG_TUN): %w", err)
			return
		}
		_ = unix.Close(fd)
	})
	return tunErr
}

// Impair sets the impairment of both directions of the host's link (what it
// sends and what it receives), replacing any earlier one; frames already
// queued keep their delivery time. A frame between two impaired hosts is
// impaired twice: by the sender's egress and by the receiver's ingress
// (Netem and ImpairEgress impair egress only, like netem). It returns
// ErrNotImpairable on a lab made without Options.Impair.
func (h *Host) Impair(im Impairment) error { return h.setImpair("impair", im, true, true) }

// ImpairEgress sets the impairment of what the host sends only.
func (h *Host) ImpairEgress(im Impairment) error {
	return h.setImpair("impair egress", im, true, false)
}

// ImpairIngress sets the impairment of what the host receives only.
func (h *Host) ImpairIngress(im Impairment) error {
	return h.setImpair("impair ingress", im, false, true)
}

// ClearImpair removes the impairment of both directions (Impair with the
// zero Impairment).
func (h *Host) ClearImpair() error { return h.setImpair("clear impair", Impairment{}, true, true) }

// Impairment returns the current impairments of the host's link (zero on a
// lab made without Options.Impair).
func (h *Host) Impairment() (egress, ingress Impairment) {
	if h.fwd == nil {
		return
	}
	return h.fwd.dirs[egressDir].impairment(), h.fwd.dirs[ingressDir].impairment()
}

// ImpairStats returns the forwarder counters of the host (zero on a lab
// made without Options.Impair).
func (h *Host) ImpairStats() ImpairStats {
	if h.fwd == nil {
		return ImpairStats{}
	}
	return ImpairStats{Egress: h.fwd.dirs[egressDir].stats(), Ingress: h.fwd.dirs[ingressDir].stats()}
}

func (h *Host) setImpair(op string, im Impairment, egress, ingress bool) error {
	if h.fwd == nil {
		return fmt.Errorf("netlab: %s: %s: %w", h.NS, op, ErrNotImpairable)
	}
	if h.lab.isClosed() {
		return ErrClosed
	}
	if err := im.validate(); err != nil {
		return fmt.Errorf("netlab: %s: %s: %w", h.NS, op, err)
	}
	if egress {
		h.fwd.dirs[egressDir].set(im)
	}
	if ingress {
		h.fwd.dirs[ingressDir].set(im)
	}
	return nil
}

// ParseNetem parses the subset of netem's syntax the forwarder of an Impair
// lab implements: "loss [random] PERCENT" (or "drop"), "delay TIME
// [JITTER]", "limit PACKETS", in any order. PERCENT is "20%" or "20"; TIME
// is tc's (a number with unit s, sec, ms, msec, us, usec, ns, nsec, or Go's
// duration syntax; no unit means microseconds). Other netem features
// (correlation, distribution, reorder, duplicate, corrupt, rate, slot, ...)
// return an error wrapping errors.ErrUnsupported. "" is no impairment.
func ParseNetem(spec string) (Impairment, error) {
	var im Impairment
	f := strings.Fields(spec)
	for i := 0; i < len(f); i++ {
		switch kw := f[i]; kw {
		case "loss", "drop":
			i++
			if i < len(f) && f[i] == "random" {
				i++
			}
			if i < len(f) && (f[i] == "state" || f[i] == "gemodel" || f[i] == "ecn") {
				return Impairment{}, fmt.Errorf("netem %q: loss %s: %w", spec, f[i], errors.ErrUnsupported)
			}
			if i >= len(f) {
				return Impairment{}, fmt.Errorf("netem %q: %s needs a percentage", spec, kw)
			}
			p, err := parsePercent(f[i])
			if err != nil {
				return Impairment{}, fmt.Errorf("netem %q: %s: %w", spec, kw, err)
			}
			im.Loss = p
			if i+1 < len(f) {
				if _, err := parsePercent(f[i+1]); err == nil {
					return Impairment{}, fmt.Errorf("netem %q: loss correlation: %w", spec, errors.ErrUnsupported)
				}
			}
		case "delay", "latency":
			i++
			if i >= len(f) {
				return Impairment{}, fmt.Errorf("netem %q: delay needs a time", spec)
			}
			d, err := parseTCTime(f[i])
			if err != nil {
				return Impairment{}, fmt.Errorf("netem %q: delay: %w", spec, err)
			}
			im.Delay, im.Jitter = d, 0
			if i+1 < len(f) {
				if j, err := parseTCTime(f[i+1]); err == nil {
					im.Jitter = j
					i++
				}
			}
			if i+1 < len(f) {
				if _, err := parsePercent(f[i+1]); err == nil {
					return Impairment{}, fmt.Errorf("netem %q: delay correlation: %w", spec, errors.ErrUnsupported)
				}
			}
		case "limit":
			i++
			if i >= len(f) {
				return Impairment{}, fmt.Errorf("netem %q: limit needs a number", spec)
			}
			n, err := strconv.Atoi(f[i])
			if err != nil || n <= 0 {
				return Impairment{}, fmt.Errorf("netem %q: limit %q: want a positive number", spec, f[i])
			}
			im.Limit = n
		default:
			return Impairment{}, fmt.Errorf("netem %q: %q: %w (Impair labs take loss, delay, limit)", spec, kw, errors.ErrUnsupported)
		}
	}
	if err := im.validate(); err != nil {
		return Impairment{}, fmt.Errorf("netem %q: %w", spec, err)
	}
	return im, nil
}

// parsePercent parses "20%" or "20" (tc's parse_percent) into 0.2.
func parsePercent(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil || !(v >= 0 && v <= 100) {
		return 0, fmt.Errorf("percentage %q: want 0..100", s)
	}
	return v / 100, nil
}

// tcTimeUnits are tc's time units (iproute2 get_time64).
var tcTimeUnits = []struct {
	suffix string
	unit   time.Duration
}{
	// Longest first so "msec" is not read as "sec".
	{"nsecs", time.Nanosecond}, {"usecs", time.Microsecond}, {"msecs", time.Millisecond},
	{"nsec", time.Nanosecond}, {"usec", time.Microsecond}, {"msec", time.Millisecond}, {"secs", time.Second},
	{"sec", time.Second}, {"ns", time.Nanosecond}, {"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second},
}

// parseTCTime parses a tc time ("10ms", "1.5msec", "100" = 100us) or a Go
// duration ("1m30s").
func parseTCTime(s string) (time.Duration, error) {
	num, unit := s, time.Microsecond
	for _, u := range tcTimeUnits {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			num, unit = n, u.unit
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		d, gerr := time.ParseDuration(s)
		if gerr != nil || d < 0 {
			return 0, fmt.Errorf("time %q: want e.g. 10ms", s)
		}
		return d, nil
	}
	if !(v >= 0) || v*float64(unit) > float64(math.MaxInt64) {
		return 0, fmt.Errorf("time %q: out of range", s)
	}
	return time.Duration(math.Round(v * float64(unit))), nil
}

// The forwarder.
//
// Each host of an Impair lab has two TAP devices: eth0 in its namespace and
// t<i> on the bridge in the switch namespace. Two goroutines copy frames
// between them, one per direction. Each goroutine owns its delay queue (a
// min-heap by due time): it reads with a read deadline set to the due time
// of the first queued frame, and after every read or deadline sends the
// frames that are due. Settings and counters are atomics, so the hot path
// takes no lock.

const (
	egressDir  = 0 // host -> switch
	ingressDir = 1 // switch -> host

	// readBufSize holds the largest frame a TAP can give (max MTU 65521 +
	// Ethernet and VLAN headers).
	readBufSize = 1<<16 + 128
	// tapQueueLen is the txqueuelen of the TAPs, which is the size of the
	// ring of frames waiting for the forwarder to read them: the default,
	// 1000, is 10 ms at 100k frames/s, which a scheduling hiccup of a
	// loaded machine overflows; 4096 is 40 ms.
	tapQueueLen = 4096
	// poolBufSize holds a frame of the default MTU (1500); larger queued
	// frames get a buffer of their own.
	poolBufSize = 2048
)

var framePool = sync.Pool{New: func() any { b := make([]byte, poolBufSize); return &b }}

type forwarder struct {
	host, sw *os.File // eth0 in the host namespace, t<i> in the switch namespace
	dirs     [2]direction
	cut      atomic.Bool
	cutGen   atomic.Uint32 // incremented by every Cut: frames queued before it are lost
	wg       sync.WaitGroup
	done     chan struct{} // closed by close once both goroutines returned
	once     sync.Once
	closeErr error
}

type direction struct {
	imp atomic.Pointer[Impairment] // nil = none

	forwarded, droppedLoss, droppedQueue, droppedCut, writeErrors, readErrors atomic.Uint64
	queued                                                                    atomic.Int64
}

func (d *direction) set(im Impairment) {
	if im.IsZero() {
		d.imp.Store(nil)
		return
	}
	d.imp.Store(&im)
}

func (d *direction) impairment() Impairment {
	if p := d.imp.Load(); p != nil {
		return *p
	}
	return Impairment{}
}

func (d *direction) stats() ImpairDirStats {
	return ImpairDirStats{
		Forwarded:    d.forwarded.Load(),
		DroppedLoss:  d.droppedLoss.Load(),
		DroppedQueue: d.droppedQueue.Load(),
		DroppedCut:   d.droppedCut.Load(),
		WriteErrors:  d.writeErrors.Load(),
		ReadErrors:   d.readErrors.Load(),
		Queued:       uint64(max(d.queued.Load(), 0)),
	}
}

// newForwarder starts the two goroutines copying frames between host and
// sw; it owns both files from now on.
func newForwarder(host, sw *os.File) *forwarder {
	f := &forwarder{host: host, sw: sw, done: make(chan struct{})}
	f.wg.Add(2)
	go f.run(&f.dirs[egressDir], host, sw)
	go f.run(&f.dirs[ingressDir], sw, host)
	return f
}

// close closes both devices, which stops the goroutines at once (queued
// frames are dropped), and waits for them. Later calls return the first
// result.
func (f *forwarder) close() error {
	f.once.Do(func() {
		f.closeErr = errors.Join(f.host.Close(), f.sw.Close())
		f.wg.Wait()
		close(f.done)
	})
	return f.closeErr
}

// setCut starts or ends a cut: while cut, every frame is dropped, queued
// ones included.
func (f *forwarder) setCut(cut bool) {
	if cut {
		f.cutGen.Add(1)
	}
	f.cut.Store(cut)
}

// setCarrier sets the carrier of a TAP (TUNSETCARRIER).
func setCarrier(tap *os.File, on bool) error {
	rc, err := tap.SyscallConn()
	if err != nil {
		return err
	}
	v := 0
	if on {
		v = 1
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { ierr = unix.IoctlSetPointerInt(int(fd), unix.TUNSETCARRIER, v) }); err != nil {
		return err
	}
	if ierr != nil {
		return fmt.Errorf("TUNSETCARRIER: %w", ierr)
	}
	return nil
}

// frame is a queued frame.
type frame struct {
	due int64 // nanoseconds since the goroutine's base time
	seq uint64
	gen uint32 // forwarder.cutGen when queued
	n   int
	buf *[]byte
}

// frameHeap is a min-heap by (due, seq): container/heap without its
// interface boxing.
type frameHeap []frame

func (h frameHeap) less(i, j int) bool {
	return h[i].due < h[j].due || (h[i].due == h[j].due && h[i].seq < h[j].seq)
}

func (h *frameHeap) push(fr frame) {
	*h = append(*h, fr)
	q := *h
	for i := len(q) - 1; i > 0; {
		p := (i - 1) / 2
		if !q.less(i, p) {
			break
		}
		q[i], q[p] = q[p], q[i]
		i = p
	}
}

func (h *frameHeap) pop() frame {
	q := *h
	top := q[0]
	last := len(q) - 1
	q[0] = q[last]
	q[last] = frame{}
	q = q[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(q) && q.less(l, m) {
			m = l
		}
		if r < len(q) && q.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
	*h = q
	return top
}

// run copies frames from src to dst, applying d's impairment, until src is
// closed.
func (f *forwarder) run(d *direction, src, dst *os.File) {
	defer f.wg.Done()
	buf := make([]byte, readBufSize)
	var q frameHeap
	var seq uint64
	base := time.Now()
	deadline := int64(-1) // read deadline in force: -1 none, -2 unknown
	defer func() {
		for len(q) > 0 {
			putFrame(q.pop().buf)
		}
		d.queued.Store(0)
	}()
	for {
		want := int64(-1)
		if len(q) > 0 {
			want = q[0].due
		}
		if want != deadline {
			var t time.Time
			if want >= 0 {
				t = base.Add(time.Duration(want))
			}
			if err := src.SetReadDeadline(t); err != nil {
				return // closed
			}
			deadline = want
		}
		n, err := src.Read(buf)
		if err != nil {
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				deadline = -2
			case errors.Is(err, os.ErrClosed):
				return
			default:
				// Should not happen (the device was deleted?); do not
				// spin on it.
				d.readErrors.Add(1)
				time.Sleep(10 * time.Millisecond)
			}
			f.flush(d, &q, dst, int64(time.Since(base)))
			continue
		}
		n = min(n, len(buf))
		if n == 0 {
			continue
		}
		imp := d.imp.Load()
		switch {
		case f.cut.Load():
			d.droppedCut.Add(1)
		case imp == nil && len(q) == 0:
			f.write(d, dst, buf[:n])
		default:
			now := int64(time.Since(base))
			var delay time.Duration
			limit := DefaultImpairLimit
			if imp != nil {
				if imp.Loss > 0 && (imp.Loss >= 1 || rand.Float64() < imp.Loss) {
					d.droppedLoss.Add(1)
					break
				}
				delay = imp.Delay
				if imp.Jitter > 0 {
					delay += time.Duration(rand.Int64N(2*int64(imp.Jitter)+1)) - imp.Jitter
				}
				if imp.Limit > 0 {
					limit = imp.Limit
				}
			}
			if delay <= 0 && len(q) == 0 {
				f.write(d, dst, buf[:n])
				break
			}
			if len(q) >= limit {
				d.droppedQueue.Add(1)
				break
			}
			var p *[]byte
			if n <= poolBufSize {
				p = framePool.Get().(*[]byte)
			} else {
				b := make([]byte, n)
				p = &b
			}
			copy(*p, buf[:n])
			seq++
			q.push(frame{due: now + int64(max(delay, 0)), seq: seq, gen: f.cutGen.Load(), n: n, buf: p})
			d.queued.Store(int64(len(q)))
			f.flush(d, &q, dst, now)
			continue
		}
		if len(q) > 0 {
			f.flush(d, &q, dst, int64(time.Since(base)))
		}
	}
}

// flush sends the queued frames due at now.
func (f *forwarder) flush(d *direction, q *frameHeap, dst *os.File, now int64) {
	if len(*q) == 0 || (*q)[0].due > now {
		return
	}
	for len(*q) > 0 && (*q)[0].due <= now {
		fr := q.pop()
		if f.cut.Load() || fr.gen != f.cutGen.Load() {
			d.droppedCut.Add(1)
		} else {
			f.write(d, dst, (*fr.buf)[:fr.n])
		}
		putFrame(fr.buf)
	}
	d.queued.Store(int64(len(*q)))
}

func putFrame(p *[]byte) {
	if cap(*p) == poolBufSize {
		*p = (*p)[:poolBufSize]
		framePool.Put(p)
	}
}

func (f *forwarder) write(d *direction, dst *os.File, b []byte) {
	if _, err := dst.Write(b); err != nil {
		d.writeErrors.Add(1)
		return
	}
	d.forwarded.Add(1)
}

// openTap creates a TAP device named name inside namespace ns and returns
// it as a non-blocking, pollable file (deadlines work, Close stops a
// pending Read). The device exists as long as the file is open.
func openTap(ns, name string) (*os.File, error) {
	fd := -1
	err := InNetns(ns, func() error {
		var err error
		// Opened inside ns: the device is made in the namespace of the
		// opener.
		fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err == nil {
			ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
			err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
		}
		if err != nil {
			_ = unix.Close(fd)
			fd = -1
			return fmt.Errorf("TUNSETIFF %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tap %s in %s: %w", name, ns, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("tap %s in %s: %w", name, ns, err)
	}
	f := os.NewFile(uintptr(fd), ns+"/"+name)
	// os.NewFile registers a non-blocking fd with the poller; without it
	// deadlines would not work and Close would not stop a Read.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("tap %s in %s: not pollable: %w", name, ns, err)
	}
	return f, nil
}

// makeForwarder creates the host's two TAPs and starts its forwarder.
func (h *Host) makeForwarder() error {
	hostTap, err := openTap(h.NS, h.Iface)
	if err != nil {
		return err
	}
	swTap, err := openTap(h.lab.sw, h.port)
	if err != nil {
		_ = hostTap.Close()
		return err
	}
	h.fwd = newForwarder(hostTap, swTap)
	return nil
}

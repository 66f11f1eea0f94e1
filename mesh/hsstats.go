package mesh

import (
	"sync/atomic"
	"time"
)

// HandshakeBuckets are the upper bounds of Stats.Handshakes, the histogram
// of handshake durations: from the TCP connection to the admitted link
// (TLS, hello, cookie proof), both directions, successful handshakes only.
var HandshakeBuckets = [...]time.Duration{
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second,
}

// HandshakeHistogram is a snapshot of the handshake durations.
type HandshakeHistogram struct {
	// Counts[i] is the number of handshakes that took at most
	// HandshakeBuckets[i] and more than HandshakeBuckets[i-1] (not
	// cumulative); the last element counts those above every bound.
	Counts [len(HandshakeBuckets) + 1]uint64
	Count  uint64        // handshakes observed
	Sum    time.Duration // their total duration
}

type hsHist struct {
	counts [len(HandshakeBuckets) + 1]atomic.Uint64
	sum    atomic.Int64
}

func (h *hsHist) observe(d time.Duration) {
	i := 0
	for i < len(HandshakeBuckets) && d > HandshakeBuckets[i] {
		i++
	}
	h.sum.Add(int64(d))
	h.counts[i].Add(1)
}

func (h *hsHist) snapshot() HandshakeHistogram {
	var s HandshakeHistogram
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
		s.Count += s.Counts[i]
	}
	s.Sum = time.Duration(h.sum.Load())
	return s
}

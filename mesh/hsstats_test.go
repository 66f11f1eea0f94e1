package mesh

import (
	"testing"
	"time"
)

func TestHandshakeHistogramBuckets(t *testing.T) {
	var h hsHist
	for _, d := range []time.Duration{0, time.Millisecond, time.Millisecond + 1, 7 * time.Second} {
		h.observe(d)
	}
	s := h.snapshot()
	if s.Counts[0] != 2 || s.Counts[1] != 1 || s.Counts[len(HandshakeBuckets)] != 1 || s.Count != 4 ||
		s.Sum != 7*time.Second+2*time.Millisecond+1 {
		t.Errorf("snapshot %+v", s)
	}
}

// TestHandshakeHistogramObserved: a link counts one handshake on each side.
func TestHandshakeHistogramObserved(t *testing.T) {
	a, _ := startNode(t, "a@127.0.0.1", nil)
	b, _ := startNode(t, "b@127.0.0.1", nil)
	if s := a.Stats().Handshakes; s.Count != 0 {
		t.Fatalf("before any link: %+v", s)
	}
	a.Connect("b@127.0.0.1", b.Addr())
	eventually(t, 10*time.Second, "a handshake on both sides", func() bool {
		return a.Stats().Handshakes.Count == 1 && b.Stats().Handshakes.Count == 1
	})
	if s := a.Stats().Handshakes; s.Sum <= 0 {
		t.Errorf("dialler %+v", s)
	}
}

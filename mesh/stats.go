package mesh

import (
	"maps"
	"sync"
	"sync/atomic"
)

type counters struct {
	linksUp, duplicates, dials, dialFailures atomic.Uint64
	connectRestarts                          atomic.Uint64
	relinks                                  atomic.Uint64
	msgsSent, msgsRecv, bytesSent, bytesRecv atomic.Uint64
	reconnects                               atomic.Uint64
	heldSilent, heldExtended                 atomic.Uint64
	mu                                       sync.Mutex
	linksDown, hsFail, proto                 map[string]uint64
	hs                                       hsHist // see hsstats.go
}

// init puts every known key of the labelled counters at 0, so that Stats
// (and the CLI's /metrics) show each series from Start, before its first
// event.
func (c *counters) init() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.linksDown = make(map[string]uint64, len(linkDownReasons))
	for _, r := range linkDownReasons {
		c.linksDown[string(r)] = 0
	}
	c.hsFail = make(map[string]uint64, len(handshakeFailureReasons))
	for _, r := range handshakeFailureReasons {
		c.hsFail[string(r)] = 0
	}
	c.proto = make(map[string]uint64, len(protocolErrorReasons))
	for _, r := range protocolErrorReasons {
		c.proto[string(r)] = 0
	}
}

func (c *counters) count(m *map[string]uint64, key string) {
	c.mu.Lock()
	if *m == nil {
		*m = make(map[string]uint64)
	}
	(*m)[key]++
	c.mu.Unlock()
}

func (c *counters) snapshot() Stats {
	c.mu.Lock()
	s := Stats{
		LinksDown:         maps.Clone(c.linksDown),
		HandshakeFailures: maps.Clone(c.hsFail),
		ProtocolErrors:    maps.Clone(c.proto),
	}
	c.mu.Unlock()
	if s.LinksDown == nil {
		s.LinksDown = map[string]uint64{}
	}
	if s.HandshakeFailures == nil {
		s.HandshakeFailures = map[string]uint64{}
	}
	if s.ProtocolErrors == nil {
		s.ProtocolErrors = map[string]uint64{}
	}
	s.LinksUp = c.linksUp.Load()
	s.DuplicateLinks = c.duplicates.Load()
	s.LinkReplacements = c.relinks.Load()

	s.Dials = c.dials.Load()
	s.DialFailures = c.dialFailures.Load()
	s.ConnectRestarts = c.connectRestarts.Load()
	s.MessagesSent = c.msgsSent.Load()
	s.MessagesReceived = c.msgsRecv.Load()
	s.BytesSent = c.bytesSent.Load()
	s.BytesReceived = c.bytesRecv.Load()
	s.Handshakes = c.hs.snapshot()
	return s
}

package main

import (
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// HTTP listener limits. The endpoints answer small requests (probes,
// scrapes, `macula nodes`), none of them streams, so every phase of a
// connection has a deadline; a client that holds a connection open without
// using it is closed after ReadHeaderTimeout (new) or IdleTimeout (between
// requests). An endpoint that streams (Server-Sent Events) must lift the
// write deadline for its own request with http.ResponseController.
const (
	httpReadHeaderTimeout = 5 * time.Second
	httpReadTimeout       = 10 * time.Second
	httpWriteTimeout      = 30 * time.Second
	httpIdleTimeout       = 60 * time.Second
	httpMaxHeaderBytes    = 16 << 10
)

// httpConnCap is the default cap on open HTTP connections given the
// process's open-file limit (0: unknown): an eighth of it, between 32 and
// 512, so that the mesh (one descriptor per link and pending handshake)
// and the gossip sockets keep the rest.
func httpConnCap(nofile uint64) int {
	if nofile == 0 {
		return 256
	}
	return int(min(max(nofile/8, 32), 512))
}

// connLimiter caps the open connections of an http.Server. At the cap, a
// new connection evicts the oldest connection that is not serving a
// request (accepted but silent, or idle between requests); when every
// connection is busy, the new one is closed at once. So idle connections,
// however many, cannot lock out a probe, and the process never holds more
// than max HTTP descriptors. The kernel's accept queue holds the rest.
//
// Wrap the listener with listener and set the server's ConnState to
// connState.
type connLimiter struct {
	max int
	log *slog.Logger

	mu      sync.Mutex
	conns   map[net.Conn]*connEntry
	seq     uint64
	evicted uint64 // since the last warning
	warned  time.Time
}

type connEntry struct {
	busy bool   // serving a request
	seq  uint64 // accept order, or the order it last became idle
}

func newConnLimiter(max int, log *slog.Logger) *connLimiter {
	return &connLimiter{max: max, log: log, conns: map[net.Conn]*connEntry{}}
}

// open reports how many connections are open.
func (l *connLimiter) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

func (l *connLimiter) listener(ln net.Listener) net.Listener { return &limitedListener{ln, l} }

type limitedListener struct {
	net.Listener
	l *connLimiter
}

func (ll *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if ll.l.admit(c) {
			return c, nil
		}
		c.Close()
	}
}

// admit registers c, evicting the oldest non-busy connection at the cap;
// false means every connection is busy and c must be closed.
func (l *connLimiter) admit(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) >= l.max {
		var victim net.Conn
		var oldest uint64
		for vc, e := range l.conns {
			if !e.busy && (victim == nil || e.seq < oldest) {
				victim, oldest = vc, e.seq
			}
		}
		l.evicted++
		if time.Since(l.warned) >= 10*time.Second {
			l.log.Warn("http: connection cap reached; closing the oldest idle connections (slow or idle clients?)",
				"cap", l.max, "closed", l.evicted)
			l.warned, l.evicted = time.Now(), 0
		}
		if victim == nil {
			return false
		}
		delete(l.conns, victim)
		victim.Close()
	}
	l.seq++
	l.conns[c] = &connEntry{seq: l.seq}
	return true
}

// connState is the http.Server ConnState hook.
func (l *connLimiter) connState(c net.Conn, st http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.conns[c]
	if !ok {
		return // evicted already
	}
	switch st {
	case http.StateActive:
		e.busy = true
	case http.StateIdle:
		l.seq++
		e.busy, e.seq = false, l.seq
	case http.StateHijacked, http.StateClosed:
		delete(l.conns, c)
	}
}

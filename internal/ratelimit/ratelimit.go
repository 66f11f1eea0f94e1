// Package ratelimit limits log lines about hostile traffic: at most one per
// key (usually a source address) per period, with a bounded key table so a
// flood from many sources cannot grow memory.
package ratelimit

import (
	"sync"
	"time"
)

// DefaultMaxKeys bounds the table when PerKey.MaxKeys is zero.
const DefaultMaxKeys = 1024

// PerKey allows one event per key per Period. The zero value is not usable;
// use New. It is safe for concurrent use.
type PerKey struct {
	period  time.Duration
	maxKeys int
	now     func() time.Time

	mu         sync.Mutex
	last       map[string]time.Time
	suppressed map[string]int
}

// New returns a limiter that allows one event per key per period and
// remembers at most maxKeys keys (DefaultMaxKeys when zero or negative).
func New(period time.Duration, maxKeys int) *PerKey {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	return &PerKey{period: period, maxKeys: maxKeys, now: time.Now,
		last: make(map[string]time.Time), suppressed: make(map[string]int)}
}

// Allow reports whether an event for key may be logged now and, if so, how
// many events for that key were suppressed since the last allowed one.
// When the table is full, expired keys are swept; if it is still full the
// event is allowed only for keys already in the table, so a flood of new
// keys is suppressed as a whole rather than growing memory.
func (l *PerKey) Allow(key string) (ok bool, suppressed int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, seen := l.last[key]; seen {
		if now.Sub(t) < l.period {
			l.suppressed[key]++
			return false, 0
		}
		n := l.suppressed[key]
		l.last[key] = now
		delete(l.suppressed, key)
		return true, n
	}
	if len(l.last) >= l.maxKeys {
		for k, t := range l.last {
			if now.Sub(t) >= l.period {
				delete(l.last, k)
				delete(l.suppressed, k)
			}
		}
		if len(l.last) >= l.maxKeys {
			return false, 0
		}
	}
	l.last[key] = now
	return true, 0
}

// Len is the number of keys remembered (for tests and metrics).
func (l *PerKey) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.last)
}

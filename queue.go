package cluster

import "sync"

// inbox is an unbounded FIFO feeding the cluster loop, so that neither the
// mesh's event goroutine nor a strategy ever blocks on the facade. Its size
// is bounded in practice by link changes and strategy reports.
type inbox struct {
	mu     sync.Mutex
	items  []any
	closed bool
	signal chan struct{}
}

func (q *inbox) init() { q.signal = make(chan struct{}, 1) }

func (q *inbox) push(v any) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.items = append(q.items, v)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// pop blocks for the next item; ok is false once closed and drained.
func (q *inbox) pop() (any, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			v := q.items[0]
			q.items[0] = nil
			q.items = q.items[1:]
			q.mu.Unlock()
			return v, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil, false
		}
		<-q.signal
	}
}

func (q *inbox) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

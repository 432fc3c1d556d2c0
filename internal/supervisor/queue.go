package supervisor

import "sync"

// queue delivers values to f, in order, from a goroutine of its own, so the
// producer never blocks however slow f is. Unbounded; its producers (exits)
// are rate-limited by the restart backoff.
type queue[T any] struct {
	mu     sync.Mutex // guards items and closed
	items  []T
	closed bool
	kick   chan struct{}
	done   chan struct{}
}

func newQueue[T any](f func(T)) *queue[T] {
	q := &queue[T]{kick: make(chan struct{}, 1), done: make(chan struct{})}
	go q.loop(f)
	return q
}

func (q *queue[T]) push(v T) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.items = append(q.items, v)
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

func (q *queue[T]) loop(f func(T)) {
	defer close(q.done)
	for {
		q.mu.Lock()
		items, closed := q.items, q.closed
		q.items = nil
		q.mu.Unlock()
		for _, v := range items {
			f(v)
		}
		if closed {
			return
		}
		<-q.kick
	}
}

// close delivers what is queued, then stops.
func (q *queue[T]) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
	<-q.done
}

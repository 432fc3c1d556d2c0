package keeper

import "sync"

// inbox hands what a poller read to a goroutine that runs only while
// something is queued, in order: the poller must never wait for the one
// it reads for, and an idle connection holds no goroutine.
type inbox[T any] struct {
	mu         sync.Mutex
	items      []T
	delivering bool
}

// post queues v; it reports whether the caller must start a goroutine
// that takes the items (next) until there are none.
func (b *inbox[T]) post(v T) (start bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.items = append(b.items, v)
	start = !b.delivering
	b.delivering = true
	return start
}

// next returns the oldest item. With none left it returns false, and the
// goroutine that took them must end: the next post starts another.
func (b *inbox[T]) next() (T, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.items) == 0 {
		b.items = nil
		b.delivering = false
		var zero T
		return zero, false
	}
	v := b.items[0]
	b.items = b.items[1:]
	return v, true
}

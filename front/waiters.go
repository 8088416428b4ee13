package front

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/flashgate/flashgate/events"
)

const shards = 32

// waiters maps request ids to the channel their decision goes to. It is
// bounded: add fails when max requests are waiting.
type waiters struct {
	seed  maphash.Seed
	max   int64
	n     atomic.Int64
	shard [shards]struct {
		sync.Mutex
		m map[string]chan result
	}
}

func newWaiters(max int) *waiters {
	w := &waiters{seed: maphash.MakeSeed(), max: int64(max)}
	for i := range w.shard {
		w.shard[i].m = make(map[string]chan result)
	}
	return w
}

func (w *waiters) of(id string) int { return int(maphash.String(w.seed, id) % shards) }

func (w *waiters) add(id string) (chan result, bool) {
	if w.n.Add(1) > w.max {
		w.n.Add(-1)
		return nil, false
	}
	ch := make(chan result, 1)
	s := &w.shard[w.of(id)]
	s.Lock()
	s.m[id] = ch
	s.Unlock()
	return ch, true
}

func (w *waiters) remove(id string) {
	s := &w.shard[w.of(id)]
	s.Lock()
	if _, ok := s.m[id]; ok {
		delete(s.m, id)
		w.n.Add(-1)
	}
	s.Unlock()
}

// deliver hands r to the waiter of id, if any, and forgets it.
func (w *waiters) deliver(id string, r result) {
	s := &w.shard[w.of(id)]
	s.Lock()
	ch, ok := s.m[id]
	if ok {
		delete(s.m, id)
		w.n.Add(-1)
	}
	s.Unlock()
	if ok {
		ch <- r // buffered, never blocks: one delivery per waiter
	}
}

// recent keeps the last n decisions by request id, for polling. The
// decisions sit in a ring and the map holds only their places in it: a
// small map entry is cheaper to insert and delete than one holding the
// whole event, which every answered request pays once.
type recent struct {
	mu   sync.Mutex
	m    map[string]int // request id -> index in ring
	ring []recentEntry
	next int
}

type recentEntry struct {
	id string // "" while the slot is unused
	ev events.Event
}

func newRecent(n int) *recent {
	return &recent{m: make(map[string]int, n), ring: make([]recentEntry, n)}
}

func (r *recent) put(id string, e events.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.m[id]; ok {
		return
	}
	slot := &r.ring[r.next]
	if slot.id != "" {
		delete(r.m, slot.id)
	}
	*slot = recentEntry{id: id, ev: e}
	r.m[id] = r.next
	r.next = (r.next + 1) % len(r.ring)
}

func (r *recent) get(id string) (events.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.m[id]
	if !ok {
		return events.Event{}, false
	}
	return r.ring[i].ev, true
}

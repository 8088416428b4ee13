package challenge_test

import (
	"context"
	"slices"
	"sync"
)

// memOnce is an in-memory challenge.Once that records every call. If err is
// set, Use fails with it and records nothing.
type memOnce struct {
	mu    sync.Mutex
	seen  map[string]bool
	calls int
	err   error
}

func (m *memOnce) Use(ctx context.Context, key string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if m.err != nil {
		return false, m.err
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if m.seen[key] {
		return false, nil
	}
	if m.seen == nil {
		m.seen = make(map[string]bool)
	}
	m.seen[key] = true
	return true, nil
}

// keys returns the keys recorded, sorted.
func (m *memOnce) keys() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ks []string
	for k := range m.seen {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// callCount returns how many times Use was called.
func (m *memOnce) callCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

// alwaysFirst is a challenge.Once that says every key is new, for
// benchmarks.
type alwaysFirst struct{}

func (alwaysFirst) Use(context.Context, string) (bool, error) { return true, nil }

// Forget makes memOnce a challenge.Forgetter.
func (m *memOnce) Forget(ctx context.Context, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.seen, key)
	return nil
}

package kvpolicy_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/ratelimit"
	"github.com/flashgate/flashgate/ratelimit/kvpolicy"
	"github.com/nats-io/nats.go/jetstream"
)

type sink struct {
	mu sync.Mutex
	ps []ratelimit.Policy
	n  int
}

func (s *sink) set(ps []ratelimit.Policy) { s.mu.Lock(); s.ps, s.n = ps, s.n+1; s.mu.Unlock() }

func (s *sink) get(name string) (ratelimit.Policy, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.ps {
		if p.Name == name {
			return p, true
		}
	}
	return ratelimit.Policy{}, false
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	fgtest.WaitFor(t, 10*time.Second, func() error {
		if !cond() {
			return fmt.Errorf("waiting for %s", what)
		}
		return nil
	})
}

func bucket(t *testing.T) jetstream.KeyValue {
	env := fgtest.New(t)
	kv, err := env.JS.KeyValue(context.Background(), events.LimitsBucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestWatchAppliesChanges: a policy set in the bucket reaches every
// watching process; deleting it brings the built-in one back.
func TestWatchAppliesChanges(t *testing.T) {
	kv := bucket(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var a, b sink
	go kvpolicy.Watch(ctx, kv, a.set, nil, nil, nil)
	go kvpolicy.Watch(ctx, kv, b.set, nil, nil, nil)
	builtIn := ratelimit.Defaults()[0]
	for _, s := range []*sink{&a, &b} {
		waitFor(t, "the built-in policies", func() bool { p, ok := s.get(builtIn.Name); return ok && p.Capacity == builtIn.Capacity })
	}
	changed := builtIn
	changed.Capacity, changed.Shadow = 3, true
	if err := kvpolicy.Put(ctx, kv, changed); err != nil {
		t.Fatal(err)
	}
	extra := ratelimit.Policy{Name: "tokens-ip-strict", Group: ratelimit.GroupTokens, Key: ratelimit.KeyIP, Capacity: 5, Rate: 1}
	if err := kvpolicy.Put(ctx, kv, extra); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*sink{&a, &b} {
		waitFor(t, "the changed policy", func() bool { p, ok := s.get(builtIn.Name); return ok && p.Capacity == 3 && p.Shadow })
		waitFor(t, "the added policy", func() bool { _, ok := s.get(extra.Name); return ok })
	}
	if err := kvpolicy.Delete(ctx, kv, builtIn.Name); err != nil {
		t.Fatal(err)
	}
	if err := kvpolicy.Delete(ctx, kv, extra.Name); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*sink{&a, &b} {
		waitFor(t, "the built-in policy back", func() bool { p, ok := s.get(builtIn.Name); return ok && p.Capacity == builtIn.Capacity && !p.Shadow })
		waitFor(t, "the added policy gone", func() bool { _, ok := s.get(extra.Name); return !ok })
	}
	if err := kvpolicy.Delete(ctx, kv, extra.Name); !errors.Is(err, kvpolicy.ErrNotSet) {
		t.Fatalf("deleting an unset policy: %v", err)
	}
}

// TestWatchStartsFromStored: a process that starts later applies what is
// stored before it, and ignores a damaged entry.
func TestWatchStartsFromStored(t *testing.T) {
	kv := bucket(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := ratelimit.Policy{Name: "reads-ip", Group: ratelimit.GroupReads, Key: ratelimit.KeyIP, Capacity: 7, Rate: 7}
	if err := kvpolicy.Put(ctx, kv, p); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "broken", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	var s sink
	go kvpolicy.Watch(ctx, kv, s.set, nil, nil, nil)
	waitFor(t, "the stored policy", func() bool { got, ok := s.get("reads-ip"); return ok && got.Capacity == 7 })
	s.mu.Lock()
	if s.n != 1 {
		t.Errorf("set called %d times for the initial values, want once", s.n)
	}
	s.mu.Unlock()
	if _, ok := s.get("broken"); ok {
		t.Fatal("a damaged entry applied")
	}
	stored, bad, err := kvpolicy.Stored(ctx, kv)
	if err != nil || len(stored) != 1 || bad["broken"] == nil {
		t.Fatalf("Stored: %v %v %v", stored, bad, err)
	}
}

func TestPutValidates(t *testing.T) {
	kv := bucket(t)
	err := kvpolicy.Put(context.Background(), kv, ratelimit.Policy{Name: "x", Group: "nope", Key: ratelimit.KeyIP, Capacity: 1, Rate: 1})
	if err == nil {
		t.Fatal("an invalid policy stored")
	}
}

// TestResyncReadsAgain: a reconnect makes the watch read the bucket again
// at once, degraded until it has.
func TestResyncReadsAgain(t *testing.T) {
	kv := bucket(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	next := make(chan struct{})
	resync := func() <-chan struct{} { mu.Lock(); defer mu.Unlock(); return next }
	var degraded []bool
	var s sink
	go kvpolicy.Watch(ctx, kv, s.set, nil, func(d bool) { mu.Lock(); degraded = append(degraded, d); mu.Unlock() }, resync)
	waitFor(t, "the first read", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.n == 1 })
	mu.Lock()
	close(next)
	next = make(chan struct{})
	mu.Unlock()
	waitFor(t, "the second read", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.n == 2 })
	waitFor(t, "degraded and back", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(degraded) == 2 && degraded[0] && !degraded[1]
	})
}

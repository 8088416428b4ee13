package handlers

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/stream"
)

// TestWriterRetiresIdle: a writer with nothing to do retires once IdleAfter
// passed, after saving a snapshot of what it committed, and reports the
// last request it decided and the sale's next wake (its first token's
// expiry); a writer whose sale needs a batch within IdleAfter does not.
func TestWriterRetiresIdle(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.createSale(t, "s", 100)
	e.appendRequests(t, "s", 3, 5)
	now := t0.Add(time.Minute)
	w := NewWriter(e.js, e.st, "s", WriterConfig{Log: quiet, Now: clockAt(now), IdleAfter: time.Second})
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrIdle) {
			t.Fatalf("Run: %v, want ErrIdle", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the writer did not retire")
	}
	last, err := e.st.GetLastMsgForSubject(ctx, events.RequestSubject("s"))
	if err != nil {
		t.Fatal(err)
	}
	cursor, wake, ok := w.Idle()
	if cursor != last.Sequence {
		t.Errorf("idle at cursor %d, the last request is at %d", cursor, last.Sequence)
	}
	if want := now.Add(time.Hour); !ok || !wake.Equal(want) {
		t.Errorf("next wake %v (%v), want the first expiry %v", wake, ok, want)
	}
	db, _, _, err := stream.LastDecision(ctx, e.st, "s")
	if err != nil {
		t.Fatal(err)
	}
	if got := countType(e.decisions(t, "s"), events.TypeTokenIssued); got != 15 {
		t.Errorf("%d tokens issued, want 15", got)
	}
	obs, err := e.js.ObjectStore(ctx, stream.SnapshotBucket)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := snapshotInfo(t, obs, "s"); v != db.Head.Version {
		t.Errorf("snapshot of version %d, want the last batch's %d", v, db.Head.Version)
	}

	// The same sale with its tokens due to expire within IdleAfter: the
	// writer stays (and decides the expiries when they come).
	near := now.Add(time.Hour - 50*time.Millisecond)
	w = NewWriter(e.js, e.st, "s", WriterConfig{Log: quiet, Now: clockAt(near), IdleAfter: 100 * time.Millisecond})
	rctx, cancel := context.WithCancel(ctx)
	go func() { done <- w.Run(rctx) }()
	select {
	case err := <-done:
		t.Fatalf("Run returned %v with an expiry 50 ms away", err)
	case <-time.After(500 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func countType(dbs []events.DecisionBatch, typ events.Type) int {
	n := 0
	for _, db := range dbs {
		for _, ev := range db.Events {
			if ev.Type == typ {
				n++
			}
		}
	}
	return n
}

// TestManagerWakesIdleWriter: the manager drops a writer that retired idle
// and starts a new one, under the same lease, when a request comes (sale s,
// whose tokens last an hour) and when tokens expire (sale x, whose tokens
// last 3 s); every request is decided exactly once, and the batches'
// versions follow one another across the writers.
func TestManagerWakesIdleWriter(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	kv, err := e.js.KeyValue(ctx, events.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	opened := time.Now().Add(-time.Minute)
	e.CreateSale(t, "s", 100, time.Hour, opened)
	e.CreateSale(t, "x", 100, 3*time.Second, opened)
	m := NewManager(e.js, e.st, kv, "node-a", 5*time.Second, WriterConfig{Log: quiet, IdleAfter: 200 * time.Millisecond})
	m.Start(ctx)
	m.Add("s")
	m.Add("x")
	defer func() { cancel(); m.Wait() }()
	isIdle := func(sale string) func() error {
		return func() error {
			m.mu.Lock()
			defer m.mu.Unlock()
			if !m.idle[sale] {
				return fmt.Errorf("the writer of %s is not idle", sale)
			}
			return nil
		}
	}
	decided := func(sale string) func() error {
		return func() error {
			db, _, ok, err := stream.LastDecision(ctx, e.st, sale)
			if err != nil || !ok {
				return fmt.Errorf("no decision yet: %v", err)
			}
			last, err := e.st.GetLastMsgForSubject(ctx, events.RequestSubject(sale))
			if err != nil {
				return err
			}
			if db.Head.Cursor < last.Sequence {
				return fmt.Errorf("cursor %d, last request %d", db.Head.Cursor, last.Sequence)
			}
			return nil
		}
	}
	check := func(sale string, requests, minWriters int) {
		t.Helper()
		writers := map[string]bool{}
		answered := map[string]int{}
		for i, db := range e.decisions(t, sale) {
			writers[db.Writer] = true
			if db.Head.Version != uint64(i+1) {
				t.Fatalf("%s: batch %d has version %d", sale, i, db.Head.Version)
			}
			for _, ev := range db.Events {
				if ev.Request != "" {
					answered[ev.Request]++
				}
			}
		}
		if len(writers) < minWriters {
			t.Errorf("%s: batches by %d writers, want at least %d", sale, len(writers), minWriters)
		}
		if len(answered) != requests {
			t.Errorf("%s: %d requests answered, want %d", sale, len(answered), requests)
		}
		for id, n := range answered {
			if n != 1 {
				t.Errorf("%s: request %s answered %d times", sale, id, n)
			}
		}
	}

	e.AppendTokenRequests(t, "s", "first", 2, 3, opened)
	e.AppendTokenRequests(t, "x", "first", 2, 3, opened)
	fgtest.WaitFor(t, 10*time.Second, decided("s"))
	fgtest.WaitFor(t, 10*time.Second, isIdle("s"))
	// Past the sleep's early looks at the stream (at once, and a second
	// later; the next is about 30 s away): the subscription must wake it.
	time.Sleep(1500 * time.Millisecond)
	e.AppendTokenRequests(t, "s", "later", 2, 3, opened)
	fgtest.WaitFor(t, 10*time.Second, decided("s"))
	fgtest.WaitFor(t, 10*time.Second, isIdle("s"))
	check("s", 12, 2)

	// x's tokens expire 3 s after their issue: a writer is woken for it.
	fgtest.WaitFor(t, 15*time.Second, func() error {
		if n := countType(e.decisions(t, "x"), events.TypeTokenExpired); n != 6 {
			return fmt.Errorf("%d tokens expired, want 6", n)
		}
		return isIdle("x")()
	})
	check("x", 6, 2)
	if owned, _ := m.Status(); len(owned) != 2 {
		t.Errorf("owned %v while idle, want both sales: the leases are kept", owned)
	}
}

// TestIdleSleepSeesRequestsAlreadyThere: a request appended after the
// writer's last look and before the manager listens wakes the sale at once.
func TestIdleSleepSeesRequestsAlreadyThere(t *testing.T) {
	e := newEnv(t)
	kv, err := e.js.KeyValue(context.Background(), events.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	e.createSale(t, "s", 100)
	e.appendRequests(t, "s", 1, 1)
	last, err := e.st.GetLastMsgForSubject(context.Background(), events.RequestSubject("s"))
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(e.js, e.st, kv, "node-a", time.Minute, WriterConfig{Log: quiet})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if m.sleep(ctx, "s", last.Sequence-1, time.Time{}, false); ctx.Err() != nil {
		t.Fatalf("sleep ended with its context (%v): want an immediate wake", ctx.Err())
	}
	// Nothing after the cursor: it sleeps until the context ends.
	short, stop := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer stop()
	if m.sleep(short, "s", last.Sequence, time.Time{}, false); short.Err() == nil {
		t.Fatal("sleep ended before its context with no request after the cursor")
	}
}

// TestIdleSleepLooks: a request the subscription does not see (here there is
// none) is found by the sleep's looks at the stream.
func TestIdleSleepLooks(t *testing.T) {
	e := newEnv(t)
	kv, err := e.js.KeyValue(context.Background(), events.LeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	e.createSale(t, "s", 100)
	m := NewManager(e.js, e.st, kv, "node-a", time.Minute, WriterConfig{Log: quiet})
	m.noListen, m.lookEvery = true, 50*time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.sleep(ctx, "s", 0, time.Time{}, false)
	}()
	time.Sleep(200 * time.Millisecond) // a few looks find nothing
	select {
	case <-done:
		t.Fatal("sleep ended with no request")
	default:
	}
	e.appendRequests(t, "s", 1, 1)
	<-done
	if ctx.Err() != nil {
		t.Fatalf("the request was not found: sleep ended with its context (%v)", ctx.Err())
	}
}

package front

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
)

// lateAck is a submitted request whose append the test settles by hand.
func lateAck(t *testing.T) (*Front, *Pending) {
	t.Helper()
	f := &Front{cfg: Config{AppendTimeout: 5 * time.Second, AppendSlack: 10 * time.Millisecond}, waiters: newWaiters(10)}
	ch, ok := f.waiters.add("r")
	if !ok {
		t.Fatal("no room for a waiter")
	}
	return f, &Pending{f: f, id: "r", ch: ch, start: time.Now(), failed: make(chan error, 1), settled: make(chan struct{})}
}

type waitResult struct {
	ok   bool
	err  error
	took time.Duration
}

// waitIn runs p.Wait; took counts from the request's submission, as
// Wait's own deadlines do.
func waitIn(ctx context.Context, p *Pending, wait time.Duration) <-chan waitResult {
	out := make(chan waitResult, 1)
	go func() {
		_, ok, err := p.Wait(ctx, wait)
		out <- waitResult{ok, err, time.Since(p.start)}
	}()
	return out
}

// TestWaitCountsFromTheAck: a request acknowledged only after the decision
// wait passed is not answered pending before it is stored, and gets the
// whole wait from the ack.
func TestWaitCountsFromTheAck(t *testing.T) {
	f, p := lateAck(t)
	out := waitIn(context.Background(), p, 100*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	select {
	case r := <-out:
		t.Fatalf("answered before the ack: %+v", r)
	default:
	}
	queued{p: p}.done(nil)
	r := <-out
	if r.ok || r.err != nil {
		t.Fatalf("ok=%v err=%v, want pending", r.ok, r.err)
	}
	if r.took < 300*time.Millisecond {
		t.Fatalf("pending after %v, want the ack (200ms) plus the wait (100ms)", r.took)
	}
	if n := f.waiters.n.Load(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}

// TestWaitDecidedAfterALateAck: the decision of a request acknowledged late
// still reaches it within the wait counted from the ack.
func TestWaitDecidedAfterALateAck(t *testing.T) {
	f, p := lateAck(t)
	out := waitIn(context.Background(), p, 100*time.Millisecond)
	time.Sleep(150 * time.Millisecond)
	queued{p: p}.done(nil)
	f.waiters.deliver("r", result{ev: events.Event{Request: "r"}})
	if r := <-out; !r.ok || r.err != nil {
		t.Fatalf("ok=%v err=%v, want the decision", r.ok, r.err)
	}
}

// TestWaitFailedAppend: an append that fails is an error (503 upstream),
// whether it fails within the decision wait or after it.
func TestWaitFailedAppend(t *testing.T) {
	for _, after := range []time.Duration{0, 150 * time.Millisecond} {
		f, p := lateAck(t)
		out := waitIn(context.Background(), p, 100*time.Millisecond)
		time.Sleep(after)
		queued{p: p}.done(ErrUnavailable)
		if r := <-out; r.ok || !errors.Is(r.err, ErrUnavailable) {
			t.Fatalf("failed %v in: ok=%v err=%v, want ErrUnavailable", after, r.ok, r.err)
		}
		if n := f.waiters.n.Load(); n != 0 {
			t.Fatalf("%d waiters left", n)
		}
	}
}

// TestWaitNoAck: with no ack at all the request is unavailable once the
// append's allowance (twice its timeout plus AppendSlack) is over, never
// pending.
func TestWaitNoAck(t *testing.T) {
	f, p := lateAck(t)
	f.cfg.AppendTimeout = 50 * time.Millisecond
	r := <-waitIn(context.Background(), p, 10*time.Millisecond)
	if r.ok || !errors.Is(r.err, ErrUnavailable) || r.took < 110*time.Millisecond {
		t.Fatalf("ok=%v err=%v after %v, want ErrUnavailable after 110ms", r.ok, r.err, r.took)
	}
	if n := f.waiters.n.Load(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}

// TestWaitCancelled: a caller that goes away before the ack gets its
// context's error (the request may not be stored); after the ack, pending.
// Either way the waiter is gone.
func TestWaitCancelled(t *testing.T) {
	for _, acked := range []bool{false, true} {
		f, p := lateAck(t)
		if acked {
			queued{p: p}.done(nil)
		}
		ctx, cancel := context.WithCancel(context.Background())
		out := waitIn(ctx, p, time.Minute)
		cancel()
		r := <-out
		if acked && (r.ok || r.err != nil) {
			t.Errorf("cancelled after the ack: ok=%v err=%v, want pending", r.ok, r.err)
		}
		if !acked && (r.ok || !errors.Is(r.err, context.Canceled) || !errors.Is(r.err, ErrNotAppended)) {
			t.Errorf("cancelled before the ack: ok=%v err=%v, want context.Canceled and ErrNotAppended", r.ok, r.err)
		}
		if !acked && p.claim.Load() != pendingDropped {
			t.Errorf("cancelled while queued: claim %d, want dropped (never appended)", p.claim.Load())
		}
		if n := f.waiters.n.Load(); n != 0 {
			t.Errorf("acked=%v: %d waiters left", acked, n)
		}
	}
}

// TestWaitCancelledInAnAppend: a caller that goes away while its request
// is in an append gets its context's error only: the request may be stored,
// so what it spent is not given back.
func TestWaitCancelledInAnAppend(t *testing.T) {
	f, p := lateAck(t)
	p.claim.Store(pendingTaken)
	ctx, cancel := context.WithCancel(context.Background())
	out := waitIn(ctx, p, time.Minute)
	cancel()
	r := <-out
	if !errors.Is(r.err, context.Canceled) || errors.Is(r.err, ErrNotAppended) {
		t.Fatalf("err %v, want context.Canceled and not ErrNotAppended", r.err)
	}
	if n := f.waiters.n.Load(); n != 0 {
		t.Fatalf("%d waiters left", n)
	}
}

// TestWaitNoAckDropsQueued: a request still queued when its Wait gives up
// is dropped, so that the appender leaves it out: the 503 is true.
func TestWaitNoAckDropsQueued(t *testing.T) {
	_, p := lateAck(t)
	p.f.cfg.AppendTimeout = 50 * time.Millisecond
	r := <-waitIn(context.Background(), p, 10*time.Millisecond)
	if !errors.Is(r.err, ErrUnavailable) || !errors.Is(r.err, ErrNotAppended) {
		t.Fatalf("err %v, want ErrNotAppended, an ErrUnavailable", r.err)
	}
	if p.claim.CompareAndSwap(pendingQueued, pendingTaken) {
		t.Fatal("the appender could still take a request whose client was told 503")
	}
}

// TestWaitTakenWaitsForTheOutcome: a request the appender took into an
// append that outlasts the allowance is not answered 503 while that append
// may still succeed: an ack answers it (pending), and with no outcome at
// all it is unavailable only after the append's own timeout too.
func TestWaitTakenWaitsForTheOutcome(t *testing.T) {
	for _, ack := range []bool{true, false} {
		f, p := lateAck(t)
		// The allowance: 2 x 600 + 10 ms; the taken append's outcome is
		// awaited 610 ms more.
		f.cfg.AppendTimeout = 600 * time.Millisecond
		p.claim.Store(pendingTaken)
		out := waitIn(context.Background(), p, 10*time.Millisecond)
		if ack {
			time.Sleep(1400 * time.Millisecond) // past the allowance, 420 ms before the end
			queued{p: p}.done(nil)
		}
		r := <-out
		switch {
		case ack && (r.ok || r.err != nil):
			t.Errorf("acked after the allowance: ok=%v err=%v, want pending", r.ok, r.err)
		case !ack && (!errors.Is(r.err, ErrUnavailable) || errors.Is(r.err, ErrNotAppended) || r.took < 1820*time.Millisecond):
			t.Errorf("never settled: err=%v after %v, want ErrUnavailable (maybe stored, not ErrNotAppended) after 1.82s", r.err, r.took)
		}
		if n := f.waiters.n.Load(); n != 0 {
			t.Errorf("ack=%v: %d waiters left", ack, n)
		}
	}
}

// TestWaitFailedButDecided: an append reported failed (a timeout) may have
// landed and been decided; when the decision is there too, it is the
// answer, never the 503.
func TestWaitFailedButDecided(t *testing.T) {
	for range 50 {
		f, p := lateAck(t)
		f.waiters.deliver("r", result{ev: events.Event{Request: "r"}})
		queued{p: p}.done(ErrUnavailable)
		if r := <-waitIn(context.Background(), p, time.Second); !r.ok || r.err != nil {
			t.Fatalf("ok=%v err=%v, want the decision", r.ok, r.err)
		}
	}
}

// TestTakeLeavesDropped: the appender takes every queued request but the
// ones their Wait gave up on, and those can no longer be given up.
func TestTakeLeavesDropped(t *testing.T) {
	mk := func(id string) *Pending { return &Pending{id: id} }
	a, b, c := mk("a"), mk("b"), mk("c")
	b.claim.Store(pendingDropped)
	batch := []queued{{p: a}, {p: b}, {ev: events.Event{ID: "send"}}, {p: c}}
	var got []string
	for _, q := range take(batch) {
		if q.p == nil {
			got = append(got, q.ev.ID)
		} else {
			got = append(got, q.p.id)
		}
	}
	if want := []string{"a", "send", "c"}; !slices.Equal(got, want) {
		t.Fatalf("taken %v, want %v", got, want)
	}
	if a.claim.CompareAndSwap(pendingQueued, pendingDropped) || c.claim.Load() != pendingTaken {
		t.Fatal("a taken request can still be given up")
	}
}

// TestStoppingFailsQueuedAsNotAppended: requests still queued when the
// front stops are told ErrNotAppended (so a solution they spent is given
// back), and can no longer be taken.
func TestStoppingFailsQueuedAsNotAppended(t *testing.T) {
	_, p := lateAck(t)
	a := &appender{q: make(chan queued, 2)}
	a.q <- queued{p: p}
	a.failQueued()
	select {
	case err := <-p.failed:
		if !errors.Is(err, ErrNotAppended) {
			t.Fatalf("err %v, want ErrNotAppended", err)
		}
	default:
		t.Fatal("the queued request was not told")
	}
	if p.claim.Load() != pendingDropped {
		t.Fatalf("claim %d, want dropped", p.claim.Load())
	}
}

package fulfil

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/broker"
	"github.com/flashgate/flashgate/provider/fake"
)

// pacedClock is a fake clock whose sleeps advance it.
type pacedClock struct{ t time.Time }

func (c *pacedClock) now() time.Time { return c.t }
func (c *pacedClock) sleep(ctx context.Context, d time.Duration) error {
	c.t = c.t.Add(d)
	return ctx.Err()
}

// TestFloodPaceRate: during a flood, orders are taken at the configured
// rate; outside one, and with no limit, the pace never waits. (When a flood
// starts and ends is the front's detector's: front's TestFloodedLingers.)
func TestFloodPaceRate(t *testing.T) {
	clk := &pacedClock{t: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
	var flooded atomic.Bool
	flooded.Store(true)
	p := &FloodPace{Flooded: flooded.Load, Rate: 20, now: clk.now, sleep: clk.sleep}
	ctx := context.Background()
	start := clk.t
	taken := 0
	for clk.t.Sub(start) < 10*time.Second {
		if err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		taken++
	}
	// 20 a second for 10 s, plus the burst the limiter starts with (1).
	if taken < 199 || taken > 202 {
		t.Fatalf("%d orders taken in 10 s of a flood at 20/s", taken)
	}
	// The flood is over: the pace lets everything through.
	flooded.Store(false)
	before := clk.t
	for range 1000 {
		if err := p.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if clk.t != before {
		t.Fatalf("outside a flood the pace waited %v", clk.t.Sub(before))
	}
	// No limit: never waits, even in a flood.
	flooded.Store(true)
	free := &FloodPace{Flooded: flooded.Load, Rate: 0, now: clk.now, sleep: clk.sleep}
	for range 1000 {
		if err := free.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if clk.t != before {
		t.Fatalf("with no limit the pace waited %v", clk.t.Sub(before))
	}
	// A high rate is not capped by the waits' granularity.
	fast := &FloodPace{Flooded: flooded.Load, Rate: 5000, now: clk.now, sleep: clk.sleep}
	start, taken = clk.t, 0
	for clk.t.Sub(start) < time.Second {
		if err := fast.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		taken++
	}
	if taken < 4900 || taken > 5300 {
		t.Fatalf("%d orders taken in 1 s of a flood at 5000/s", taken)
	}
	// A held-back worker leaves when its context ends.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	slow := &FloodPace{Flooded: flooded.Load, Rate: 1, now: clk.now, sleep: clk.sleep}
	_ = slow.Wait(ctx) // spends the first
	if err := slow.Wait(cctx); err == nil {
		t.Fatal("a cancelled wait returned no error")
	}
}

// TestWorkerWaitsForThePace: the worker asks the pace before taking each
// order, and sends nothing while the pace holds it back.
func TestWorkerWaitsForThePace(t *testing.T) {
	t.Parallel()
	r := newRig(t, fake.Config{})
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var paces atomic.Int64
	pace := func(ctx context.Context) error {
		paces.Add(1)
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.start(t, "a", Config{Pace: pace}, broker.Config{}, nil)
	orders := r.accept(t, "s1", 20)
	<-entered
	// The worker is held before taking its first order: no call yet.
	if st := r.fake.Stats(); st.OrderCalls != 0 {
		t.Fatalf("%d order calls while the pace held the worker", st.OrderCalls)
	}
	close(release)
	r.waitStatus(t, 20*time.Second, "s1", orders, StatusConfirmed)
	r.confirmedOnce(t, orders)
	if n := paces.Load(); n < int64(len(orders)) {
		t.Fatalf("the pace was asked %d times for %d orders", n, len(orders))
	}
}

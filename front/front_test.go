package front

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/embed"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type fixture struct {
	ns *embed.Server
	js jetstream.JetStream
	f  *Front
}

// newFixture runs a front against a listening embedded server (so that the
// server can be taken away) with one open sale "s" and no writer.
func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	ns, err := embed.Start(embed.Options{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := stream.Ensure(ctx, js, stream.Config{}); err != nil {
		t.Fatal(err)
	}
	st, _ := js.Stream(ctx, events.StreamName)
	now := time.Now().UTC()
	ev := events.Event{ID: events.NewIDs().New(now), Type: events.TypeSaleCreated, Version: events.SchemaVersion, Sale: "s", Time: now,
		Data: &events.SaleCreated{Stock: 10, QuotaBuffer: 1.2, Quota: 12, PerUserLimit: 1, TokenTTL: events.Duration(time.Minute), OpensAt: now}}
	if _, err := stream.CreateSale(ctx, js, ev); err != nil {
		t.Fatal(err)
	}
	cfg.Log = quiet
	f := New(js, st, cfg)
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = f.Run(fctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	<-f.Ready()
	return &fixture{ns: ns, js: js, f: f}
}

func tokenRequest(shopper string) events.Event {
	now := time.Now().UTC()
	return events.Event{ID: events.NewIDs().New(now), Type: events.TypeTokenRequested, Version: events.SchemaVersion, Sale: "s", Time: now,
		Shopper: shopper, Data: &events.TokenRequested{}}
}

// TestUnavailableIsNotPending: when the stream cannot take a request, the
// caller hears so (503 upstream), never "pending" for a request that was not
// stored.
func TestUnavailableIsNotPending(t *testing.T) {
	fx := newFixture(t, Config{AppendTimeout: 300 * time.Millisecond})
	fx.ns.Shutdown()
	p, err := fx.f.Submit(tokenRequest("x"))
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("submit: %v", err)
		}
		return
	}
	_, ok, err := p.Wait(context.Background(), 2*time.Second)
	if ok || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Wait with NATS down: ok=%v err=%v, want ErrUnavailable", ok, err)
	}
}

// TestStoredButUndecidedIsPending: with no writer, a stored request waits
// the decision time and then reads as pending (ok=false, no error).
func TestStoredButUndecidedIsPending(t *testing.T) {
	fx := newFixture(t, Config{})
	p, err := fx.f.Submit(tokenRequest("x"))
	if err != nil {
		t.Fatal(err)
	}
	_, ok, err := p.Wait(context.Background(), 100*time.Millisecond)
	if ok || err != nil {
		t.Fatalf("ok=%v err=%v, want pending", ok, err)
	}
	if n := fx.f.waiters.n.Load(); n != 0 {
		t.Fatalf("%d waiters left behind", n)
	}
}

// TestBounds: a full waiter table answers ErrOverloaded at once.
func TestBounds(t *testing.T) {
	fx := newFixture(t, Config{MaxInFlight: 3})
	for i := 0; i < 3; i++ {
		if _, err := fx.f.Submit(tokenRequest("x")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fx.f.Submit(tokenRequest("y")); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("4th in flight: %v, want ErrOverloaded", err)
	}
}

// TestRecentIsBounded: the recent decisions are the last n, a second
// decision for a request kept is ignored, and the index forgets what the
// ring let go.
func TestRecentIsBounded(t *testing.T) {
	r := newRecent(3)
	ev := func(i int) events.Event {
		return events.Event{ID: "d" + strconv.Itoa(i), Request: "r" + strconv.Itoa(i)}
	}
	for i := 1; i <= 3; i++ {
		r.put("r"+strconv.Itoa(i), ev(i))
	}
	r.put("r2", ev(9)) // a second decision for a request kept is ignored: the first stands
	r.put("r4", ev(4)) // pushes out r1, the oldest
	if _, ok := r.get("r1"); ok {
		t.Fatal("r1 is still kept after three newer decisions")
	}
	for i, want := range map[string]string{"r2": "d2", "r3": "d3", "r4": "d4"} {
		if e, ok := r.get(i); !ok || e.ID != want {
			t.Fatalf("get(%s) = %q, %v; want %s", i, e.ID, ok, want)
		}
	}
	r.put("r5", ev(5))
	r.put("r6", ev(6))
	if _, ok := r.get("r2"); ok {
		t.Fatal("r2 is still kept after three newer decisions")
	}
	if _, ok := r.get("r4"); !ok {
		t.Fatal("r4 was pushed out early")
	}
	if len(r.m) != 3 {
		t.Fatalf("the index holds %d requests, want 3", len(r.m))
	}
}

// commitBatch appends a decision batch answering req as a writer's commit
// does, and returns it with its stream sequence.
func (fx *fixture) commitBatch(t *testing.T, version uint64, prev uint64, req events.Event) (*events.DecisionBatch, uint64) {
	t.Helper()
	now := time.Now().UTC()
	d := events.Event{ID: events.NewIDs().New(now), Type: events.TypeTokenIssued, Version: events.SchemaVersion, Sale: "s", Time: now,
		Shopper: req.Shopper, Request: req.ID, Data: &events.TokenIssued{TokenID: req.ID, IssuedAt: now, ExpiresAt: now.Add(time.Minute)}}
	db := &events.DecisionBatch{Sale: "s", Writer: "w", DecidedAt: now, Head: events.Head{Version: version, Stock: 10, Quota: 12, Issued: int64(version)},
		Events: []events.Event{d}}
	b, err := events.EncodeDecisions(*db)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := fx.js.Publish(context.Background(), events.DecisionSubject("s"), b, jetstream.WithExpectLastSequencePerSubject(prev))
	if err != nil {
		t.Fatal(err)
	}
	return db, ack.Sequence
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestCommittedAnswersOnceAndInOrder: a batch this process's writer hands
// over answers its shopper at once, and the same batch coming back from the
// stream is not processed a second time; a batch handed over out of order
// (its predecessor not processed yet) is left to the stream.
func TestCommittedAnswersOnceAndInOrder(t *testing.T) {
	fx := newFixture(t, Config{})
	req := tokenRequest("a")
	p, err := fx.f.Submit(req)
	if err != nil {
		t.Fatal(err)
	}
	// Hand over before the stream can bring it back: the answer must not
	// depend on the stream's delivery.
	db, seq := fx.commitBatch(t, 1, 0, req)
	fx.f.Committed(db, 0, seq)
	d, ok, err := p.Wait(context.Background(), 5*time.Second)
	if err != nil || !ok || d.Request != req.ID || d.Type != events.TypeTokenIssued {
		t.Fatalf("answer: %+v ok=%v err=%v", d, ok, err)
	}
	// A second batch only through the stream: once it is processed, the
	// stream's copy of the first was seen (and skipped) before it.
	req2 := tokenRequest("b")
	p2, err := fx.f.Submit(req2)
	if err != nil {
		t.Fatal(err)
	}
	db2, seq2 := fx.commitBatch(t, 2, seq, req2)
	if d, ok, err := p2.Wait(context.Background(), 5*time.Second); err != nil || !ok || d.Request != req2.ID {
		t.Fatalf("answer through the stream: %+v ok=%v err=%v", d, ok, err)
	}
	waitFor(t, "the second batch", func() bool { return fx.f.SaleStats("s").Batches == 2 })
	st := fx.f.SaleStats("s")
	if st.Batches != 2 || st.Requests != 2 || st.Decisions["TokenIssued"] != 2 {
		t.Fatalf("figures %+v: a batch was processed twice or lost", st)
	}
	// Handing over the second again, or a batch whose predecessor the
	// front has not seen, changes nothing.
	fx.f.Committed(db2, seq, seq2)
	req3 := tokenRequest("c")
	p3, err := fx.f.Submit(req3)
	if err != nil {
		t.Fatal(err)
	}
	db3, _ := fx.commitBatch(t, 3, seq2, req3)
	fx.f.Committed(db3, seq2+100, seq2+101) // a gap: not taken
	if d, ok, err := p3.Wait(context.Background(), 5*time.Second); err != nil || !ok || d.Request != req3.ID {
		t.Fatalf("answer after a refused hand-over: %+v ok=%v err=%v", d, ok, err)
	}
	waitFor(t, "the third batch", func() bool { return fx.f.SaleStats("s").Batches == 3 })
	if v, _ := fx.f.Sale("s"); v.Head.Version != 3 {
		t.Fatalf("head version %d, want 3", v.Head.Version)
	}
}

// TestFloodedLingers: a flood is FloodWaiting or more requests waiting here
// for their decisions; it lasts `within` after the last request that found
// one, on the front's clock, so that its lulls do not end it.
func TestFloodedLingers(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC).UnixNano())
	fx := newFixture(t, Config{FloodWaiting: 3, Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	f := fx.f
	var pending []*Pending
	submit := func() {
		p, err := f.Submit(tokenRequest(fmt.Sprintf("shopper-%d", len(pending))))
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	submit()
	submit()
	if f.Flooded(time.Second) {
		t.Fatal("2 requests waiting (threshold 3) are a flood")
	}
	submit()
	if !f.Flooded(time.Second) {
		t.Fatal("3 requests waiting (threshold 3) are no flood")
	}
	// Their shoppers leave: nothing waits any more, and the flood lingers.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, p := range pending {
		_, _, _ = p.Wait(ctx, time.Minute)
	}
	if n := f.InFlight(); n != 0 {
		t.Fatalf("%d requests still waiting", n)
	}
	clock.Add(int64(999 * time.Millisecond))
	if !f.Flooded(time.Second) {
		t.Fatal("the flood ended 999 ms after it was last seen, within 1 s")
	}
	clock.Add(int64(time.Millisecond))
	if f.Flooded(time.Second) {
		t.Fatal("the flood lasts past 1 s after it was last seen")
	}
}

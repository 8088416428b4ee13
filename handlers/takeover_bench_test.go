package handlers

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// millionSale is the fixture of BenchmarkTakeover: a sale whose state holds
// a million shoppers, its decision batches appended straight to the stream
// (the requests are not: the batches record cursor 0).
type millionSale struct {
	sale    string
	gen     *State // the state the batches were decided with, as of the last batch
	batches int
	events  int
	bytes   int64
	snapSeq uint64 // the batch a snapshot is taken at (before the tail)
	snapAt  *snapshot
	copied  time.Duration // the copy of the snapshot
	lastSeq uint64
}

// buildMillion decides, encodes and appends the batches of a sale with
// stock 1,000,000 (quota 1,200,000): 1,000,000 shoppers get a token, 400,000
// of them buy, the other 600,000 tokens expire, 600,000 new shoppers get
// one; then the state holds 1,000,000 tokens and shoppers (400,000 redeemed,
// 600,000 outstanding). A tail of tailReqs purchases follows the point where
// the snapshot is taken.
func buildMillion(tb testing.TB, e *env, sale string, tailReqs int) *millionSale {
	tb.Helper()
	ctx := context.Background()
	const ttl = time.Hour
	e.CreateSale(tb, sale, 1_000_000, ttl, t0)
	ev, _, err := stream.Sale(ctx, e.st, sale)
	if err != nil {
		tb.Fatal(err)
	}
	sd, err := SaleFromEvent(ev)
	if err != nil {
		tb.Fatal(err)
	}
	m := &millionSale{sale: sale, gen: NewState(sd)}
	s := m.gen
	ids := events.NewIDs()
	subj := events.DecisionSubject(sale)
	var last jetstream.PubAckFuture
	var lastData []byte
	commit := func(now time.Time, reqs []events.Event) {
		out := s.Decide(now, reqs)
		h := s.Head
		h.Version = s.Head.Version + 1
		s.Head = h
		data, err := events.EncodeDecisions(events.DecisionBatch{Sale: sale, Writer: "fixture", DecidedAt: now, Head: h, Events: out})
		if err != nil {
			tb.Fatal(err)
		}
		last, err = e.js.PublishAsync(subj, data, jetstream.WithStallWait(time.Minute))
		lastData = data
		if err != nil {
			tb.Fatal(err)
		}
		m.batches++
		m.events += len(out)
		m.bytes += int64(len(data))
	}
	shopper := func(i int) string { return fmt.Sprintf("shopper-%07d", i) }
	tokenOf := make(map[string]string, 1_600_000)
	tokens := func(now time.Time, from, to int) {
		for i := from; i < to; i += 1000 {
			reqs := make([]events.Event, 0, 1000)
			for j := i; j < min(i+1000, to); j++ {
				id := ids.New(now)
				tokenOf[shopper(j)] = id
				reqs = append(reqs, events.Event{ID: id, Type: events.TypeTokenRequested, Version: events.SchemaVersion, Sale: sale,
					Time: now, Shopper: shopper(j), Data: &events.TokenRequested{}})
			}
			commit(now, reqs)
		}
	}
	buys := func(now time.Time, from, to int) {
		for i := from; i < to; i += 1000 {
			reqs := make([]events.Event, 0, 1000)
			for j := i; j < min(i+1000, to); j++ {
				reqs = append(reqs, events.Event{ID: ids.New(now), Type: events.TypePurchaseRequested, Version: events.SchemaVersion, Sale: sale,
					Time: now, Shopper: shopper(j), Data: &events.PurchaseRequested{TokenID: tokenOf[shopper(j)]}})
			}
			commit(now, reqs)
		}
	}
	tokens(t0.Add(time.Second), 0, 1_000_000)
	buys(t0.Add(time.Minute), 0, 400_000)
	later := t0.Add(2 * ttl)
	for len(s.expiry) > 0 {
		commit(later, nil) // 512 expiries a batch
	}
	tokens(later.Add(time.Second), 1_000_000, 1_600_000)
	wait := func() uint64 {
		select {
		case <-e.js.PublishAsyncComplete():
		case <-time.After(5 * time.Minute):
			tb.Fatal("appends not acknowledged")
		}
		select {
		case ack := <-last.Ok():
			return ack.Sequence
		case err := <-last.Err():
			tb.Fatal(err)
		}
		return 0
	}
	m.snapSeq = wait()
	start := time.Now()
	m.snapAt = copySnapshot(s, sale, m.snapSeq, later.Add(time.Second), lastData)
	m.copied = time.Since(start)
	buys(later.Add(time.Minute), 1_000_000, 1_000_000+tailReqs)
	m.lastSeq = wait()
	return m
}

// BenchmarkTakeover measures a new owner's takeover of a sale whose state
// holds 1,000,000 shoppers (see buildMillion), with 100,000 decisions after
// the snapshot: Load by a full replay of the decision history, then Load
// from the snapshot and the batches after it; for both, the time from Run
// to the first batch committed. Run it alone (about a minute, 750 MB of
// batches in a temporary directory):
//
//	go test -run XXX -bench Takeover -benchtime 1x ./handlers/
func BenchmarkTakeover(b *testing.B) {
	if testing.Short() {
		b.Skip("a million shoppers")
	}
	e := newEnv(b)
	ctx := context.Background()
	start := time.Now()
	m := buildMillion(b, e, "million", 100_000)
	tok, shoppers, _ := m.gen.Sizes()
	b.Logf("fixture: %d batches, %d decisions, %.0f MB of batches, state of %d tokens and %d shoppers, built in %v",
		m.batches, m.events, float64(m.bytes)/1e6, tok, shoppers, time.Since(start).Round(time.Millisecond))

	// The snapshot the writer would have taken before the tail.
	start = time.Now()
	data := m.snapAt.encode()
	encoded := time.Since(start)
	obs, err := e.js.ObjectStore(ctx, stream.SnapshotBucket)
	if err != nil {
		b.Fatal(err)
	}
	start = time.Now()
	if _, err := putSnapshot(ctx, obs, m.snapAt, data); err != nil {
		b.Fatal(err)
	}
	put := time.Since(start)
	r, err := openSnapshot(data)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("snapshot at version %d: copy %v (the writer's stall), encode %v, %.1f MB (%.1f MB before compression), upload %v",
		m.snapAt.head.Version, m.copied.Round(time.Microsecond), encoded.Round(time.Millisecond), float64(len(data))/1e6,
		float64(len(r.d.b))/1e6, put.Round(time.Millisecond))
	b.ReportMetric(float64(len(data))/1e6, "snapshot-MB")
	b.ReportMetric(float64(encoded.Milliseconds()), "encode-ms")
	b.ReportMetric(float64(m.copied.Microseconds())/1000, "copy-ms")

	load := func(noSnapshots bool) (*State, time.Duration) {
		w := NewWriter(e.js, e.st, m.sale, WriterConfig{ID: "loader", Log: quiet, NoSnapshots: noSnapshots})
		start := time.Now()
		if err := w.Load(ctx); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		if want := map[bool]uint64{true: 0, false: m.snapSeq}[noSnapshots]; w.loaded != want {
			b.Fatalf("loaded from the snapshot at %d, want %d", w.loaded, want)
		}
		return w.State(), took
	}
	// serve runs a new owner until it committed its first batch (one token
	// request appended just before).
	serve := func(noSnapshots bool) time.Duration {
		ack, err := e.js.Publish(ctx, events.RequestSubject(m.sale), tokenRequests(b, m.sale, 1))
		if err != nil {
			b.Fatal(err)
		}
		served := make(chan time.Time, 1)
		w := NewWriter(e.js, e.st, m.sale, WriterConfig{ID: fmt.Sprint("owner-", ack.Sequence), Log: quiet, NoSnapshots: noSnapshots,
			OnCommit: func(db *events.DecisionBatch, _ int, _ time.Duration) {
				if db.Head.Cursor == ack.Sequence {
					served <- time.Now()
				}
			}})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- w.Run(rctx) }()
		var took time.Duration
		select {
		case at := <-served:
			took = at.Sub(start)
		case err := <-done:
			b.Fatalf("writer stopped: %v", err)
		case <-time.After(5 * time.Minute):
			b.Fatal("no batch")
		}
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		return took
	}
	b.ResetTimer()
	for range b.N {
		full, fullTook := load(true)
		snap, snapTook := load(false)
		b.StopTimer()
		if snap.Head != full.Head {
			b.Fatalf("head from the snapshot %+v, from a full replay %+v", snap.Head, full.Head)
		}
		if err := sameState(full, snap); err != nil {
			b.Fatalf("the state from the snapshot differs from a full replay: %v", err)
		}
		b.ReportMetric(fullTook.Seconds(), "full-load-s")
		b.ReportMetric(snapTook.Seconds(), "snapshot-load-s")
		b.Logf("Load: full replay %v, from the snapshot and %d decisions after it %v", fullTook.Round(time.Millisecond), 100_000, snapTook.Round(time.Millisecond))
		fullServe, snapServe := serve(true), serve(false)
		b.ReportMetric(fullServe.Seconds(), "full-serve-s")
		b.ReportMetric(snapServe.Seconds(), "snapshot-serve-s")
		b.Logf("Run to the first batch committed: full replay %v, from the snapshot %v", fullServe.Round(time.Millisecond), snapServe.Round(time.Millisecond))
		b.StartTimer()
	}
}

// tokenRequests encodes a request message of n token requests from new shoppers.
func tokenRequests(tb testing.TB, sale string, n int) []byte {
	tb.Helper()
	ids := events.NewIDs()
	now := time.Now().UTC()
	var rb events.RequestBatch
	for range n {
		id := ids.New(now)
		rb.Requests = append(rb.Requests, events.Event{ID: id, Type: events.TypeTokenRequested, Version: events.SchemaVersion, Sale: sale,
			Time: now, Shopper: "late-" + id, Data: &events.TokenRequested{}})
	}
	data, err := events.EncodeRequests(rb)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// BenchmarkSnapshotQueue measures the snapshot of a waiting room holding
// 1,000,000 tickets (joined before the opening, shuffled, the first 100,000
// admitted): the copy the writer makes between two batches, the encoding,
// and the restore a new owner does.
func BenchmarkSnapshotQueue(b *testing.B) {
	if testing.Short() {
		b.Skip("a million tickets")
	}
	const n = 1_000_000
	sale := Sale{ID: "q", Stock: n, Quota: n, QuotaBuffer: 1, PerUserLimit: 1, TokenTTL: time.Hour, OpensAt: t0.Add(time.Minute),
		Queue: &events.Queue{PreQueueOpensAt: t0, AdmissionRate: 100_000, ClaimWindow: events.Duration(time.Hour), IdleTimeout: events.Duration(time.Hour)}}
	s := NewState(sale)
	s.SetSeed(func() uint64 { return 1 })
	reqs := make([]events.Event, 0, 1024)
	for i := 0; i < n; i += 1024 {
		reqs = reqs[:0]
		for j := i; j < min(i+1024, n); j++ {
			reqs = append(reqs, events.Event{ID: events.DerivedID(t0, fmt.Sprint("join:", j)), Type: events.TypeQueueJoinRequested,
				Version: events.SchemaVersion, Sale: "q", Time: t0, Shopper: fmt.Sprintf("shopper-%08d", j), Data: &events.QueueJoinRequested{}})
		}
		s.Decide(t0, reqs)
	}
	now := t0.Add(time.Minute)
	for s.Room().Admitted() < 100_000 {
		s.Decide(now, nil)
		now = now.Add(10 * time.Millisecond)
	}
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		sn := copySnapshot(s, "q", 1, now, []byte("batch"))
		copied := time.Since(start)
		start = time.Now()
		data := sn.encode()
		encoded := time.Since(start)
		start = time.Now()
		r, err := openSnapshot(data)
		if err != nil {
			b.Fatal(err)
		}
		got, err := r.restore(sale)
		if err != nil {
			b.Fatal(err)
		}
		restored := time.Since(start)
		b.StopTimer()
		if got.Room().Waiting() != s.Room().Waiting() || got.Head != s.Head {
			b.Fatalf("restored %d waiting, head %+v; want %d, %+v", got.Room().Waiting(), got.Head, s.Room().Waiting(), s.Head)
		}
		b.ReportMetric(float64(copied.Microseconds())/1000, "copy-ms")
		b.ReportMetric(float64(encoded.Milliseconds()), "encode-ms")
		b.ReportMetric(float64(restored.Milliseconds()), "restore-ms")
		b.ReportMetric(float64(len(data))/1e6, "snapshot-MB")
		b.StartTimer()
	}
}

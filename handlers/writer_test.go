package handlers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/embed"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type env struct {
	*fgtest.Env
	js jetstream.JetStream
	st jetstream.Stream
}

func newEnv(tb testing.TB) *env {
	e := fgtest.New(tb)
	return &env{Env: e, js: e.JS, st: e.Stream}
}

func (e *env) createSale(tb testing.TB, id string, stock int64) {
	tb.Helper()
	e.CreateSale(tb, id, stock, time.Hour, t0)
}

func (e *env) appendRequests(tb testing.TB, sale string, msgs, per int) []string {
	tb.Helper()
	return e.AppendTokenRequests(tb, sale, "shopper", msgs, per, t0)
}

func (e *env) decisions(tb testing.TB, sale string) []events.DecisionBatch {
	tb.Helper()
	_, last, ok, err := stream.LastDecision(context.Background(), e.st, sale)
	if err != nil || !ok {
		tb.Fatalf("no decisions: %v", err)
	}
	var out []events.DecisionBatch
	err = stream.Read(context.Background(), e.st, events.DecisionSubject(sale), 1, last, func(m *jetstream.RawStreamMsg) error {
		db, err := events.DecodeDecisions(m.Data)
		out = append(out, db)
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func clockAt(t time.Time) func() time.Time { return func() time.Time { return t } }

// runUntil runs w until its cursor reaches seq.
func runUntil(tb testing.TB, e *env, w *Writer, sale string) {
	tb.Helper()
	info, err := e.st.Info(context.Background(), jetstream.WithSubjectFilter(events.RequestSubject(sale)))
	if err != nil {
		tb.Fatal(err)
	}
	target := info.State.LastSeq
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		db, _, ok, err := stream.LastDecision(context.Background(), e.st, sale)
		if err != nil {
			tb.Fatal(err)
		}
		if ok && db.Head.Cursor >= target {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("writer did not reach %d", target)
		}
		time.Sleep(2 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		tb.Fatal(err)
	}
}

func TestWriterDecidesEveryRequestOnceInOrder(t *testing.T) {
	e := newEnv(t)
	e.createSale(t, "s", 100)
	ids := e.appendRequests(t, "s", 60, 3) // 180 shoppers race for quota 120
	w := NewWriter(e.js, e.st, "s", WriterConfig{ID: "w1", MaxBatch: 16, Now: clockAt(t0.Add(time.Second)), Log: quiet})
	w.fillFirst = true // the first batch is full: it is sent ahead
	runUntil(t, e, w, "s")
	var got []string
	issued := 0
	for i, db := range e.decisions(t, "s") {
		if db.Head.Version != uint64(i+1) || db.Writer != "w1" {
			t.Fatalf("batch %d: version %d writer %s", i, db.Head.Version, db.Writer)
		}
		for _, d := range db.Events {
			got = append(got, d.Request)
			if d.Type == events.TypeTokenIssued {
				issued++
			}
		}
	}
	if len(got) != len(ids) {
		t.Fatalf("%d decisions for %d requests", len(got), len(ids))
	}
	for i := range ids {
		if got[i] != ids[i] {
			t.Fatalf("decision %d answers %s, request %d is %s: out of order", i, got[i], i, ids[i])
		}
	}
	if issued != 120 {
		t.Fatalf("issued %d tokens, quota 120", issued)
	}
	if w.sentAhead == 0 {
		t.Fatal("no batch was decided while the one before it was committed: the backlog path went untested")
	}
	// A restarted writer rebuilds the same state from the history.
	w2 := NewWriter(e.js, e.st, "s", WriterConfig{ID: "w2", Now: clockAt(t0.Add(time.Second)), Log: quiet})
	if err := w2.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w2.State().Head != w.State().Head {
		t.Fatalf("reloaded head %+v, writer had %+v", w2.State().Head, w.State().Head)
	}
}

// TestZombieWriterIsRefused: a writer that lost the sale (another committed
// since it loaded) has its commit refused and so announces nothing.
func TestZombieWriterIsRefused(t *testing.T) {
	e := newEnv(t)
	e.createSale(t, "s", 10)
	e.appendRequests(t, "s", 1, 2)
	zombie := NewWriter(e.js, e.st, "s", WriterConfig{ID: "zombie", Now: clockAt(t0.Add(time.Second)), Log: quiet})
	if err := zombie.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	owner := NewWriter(e.js, e.st, "s", WriterConfig{ID: "owner", Now: clockAt(t0.Add(time.Second)), Log: quiet})
	runUntil(t, e, owner, "s")
	// The zombie wakes with requests of its own to decide.
	e.appendRequests(t, "s", 1, 1)
	b := pending{}
	b.reset(zombie.state.Head.Cursor)
	b.reqs = []events.Event{{ID: events.NewIDs().New(t0), Type: events.TypeTokenRequested, Version: events.SchemaVersion, Sale: "s", Time: t0,
		Shopper: "z", Data: &events.TokenRequested{}}}
	b.msgs, b.cursor = 1, 1
	err := zombie.decideAndCommit(context.Background(), &b)
	if !errors.Is(err, ErrNotOwner) {
		t.Fatalf("zombie commit: %v, want ErrNotOwner", err)
	}
	for _, db := range e.decisions(t, "s") {
		if db.Writer != "owner" {
			t.Fatalf("a batch of %s landed", db.Writer)
		}
	}
}

// TestZombieWriterIsRefusedAhead: a writer deciding a backlog decides each
// batch while the one before it is being committed. Another writer takes the
// sale over between the zombie's fifth and sixth batches: the sixth is
// refused, nothing decided after it is sent, only the five committed batches
// are announced, and the zombie stops.
func TestZombieWriterIsRefusedAhead(t *testing.T) {
	e := newEnv(t)
	e.createSale(t, "s", 1000)
	e.appendRequests(t, "s", 200, 4)
	other := NewWriter(e.js, e.st, "s", WriterConfig{ID: "other", Now: clockAt(t0.Add(time.Second)), Log: quiet})
	commits, delivered := 0, 0
	var otherErr error
	var zombie *Writer
	sent := &publishLog{JetStream: e.js}
	zombie = NewWriter(sent, e.st, "s", WriterConfig{ID: "zombie", MaxBatch: 8, Now: clockAt(t0.Add(time.Second)), Log: quiet,
		Deliver: func(*events.DecisionBatch, uint64, uint64) { delivered++ },
		OnCommit: func(*events.DecisionBatch, int, time.Duration) {
			commits++
			if commits != 5 {
				return
			}
			// The zombie has its sixth batch decided, not yet sent.
			if v := zombie.state.Head.Version; v != 6 {
				otherErr = fmt.Errorf("at the fifth commit the zombie has decided up to batch %d, want 6", v)
				return
			}
			if otherErr = other.Load(context.Background()); otherErr != nil {
				return
			}
			b := pending{}
			b.reset(other.state.Head.Cursor)
			b.reqs = []events.Event{{ID: events.NewIDs().New(t0), Type: events.TypeTokenRequested, Version: events.SchemaVersion, Sale: "s", Time: t0,
				Shopper: "o", Data: &events.TokenRequested{}}}
			b.msgs = 1
			otherErr = other.decideAndCommit(context.Background(), &b)
		}})
	zombie.fillFirst = true // batches 1 to 4 are full from the start; 5 and 6 from what arrives meanwhile
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := zombie.Run(ctx); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("zombie: %v, want ErrNotOwner", err)
	}
	if otherErr != nil {
		t.Fatalf("the other writer: %v", otherErr)
	}
	if zombie.sentAhead == 0 {
		t.Fatal("the zombie never decided a batch while the one before it was committed")
	}
	if commits != 5 || delivered != 5 {
		t.Fatalf("the zombie announced %d batches (OnCommit) and delivered %d, want the 5 committed", commits, delivered)
	}
	if want := []uint64{1, 2, 3, 4, 5, 6}; !slices.Equal(sent.versions, want) {
		t.Fatalf("the zombie sent batches %v, want %v: nothing after the refused one", sent.versions, want)
	}
	batches := e.decisions(t, "s")
	if len(batches) != 6 {
		t.Fatalf("%d batches in the stream, want the zombie's 5 and the other's 1", len(batches))
	}
	for i, db := range batches {
		want := "zombie"
		if i == 5 {
			want = "other"
		}
		if db.Writer != want || db.Head.Version != uint64(i+1) {
			t.Fatalf("batch %d: writer %s version %d, want %s version %d", i, db.Writer, db.Head.Version, want, i+1)
		}
	}
}

// decideAndCommit decides the pending requests and commits them before it
// returns, as Run does with a batch that is not full.
func (w *Writer) decideAndCommit(ctx context.Context, b *pending) error {
	f := w.decide(b)
	if f == nil {
		return nil
	}
	w.send(ctx, f, w.headSeq)
	return w.land(ctx, f)
}

// publishLog records the version of every decision batch published through
// it, landed or not.
type publishLog struct {
	jetstream.JetStream
	mu       sync.Mutex
	versions []uint64
}

func (p *publishLog) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if db, err := events.DecodeDecisions(msg.Data); err == nil {
		p.mu.Lock()
		p.versions = append(p.versions, db.Head.Version)
		p.mu.Unlock()
	}
	return p.JetStream.PublishMsg(ctx, msg, opts...)
}

// TestWriterStopsWithoutAGap: a writer stopped in the middle of a backlog
// (here at its third commit, with the next batch in flight or decided) has
// decided a prefix of the requests: none skipped. Once its context ends, the
// consumer may drop a message and hand over the one after it; deciding that
// one would move the cursor past a request never decided.
func TestWriterStopsWithoutAGap(t *testing.T) {
	e := newEnv(t)
	for i := range 10 {
		sale := fmt.Sprintf("s%d", i)
		e.createSale(t, sale, 1000)
		ids := e.appendRequests(t, sale, 40, 4)
		ctx, cancel := context.WithCancel(context.Background())
		commits := 0
		w := NewWriter(e.js, e.st, sale, WriterConfig{ID: "w", MaxBatch: 8, Now: clockAt(t0.Add(time.Second)), Log: quiet,
			OnCommit: func(*events.DecisionBatch, int, time.Duration) {
				if commits++; commits == 3 {
					cancel()
				}
			}})
		if err := w.Run(ctx); err != nil {
			t.Fatalf("%s: %v", sale, err)
		}
		var got []string
		for _, db := range e.decisions(t, sale) {
			for _, d := range db.Events {
				got = append(got, d.Request)
			}
		}
		if len(got) == 0 || !slices.Equal(got, ids[:len(got)]) {
			t.Fatalf("%s: decided %d requests, not the first %d in order: a request was skipped", sale, len(got), len(got))
		}
	}
}

func newR3Env(t *testing.T) *env {
	t.Helper()
	c, err := embed.StartCluster(3, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for { // the meta leader may still be settling
		if err = stream.Ensure(ctx, js, stream.Config{Replicas: 3}); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	return &env{Env: &fgtest.Env{JS: js, Stream: st}, js: js, st: st}
}

// TestZombieWriterIsRefusedOnR3: on a replicated stream the dedup window is
// checked before the expected sequence; a zombie committing the same version
// as the owner must still be refused, not told "duplicate, fine".
func TestZombieWriterIsRefusedOnR3(t *testing.T) {
	if testing.Short() {
		t.Skip("three-server cluster")
	}
	e := newR3Env(t)
	e.createSale(t, "s", 10)
	e.appendRequests(t, "s", 1, 2)
	zombie := NewWriter(e.js, e.st, "s", WriterConfig{ID: "zombie", Now: clockAt(t0.Add(time.Second)), Log: quiet})
	if err := zombie.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	owner := NewWriter(e.js, e.st, "s", WriterConfig{ID: "owner", Now: clockAt(t0.Add(time.Second)), Log: quiet})
	runUntil(t, e, owner, "s")
	b := pending{}
	b.reset(zombie.state.Head.Cursor)
	b.reqs = []events.Event{{ID: events.NewIDs().New(t0), Type: events.TypeTokenRequested, Version: events.SchemaVersion, Sale: "s", Time: t0,
		Shopper: "z", Data: &events.TokenRequested{}}}
	b.msgs, b.cursor = 1, 1
	if err := zombie.decideAndCommit(context.Background(), &b); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("zombie commit on R3: %v, want ErrNotOwner", err)
	}
	for _, db := range e.decisions(t, "s") {
		if db.Writer != "owner" {
			t.Fatalf("a batch of %s landed", db.Writer)
		}
	}
	w := NewWriter(e.js, e.st, "s", WriterConfig{ID: "next", Log: quiet})
	if err := w.Load(context.Background()); err != nil {
		t.Fatalf("the next owner cannot load the sale: %v", err)
	}
}

// TestCommitRetryFindsItsOwnBatch: a commit retried after it landed (the
// reply was lost) is recognised, not mistaken for a lost sale, and lands once.
func TestCommitRetryFindsItsOwnBatch(t *testing.T) {
	e := newEnv(t)
	e.createSale(t, "s", 10)
	w := NewWriter(e.js, e.st, "s", WriterConfig{ID: "w", Now: clockAt(t0.Add(time.Second)), Log: quiet})
	if err := w.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	db := &events.DecisionBatch{Sale: "s", Writer: "w", DecidedAt: t0, Head: events.Head{Version: 1, Stock: 10, Quota: 12}}
	seq, _, err := w.commit(context.Background(), db, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The retry, as if the first reply had been lost.
	again, _, err := w.commit(context.Background(), db, 0)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if again != seq {
		t.Fatalf("retry found its batch at %d, it is at %d", again, seq)
	}
	if n := len(e.decisions(t, "s")); n != 1 {
		t.Fatalf("%d batches in the stream, want 1", n)
	}
}

// TestBatchesFitAStandardMaxPayload: with the longest ids allowed, many
// requests at once and a mass expiry in the same batch, every decision batch
// fits the 1 MiB max payload of a standalone NATS server.
func TestBatchesFitAStandardMaxPayload(t *testing.T) {
	e := &env{Env: fgtest.NewWith(t, embed.Options{MaxPayload: 1 << 20})}
	e.js, e.st = e.JS, e.Stream
	sale := strings.Repeat("s", 64)
	e.CreateSale(t, sale, 100000, time.Second, t0)
	long := strings.Repeat("x", 100) // shopper ids: 100 + the suffix
	e.AppendTokenRequests(t, sale, long, 60, 100, t0)
	w := NewWriter(e.js, e.st, sale, WriterConfig{ID: strings.Repeat("w", 60), Now: clockAt(t0), Log: quiet})
	runUntil(t, e, w, sale)
	// Everything expires at once; new requests arrive in the same batches.
	e.AppendTokenRequests(t, sale, long+"b", 60, 100, t0)
	w = NewWriter(e.js, e.st, sale, WriterConfig{ID: strings.Repeat("v", 60), Now: clockAt(t0.Add(time.Hour)), Log: quiet})
	runUntil(t, e, w, sale)
	if got := w.State().Head; got.Expired < MaxExpiriesPerBatch || got.Issued != 12000 {
		t.Fatalf("head %+v", got)
	}
	largest := 0
	for _, db := range e.decisions(t, sale) {
		b, _ := events.EncodeDecisions(db)
		largest = max(largest, len(b))
	}
	t.Logf("largest decision batch: %d bytes", largest)
}

// BenchmarkWriter measures one sale's writer deciding requests with durable
// group commits on the embedded JetStream file store. The requests are
// appended beforehand, 64 per message as the front's group append makes them;
// the clock stops when the last one is committed.
func BenchmarkWriter(b *testing.B) {
	fgtest.HeapFloor(b) // the collector as in serve, and no fresh pages to fault in
	e := newEnv(b)
	n := max(b.N, 1000)
	e.createSale(b, "bench", int64(n))
	e.appendRequests(b, "bench", (n+63)/64, 64)
	info, err := e.st.Info(context.Background(), jetstream.WithSubjectFilter(events.RequestSubject("bench")))
	if err != nil {
		b.Fatal(err)
	}
	target := info.State.LastSeq
	// The writer itself says when it committed the last request: polling
	// the stream for it would cost the benchmark as much as the writer.
	var batches, reqs atomic.Int64
	reached := make(chan struct{})
	w := NewWriter(e.js, e.st, "bench", WriterConfig{ID: "w", Log: quiet, OnCommit: func(db *events.DecisionBatch, r int, _ time.Duration) {
		batches.Add(1)
		reqs.Add(int64(r))
		if db.Head.Cursor == target {
			close(reached)
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ResetTimer()
	start := time.Now()
	go func() { done <- w.Run(ctx) }()
	select {
	case <-reached:
	case err := <-done:
		b.Fatalf("writer stopped: %v", err)
	case <-time.After(2 * time.Minute):
		b.Fatalf("writer did not reach %d", target)
	}
	el := time.Since(start)
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(reqs.Load())/el.Seconds(), "decisions/s")
	b.ReportMetric(float64(reqs.Load())/float64(max(batches.Load(), 1)), "requests/batch")
}

// TestWriterStopsAtRequestsOfANewerBuild: a request this build cannot read
// because a newer flashgate wrote it is not skipped (its shopper would never
// be answered): the writer stops before deciding it.
func TestWriterStopsAtRequestsOfANewerBuild(t *testing.T) {
	e := newEnv(t)
	e.createSale(t, "s", 10)
	e.appendRequests(t, "s", 1, 2)
	newer := `{"requests":[{"id":"01JE2W6N2X7Q8V9B0C1D2E3F4G","type":"TokenRequested","v":99,"sale":"s","time":"2026-12-01T10:00:00Z","shopper":"x","data":{}}]}`
	if _, err := e.js.Publish(context.Background(), events.RequestSubject("s"), []byte(newer)); err != nil {
		t.Fatal(err)
	}
	w := NewWriter(e.js, e.st, "s", WriterConfig{ID: "w", Now: clockAt(t0.Add(time.Second)), Log: quiet})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := w.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "newer flashgate") {
		t.Fatalf("writer: %v, want a stop at the newer request", err)
	}
	if db, _, ok, _ := stream.LastDecision(context.Background(), e.st, "s"); ok && db.Head.Cursor >= 3 {
		t.Fatalf("the cursor passed the unread request: %+v", db.Head)
	}
}

// seqMsg is a request message at a stream sequence, for pending.add.
type seqMsg struct {
	jetstream.Msg
	seq  uint64
	data []byte
}

func (m seqMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq}}, nil
}
func (m seqMsg) Data() []byte { return m.data }

// TestPendingRefusesOutOfOrder: a request message at or before the cursor
// (decided already, or overtaken by a later one) stops the batch with an
// error instead of being decided out of order or twice.
func TestPendingRefusesOutOfOrder(t *testing.T) {
	data, err := events.EncodeRequests(events.RequestBatch{Requests: []events.Event{{ID: events.NewIDs().New(t0),
		Type: events.TypeTokenRequested, Version: events.SchemaVersion, Sale: "s", Time: t0, Shopper: "a", Data: &events.TokenRequested{}}}})
	if err != nil {
		t.Fatal(err)
	}
	var b pending
	b.reset(10)
	if err := b.add("s", seqMsg{seq: 10, data: data}); err == nil {
		t.Fatal("a message at the decided cursor was taken")
	}
	if err := b.add("s", seqMsg{seq: 12, data: data}); err != nil {
		t.Fatal(err)
	}
	if err := b.add("s", seqMsg{seq: 11, data: data}); err == nil || !strings.Contains(err.Error(), "out of order") {
		t.Fatalf("a message overtaken by a later one: %v", err)
	}
	if err := b.add("s", seqMsg{seq: 15, data: data}); err != nil {
		t.Fatal(err)
	}
	if b.from != 12 || b.cursor != 15 || len(b.reqs) != 2 {
		t.Fatalf("batch from %d cursor %d with %d requests, want 12, 15, 2", b.from, b.cursor, len(b.reqs))
	}
}

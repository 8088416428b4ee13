package handlers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// WriterConfig tunes a sale's writer.
type WriterConfig struct {
	// ID names this writer incarnation; it is recorded in every batch it
	// commits, so that a retried commit recognises its own batch.
	ID string
	// MaxBatch caps the requests decided in one commit. Default 1024.
	MaxBatch int
	// MaxBatchBytes caps the request bytes decided in one commit, so that
	// the decision batch stays well inside the server's max payload (1 MiB
	// by default on a standalone NATS server) even with the longest ids and
	// MaxExpiriesPerBatch reclaims in it. Default 128 KiB.
	MaxBatchBytes int
	// Now is the clock decisions are made with. Default time.Now.
	Now func() time.Time
	// Log receives the writer's notable events. Default slog.Default().
	Log *slog.Logger
	// OnCommit, if set, is called after each committed batch (metrics).
	OnCommit func(db *events.DecisionBatch, requests int, took time.Duration)
	// Deliver, if set, is handed each batch once JetStream acknowledged it,
	// with the stream sequences of the sale's previous batch (0: none) and
	// of this one: this process's front answers its shoppers from it
	// without waiting for the stream to bring the batch back. It must not
	// keep or modify db beyond what events.Event values allow, and must be
	// quick: the next batch waits for it.
	Deliver func(db *events.DecisionBatch, prevSeq, seq uint64)

	// Snapshots (see snapshot.go): the writer saves its state in the
	// snapshot bucket (stream.SnapshotBucket) once SnapshotEvery decisions
	// were committed since the last one (default 100,000; negative: never by
	// count) or, if any was, SnapshotInterval passed (default 5 minutes;
	// negative: never by time); never within SnapshotMinGap of the last one
	// (default 10 s). The copy is made between two batches; encoding and
	// upload run in the background, one at a time: a snapshot due while the
	// last one is still uploading is skipped. A new owner loads the latest
	// and replays only the batches after it.
	SnapshotEvery    int
	SnapshotInterval time.Duration
	SnapshotMinGap   time.Duration
	// NoSnapshots makes the writer neither read nor save snapshots: Load
	// replays the sale's whole history.
	NoSnapshots bool

	// IdleAfter, if positive, makes Run return ErrIdle once the writer has
	// committed nothing for that long while no request waits and the sale
	// needs no batch within IdleAfter either (no token expires, the waiting
	// room has no step due). It saves a snapshot first, so that the next
	// writer loads quickly. The caller drops the writer, and with it the
	// sale's state, and starts a new one when a request comes or at
	// NextWake. 0: never.
	IdleAfter time.Duration
}

func (c *WriterConfig) defaults() {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 1024
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 128 << 10
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = 100_000
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = 5 * time.Minute
	}
	if c.SnapshotMinGap <= 0 {
		c.SnapshotMinGap = 10 * time.Second
	}
}

// Writer is the one process deciding a sale's requests. Its commit is an
// append of the decision batch to the sale's decision subject, guarded by
// the expected last sequence of that subject: the batch is the commit and
// the outbox at once, so a writer that lost the sale has its append refused
// and announces nothing (shoppers learn decisions only from the stream).
type Writer struct {
	js        jetstream.JetStream
	st        jetstream.Stream
	sale      string
	cfg       WriterConfig
	state     *State
	headSeq   uint64    // stream sequence of the last committed batch (0: none)
	lastAt    time.Time // decision time of the last committed batch
	decidedAt time.Time // decision time of the last decided batch, committed or in flight
	sentAhead int       // batches sent to be committed while the next was decided (tests read it)
	last      []byte    // the last committed batch as stored (a snapshot records its digest)
	loaded    uint64    // the stream sequence of the snapshot Load started from (0: none)

	snaps     jetstream.ObjectStore // the snapshot bucket; nil: not had yet. Set by Load, or by a snapshot's goroutine while it holds snapIdle
	noBucket  atomic.Bool           // there is no snapshot bucket: no snapshots
	snapRetry time.Time             // a snapshot skipped (the last one was still being saved) is tried again from then
	sinceSnap int                   // decisions committed (or replayed) since the last snapshot
	lastSnap  time.Time             // when the last snapshot was taken (or the sale loaded)
	snapIdle  chan struct{}         // holds a token while no snapshot is being saved
	snapWG    sync.WaitGroup

	active time.Time // when the last batch landed (or Run began)
	wake   time.Time // after ErrIdle: when the sale next needs a batch (zero: only on a request)
	cursor uint64    // after ErrIdle: the last request decided

	// fillFirst (tests only) makes Run wait, before deciding, until its
	// input holds as many request messages as it can (MaxBatch), so that a
	// backlog's first batches are full and take the send-ahead path however
	// the consumer's goroutine is scheduled. With fewer messages waiting,
	// Run decides nothing until its context ends.
	fillFirst bool
}

// NewWriter returns a writer for sale. Run loads the sale and decides.
func NewWriter(js jetstream.JetStream, st jetstream.Stream, sale string, cfg WriterConfig) *Writer {
	cfg.defaults()
	w := &Writer{js: js, st: st, sale: sale, cfg: cfg, snapIdle: make(chan struct{}, 1)}
	w.snapIdle <- struct{}{}
	return w
}

// State returns the writer's state (for tests and benchmarks: do not call
// while Run is deciding).
func (w *Writer) State() *State { return w.state }

// Load rebuilds the sale's state from its configuration and its decision
// history: from the latest snapshot and the batches after it if there is a
// snapshot that matches the stream, else from the first batch.
func (w *Writer) Load(ctx context.Context) error { return w.load(ctx, !w.cfg.NoSnapshots) }

func (w *Writer) load(ctx context.Context, useSnapshot bool) error {
	start := time.Now()
	ev, _, err := stream.Sale(ctx, w.st, w.sale)
	if err != nil {
		return err
	}
	sale, err := SaleFromEvent(ev)
	if err != nil {
		return err
	}
	state, snapSeq, lastAt, last := NewState(sale), uint64(0), time.Time{}, []byte(nil)
	if useSnapshot {
		if snap, seq, at, batch := w.loadSnapshot(ctx, sale); snap != nil {
			state, snapSeq, lastAt, last = snap, seq, at, batch
		}
	}
	_, lastSeq, ok, err := stream.LastDecision(ctx, w.st, w.sale)
	if err != nil {
		return err
	}
	if snapSeq > 0 && (!ok || lastSeq < snapSeq) {
		// The batch was there a moment ago: the stream was rewritten under us.
		w.cfg.Log.Warn("snapshot ignored: the sale's decisions end before it", "sale", w.sale, "snapshot_seq", snapSeq, "last_seq", lastSeq)
		state, snapSeq, lastAt, last = NewState(sale), 0, time.Time{}, nil
	}
	replayed, batches := 0, 0
	if ok && lastSeq > snapSeq {
		err = stream.Read(ctx, w.st, events.DecisionSubject(w.sale), snapSeq+1, lastSeq, func(m *jetstream.RawStreamMsg) error {
			db, err := events.DecodeDecisions(m.Data)
			if err != nil {
				return fmt.Errorf("decision batch at %d: %w", m.Sequence, err)
			}
			if db.Head.Version != state.Head.Version+1 {
				return fmt.Errorf("%w: the batch at %d has version %d after %d", errNotApplied, m.Sequence, db.Head.Version, state.Head.Version)
			}
			lastAt, last = db.DecidedAt, m.Data
			replayed += len(db.Events)
			batches++
			if err := state.Apply(db); err != nil {
				return fmt.Errorf("%w: %w", errNotApplied, err)
			}
			return nil
		})
		if errors.Is(err, errNotApplied) && snapSeq > 0 {
			// The snapshot matched its batch, yet what came after does not
			// apply to it: it is not to be trusted, the stream is. (Any
			// other error, a read that timed out, is not the snapshot's.)
			w.cfg.Log.Warn("snapshot not used: the batches after it do not apply to it; replaying the sale from its first batch",
				"sale", w.sale, "snapshot_seq", snapSeq, "err", err)
			w.dropSnapshot(ctx, snapSeq)
			return w.load(ctx, false)
		}
		if err != nil {
			return fmt.Errorf("rebuild sale %s: %w", w.sale, err)
		}
	}
	w.state, w.headSeq, w.lastAt, w.decidedAt, w.last, w.loaded = state, lastSeq, lastAt, lastAt, last, snapSeq
	w.sinceSnap, w.lastSnap = replayed, time.Now()
	if snapSeq > 0 || batches > 1000 || time.Since(start) > time.Second { // a slow load says so
		w.cfg.Log.Info("sale loaded", "sale", w.sale, "version", state.Head.Version, "snapshot_seq", snapSeq,
			"batches_replayed", batches, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// errNotApplied marks a decision batch that does not follow from the state
// it is replayed onto.
var errNotApplied = errors.New("a batch does not apply")

// ErrIdle is what Run returns when the writer retired for want of work
// (WriterConfig.IdleAfter).
var ErrIdle = errors.New("writer idle")

// Idle reports, after Run returned ErrIdle, the last request the writer
// decided (its stream sequence) and when the sale next needs a batch
// without a request (ok false: only when a request comes).
func (w *Writer) Idle() (cursor uint64, wake time.Time, ok bool) {
	return w.cursor, w.wake, !w.wake.IsZero()
}

// Run decides the sale's requests until ctx ends (it returns nil then), its
// commit is refused (ErrNotOwner), a commit's outcome cannot be learned
// (an error: call Run again, it reloads), or it retires idle (ErrIdle).
func (w *Writer) Run(ctx context.Context) error {
	if err := w.Load(ctx); err != nil {
		return err
	}
	defer w.snapWG.Wait() // after cancel: a snapshot still uploading gets snapshotGrace to finish
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	in := make(chan jetstream.Msg, w.cfg.MaxBatch)
	cons, err := w.st.OrderedConsumer(cctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.RequestSubject(w.sale)},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    w.state.Head.Cursor + 1,
	})
	if err != nil {
		return fmt.Errorf("writer %s: follow requests: %w", w.sale, err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case in <- m:
		case <-cctx.Done():
		}
	}, stream.PullBuffer(4*w.cfg.MaxBatchBytes),
		// Two missed heartbeats reset the consumer: with the default (5 s)
		// a lost NATS node hosting it stopped the sale's decisions for 10 s.
		jetstream.PullHeartbeat(stream.ReadHeartbeat),
		stream.LogConsumeErrors(w.cfg.Log, "writer requests", "sale", w.sale))
	if err != nil {
		return fmt.Errorf("writer %s: follow requests: %w", w.sale, err)
	}
	defer stream.Stop(cc)
	w.cfg.Log.Info("writer started", "sale", w.sale, "writer", w.cfg.ID, "version", w.state.Head.Version, "cursor", w.state.Head.Cursor)
	for w.fillFirst && len(in) < cap(in) {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Millisecond):
		}
	}

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var idle <-chan time.Time // nil: the writer never retires
	var idleTimer *time.Timer
	w.active = time.Now()
	if w.cfg.IdleAfter > 0 {
		idleTimer = time.NewTimer(w.cfg.IdleAfter)
		defer idleTimer.Stop()
		idle = idleTimer.C
	}
	var b pending
	// fly is a full batch whose commit runs while the next one is decided
	// (nil: none). Only a full batch is sent ahead: a backlog (a new owner
	// catching up, a burst bigger than a batch) is then decided at the pace
	// of the slower of the writer and the stream, not of the two in turn.
	// A batch that is not full is committed before the next one is taken,
	// so that everything arriving meanwhile joins the next commit (group
	// commit). The next batch is sent only once the one in flight landed,
	// with that one's sequence as its expected last: a refused commit stops
	// the writer before anything decided after it is sent.
	var fly *flight
	landFly := func() error {
		f := fly
		fly = nil
		return w.land(ctx, f)
	}
	defer func() {
		if fly != nil { // Run is failing: let the commit end, and count it if it landed
			_ = landFly()
		}
	}()
	for {
		w.armExpiry(timer)
		b.reset(w.state.Head.Cursor)
		if fly == nil {
			select {
			case <-ctx.Done():
				return nil
			case m := <-in:
				if err := b.add(w.sale, m); err != nil {
					return err
				}
			case <-timer.C:
			case <-idle:
				if w.retire(cctx, in, idleTimer) {
					return ErrIdle
				}
				continue
			}
		} else {
			select {
			case m := <-in:
				if err := b.add(w.sale, m); err != nil {
					return err
				}
			default: // the backlog is gone: finish the batch in flight first
			}
			if b.msgs == 0 || ctx.Err() != nil {
				if err := landFly(); err != nil {
					return err
				}
				if ctx.Err() != nil {
					return nil
				}
				w.maybeSnapshot(cctx)
				continue
			}
		}
		// Group commit: everything that arrived while the last commit was in
		// flight joins this batch, up to MaxBatch requests. A request message
		// is never split.
	drain:
		for len(b.reqs) < w.cfg.MaxBatch && b.bytes < w.cfg.MaxBatchBytes {
			select {
			case m := <-in:
				if err := b.add(w.sale, m); err != nil {
					return err
				}
			default:
				break drain
			}
		}
		if ctx.Err() != nil {
			// Stopping: decide nothing more. Once ctx ended, the consumer's
			// callback may drop a message and hand over the one after it, so
			// what was taken may have a gap: deciding it would move the
			// cursor past a request never decided. Anything handed over
			// after the end is taken after it, so this check sees the end.
			if fly != nil {
				return landFly()
			}
			return nil
		}
		next := w.decide(&b)
		if fly != nil {
			if err := landFly(); err != nil {
				return err // next is dropped unsent: its decisions were never announced
			}
		}
		if next == nil {
			continue // the timer fired early: nothing to commit
		}
		full := len(b.reqs) >= w.cfg.MaxBatch || b.bytes >= w.cfg.MaxBatchBytes
		if full && !w.snapshotDue() {
			fly = next
			w.sentAhead++
			go w.send(ctx, fly, w.headSeq)
			continue
		}
		w.send(ctx, next, w.headSeq)
		if err := w.land(ctx, next); err != nil {
			return err
		}
		w.maybeSnapshot(cctx)
	}
}

// retireLook is how soon a writer that would retire but for a snapshot
// (to start, or still being saved) looks again.
const retireLook = 100 * time.Millisecond

// retire decides, when the idle timer fired, whether the writer retires:
// it has committed nothing for IdleAfter, no request message waits in its
// input, the sale needs no batch within IdleAfter, and what it committed is
// in a saved snapshot (it starts one, in the background, and looks again
// once it is saved; requests are decided meanwhile). If so it records what
// Idle reports; if not it sets the timer for the next look.
func (w *Writer) retire(ctx context.Context, in <-chan jetstream.Msg, t *time.Timer) bool {
	if rest := w.cfg.IdleAfter - time.Since(w.active); rest > 0 {
		t.Reset(rest)
		return false
	}
	now := w.cfg.Now()
	at, soon := w.state.NextWake(now)
	if len(in) > 0 || (soon && at.Sub(now) < w.cfg.IdleAfter) {
		t.Reset(w.cfg.IdleAfter)
		return false
	}
	select {
	case <-w.snapIdle:
		w.snapIdle <- struct{}{}
	default: // a snapshot is being saved: look again once it is
		t.Reset(retireLook)
		return false
	}
	if w.unsaved() {
		w.startSnapshot(ctx) // the token is free: only Run starts snapshots
		t.Reset(retireLook)
		return false
	}
	w.cursor, w.wake = w.state.Head.Cursor, time.Time{}
	if soon {
		w.wake = at
	}
	log := []any{"sale", w.sale, "writer", w.cfg.ID, "version", w.state.Head.Version, "cursor", w.cursor}
	if soon {
		log = append(log, "next_wake", w.wake)
	}
	w.cfg.Log.Info("writer idle: its state is released until a request comes", log...)
	return true
}

// pending is the request messages taken for the next batch.
type pending struct {
	msgs   int
	bytes  int
	from   uint64
	cursor uint64
	reqs   []events.Event
}

func (b *pending) reset(cursor uint64) {
	b.msgs, b.bytes, b.from, b.cursor = 0, 0, 0, cursor
	clear(b.reqs)
	b.reqs = b.reqs[:0]
}

func (b *pending) add(sale string, m jetstream.Msg) error {
	meta, err := m.Metadata()
	if err != nil {
		return fmt.Errorf("writer %s: request metadata: %w", sale, err)
	}
	if meta.Sequence.Stream <= b.cursor {
		// The consumer is ordered, so this is not expected; were it to
		// happen (a reset racing a delivery), deciding on would break the
		// order or decide a request twice. Run fails and the sale reloads.
		return fmt.Errorf("writer %s: request message %d after %d: out of order", sale, meta.Sequence.Stream, b.cursor)
	}
	if b.msgs == 0 {
		b.from = meta.Sequence.Stream
	}
	b.msgs++
	b.bytes += len(m.Data())
	b.cursor = meta.Sequence.Stream
	reqs, err := RequestsOf(sale, m.Data())
	if err != nil {
		return fmt.Errorf("writer %s at %d: %w", sale, meta.Sequence.Stream, err)
	}
	b.reqs = append(b.reqs, reqs...)
	return nil
}

// isOurs reports whether the message at seq is this writer's batch version.
func (w *Writer) isOurs(ctx context.Context, seq, version uint64) bool {
	m, err := w.st.GetMsg(context.WithoutCancel(ctx), seq)
	if err != nil || m.Subject != events.DecisionSubject(w.sale) {
		return false
	}
	db, err := events.DecodeDecisions(m.Data)
	return err == nil && db.Writer == w.cfg.ID && db.Head.Version == version
}

// armExpiry sets the timer to the sale's next wake (a token expiry, the
// waiting room's next step), or far away.
func (w *Writer) armExpiry(t *time.Timer) {
	d := time.Hour
	now := w.cfg.Now()
	if at, ok := w.state.NextWake(now); ok {
		d = max(at.Sub(now), 0)
	}
	t.Reset(d)
}

// flight is a decided batch on its way into the stream.
type flight struct {
	db      *events.DecisionBatch
	reqs    int    // requests decided in it
	firstID string // the first and last of them (for the log)
	lastID  string
	start   time.Time // when its decision began
	prevSeq uint64    // stream sequence of the sale's batch before it (0: none): set when it is sent

	// Set by send, read after done is closed.
	seq    uint64
	data   []byte
	err    error
	landed time.Time // when the commit's answer came
	done   chan struct{}
}

// decide decides the pending requests and returns the batch to commit, or
// nil if there is nothing to commit (the timer fired early). The state
// moves on at once, Head's version and cursor included: if the commit
// fails, Run returns and the next Run reloads.
func (w *Writer) decide(b *pending) *flight {
	start := time.Now()
	now := w.cfg.Now().UTC().Round(0)
	if now.Before(w.decidedAt) { // decision times never go back, even if the clock does
		now = w.decidedAt
	}
	decisions := w.state.Decide(now, b.reqs)
	if len(decisions) == 0 && b.msgs == 0 {
		return nil
	}
	head := w.state.Head
	head.Version++
	head.Cursor = b.cursor
	w.state.Head, w.decidedAt = head, now
	db := &events.DecisionBatch{Sale: w.sale, Writer: w.cfg.ID, DecidedAt: now, FromSeq: b.from, Head: head, Events: decisions}
	f := &flight{db: db, reqs: len(b.reqs), start: start, done: make(chan struct{})}
	if len(b.reqs) > 0 {
		f.firstID, f.lastID = b.reqs[0].ID, b.reqs[len(b.reqs)-1].ID
	}
	return f
}

// send commits f after the sale's batch at prev. It writes only f, so it
// may run on while the writer decides the next batch (go w.send).
func (w *Writer) send(ctx context.Context, f *flight, prev uint64) {
	defer close(f.done)
	f.prevSeq = prev
	f.seq, f.data, f.err = w.commit(ctx, f.db, prev)
	f.landed = time.Now()
}

// land waits for f's commit and, if it succeeded, makes it the writer's
// last committed batch and hands it to Deliver and OnCommit.
func (w *Writer) land(ctx context.Context, f *flight) error {
	<-f.done
	if f.err != nil {
		return f.err
	}
	db := f.db
	w.headSeq, w.last, w.lastAt, w.active = f.seq, f.data, db.DecidedAt, f.landed
	w.sinceSnap += len(db.Events)
	if w.cfg.Deliver != nil {
		w.cfg.Deliver(db, f.prevSeq, f.seq)
	}
	if w.cfg.OnCommit != nil {
		w.cfg.OnCommit(db, f.reqs, f.landed.Sub(f.start))
	}
	if f.reqs > 0 && w.cfg.Log.Enabled(ctx, slog.LevelDebug) {
		w.cfg.Log.Debug("batch committed", "sale", w.sale, "version", db.Head.Version, "requests", f.reqs,
			"decisions", len(db.Events), "first_request_id", f.firstID, "last_request_id", f.lastID,
			"took", f.landed.Sub(f.start))
	}
	return nil
}

// commit appends the batch if and only if the sale's decision subject still
// ends at the batch at stream sequence prev (0: the sale has none), and
// returns the batch's sequence and bytes as stored.
func (w *Writer) commit(ctx context.Context, db *events.DecisionBatch, prev uint64) (uint64, []byte, error) {
	data, err := events.EncodeDecisions(*db)
	if err != nil {
		return 0, nil, fmt.Errorf("writer %s: %w", w.sale, err)
	}
	msg := nats.NewMsg(events.DecisionSubject(w.sale))
	msg.Data = data
	opts := []jetstream.PublishOpt{
		jetstream.WithExpectLastSequencePerSubject(prev),
		jetstream.WithMsgID(events.DecisionMsgID(w.sale, db.Head.Version, w.cfg.ID)),
	}
	backoff := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		ack, err := w.js.PublishMsg(pctx, msg, opts...)
		cancel()
		if err == nil && ack.Duplicate {
			// Our own earlier attempt landed; make sure of it before we
			// believe it: only a batch of ours at this version will do.
			if !w.isOurs(ctx, ack.Sequence, db.Head.Version) {
				w.cfg.Log.Warn("writer lost the sale: duplicate ack for a batch not ours", "sale", w.sale, "writer", w.cfg.ID)
				return 0, nil, ErrNotOwner
			}
		}
		if err == nil {
			return ack.Sequence, data, nil
		}
		if stream.IsWrongLastSequence(err) {
			// Either another writer committed, or this is the retry of a
			// commit that landed (a single server checks the expectation
			// before the dedup window): look for our own batch.
			last, seq, ok, lerr := stream.LastDecision(context.WithoutCancel(ctx), w.st, w.sale)
			if lerr == nil && ok && last.Writer == w.cfg.ID && last.Head.Version == db.Head.Version {
				return seq, data, nil // our batch, as we encoded it
			}
			w.cfg.Log.Warn("writer lost the sale: commit refused", "sale", w.sale, "writer", w.cfg.ID, "version", db.Head.Version)
			return 0, nil, ErrNotOwner
		}
		if attempt == 5 {
			return 0, nil, fmt.Errorf("writer %s: commit of batch %d: outcome unknown after %d attempts: %w", w.sale, db.Head.Version, attempt, err)
		}
		w.cfg.Log.Warn("writer commit failed, retrying", "sale", w.sale, "version", db.Head.Version, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			// Keep trying a little while shutting down: the batch may be
			// half-way, and a clean answer beats an unknown one.
		}
		backoff *= 2
	}
}

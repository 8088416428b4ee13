// Package front is the process side of a shopper's request: it keeps every
// sale's configuration and latest head in memory (for the cheap checks and
// the sale view), appends requests to the stream in groups, and hands each
// waiting request its decision when the sale's writer has committed it.
//
// Decisions reach the front only through a JetStream consumer of the
// decision subjects, so a decision is never seen before it is stored: a
// writer whose commit was refused announces nothing.
//
// For a sale with a waiting room the front also folds every decision into
// its own copy of the room (see queue.go): positions, estimates and
// admissions are read from memory, and the front tells the writer which
// tickets' shoppers are still there and which took their token.
package front

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/handlers"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors a caller maps to 503.
var (
	// ErrOverloaded means a bound was reached: too many requests in flight.
	ErrOverloaded = errors.New("overloaded")
	// ErrUnavailable means the stream could not take the request.
	ErrUnavailable = errors.New("event stream unavailable")
	// ErrNotReady means the front has not loaded the sales yet.
	ErrNotReady = errors.New("not ready")
	// ErrNotAppended (an ErrUnavailable) means the request was given up
	// before any append took it: it is not stored and never will be, so
	// what it spent (a human check's solution) may be given back.
	ErrNotAppended = fmt.Errorf("%w: not appended", ErrUnavailable)
)

// Config tunes a front.
type Config struct {
	// MaxInFlight bounds the requests waiting for a decision. Default 16384.
	MaxInFlight int
	// QueueLen bounds each sale's queue of requests not yet appended. Default 8192.
	QueueLen int
	// MaxAppendBatch caps the requests appended in one message. Default 512.
	MaxAppendBatch int
	// AppendTimeout bounds one append. Default 2 s.
	AppendTimeout time.Duration
	// AppendSlack is what a waiting request allows, on top of the appends'
	// timeouts, for the appender's own delays before it gives up on its
	// append (see Pending.Wait). Default 1 s.
	AppendSlack time.Duration
	// RecentDecisions is how many decisions are kept for polling. Default 65536.
	RecentDecisions int
	// FloodWaiting is how many requests waiting for their decisions at once
	// make a flood (see Flooded). Default 8.
	FloodWaiting int64
	// RecentOrders is how many accepted purchases are kept besides, so that
	// a shopper finds a new order while the views lag behind a flood of
	// other requests. Default 65536.
	RecentOrders int
	// OnSale is told of every sale the front sees (the writer manager's Add).
	OnSale func(sale string)
	// OnBatch is told of every committed decision batch (metrics).
	OnBatch func(db *events.DecisionBatch)
	// Now is the clock of the waiting room's estimates, presence pings and
	// the flood detector (Flooded). Default time.Now.
	Now func() time.Time
	Log *slog.Logger
}

func (c *Config) defaults() {
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 16384
	}
	if c.QueueLen <= 0 {
		c.QueueLen = 8192
	}
	if c.MaxAppendBatch <= 0 {
		c.MaxAppendBatch = 512
	}
	if c.AppendTimeout <= 0 {
		c.AppendTimeout = 2 * time.Second
	}
	if c.AppendSlack <= 0 {
		c.AppendSlack = time.Second
	}
	if c.RecentDecisions <= 0 {
		c.RecentDecisions = 65536
	}
	if c.RecentOrders <= 0 {
		c.RecentOrders = 65536
	}
	if c.FloodWaiting <= 0 {
		c.FloodWaiting = 8
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// SaleView is what the front knows of a sale.
type SaleView struct {
	Sale handlers.Sale
	Head events.Head
	// For a sale with a queue: tickets waiting and admissions so far, as
	// of the last batch.
	QueueWaiting  int
	QueueAdmitted int64
}

// Front is one process's side of the shoppers' requests.
type Front struct {
	js  jetstream.JetStream
	st  jetstream.Stream
	cfg Config

	mu        sync.RWMutex
	sales     map[string]*SaleView
	stats     map[string]*Stats
	appenders map[string]*appender
	rooms     map[string]*roomView // the waiting rooms, by sale
	ids       *events.IDs          // ids of the requests the front sends itself

	// decMu orders the processing of decision batches, which come from
	// the stream's consumer and, for this process's own writers, straight
	// from the writer once its commit is acknowledged; lastDec is each
	// sale's last batch processed (its stream sequence).
	decMu   sync.Mutex
	lastDec map[string]uint64

	waiters *waiters
	floodAt atomic.Int64 // unix nanos of the last Submit that found a flood
	recent  *recent      // decisions, by request
	orders  *recent      // accepted purchases, by request (= order id)
	ready   chan struct{}
	ctx     context.Context
	wg      sync.WaitGroup
}

// New returns a front; Run starts it.
func New(js jetstream.JetStream, st jetstream.Stream, cfg Config) *Front {
	cfg.defaults()
	return &Front{
		js: js, st: st, cfg: cfg,
		sales:     make(map[string]*SaleView),
		stats:     make(map[string]*Stats),
		appenders: make(map[string]*appender),
		rooms:     make(map[string]*roomView),
		lastDec:   make(map[string]uint64),
		ids:       events.NewIDs(),
		waiters:   newWaiters(cfg.MaxInFlight),
		recent:    newRecent(cfg.RecentDecisions),
		orders:    newRecent(cfg.RecentOrders),
		ready:     make(chan struct{}),
	}
}

// Ready is closed once the front has loaded every sale.
func (f *Front) Ready() <-chan struct{} { return f.ready }

// Run loads the sales and follows the sale and decision subjects until ctx
// ends. It returns nil on cancel, after the appenders stopped.
func (f *Front) Run(ctx context.Context) error {
	f.mu.Lock()
	f.ctx = ctx
	f.mu.Unlock()
	defer f.wg.Wait()
	info, err := f.st.Info(ctx)
	if err != nil {
		return fmt.Errorf("front: %w", err)
	}
	start := info.State.LastSeq + 1
	ids, err := stream.SaleIDs(ctx, f.st)
	if err != nil {
		return fmt.Errorf("front: %w", err)
	}
	for _, id := range ids {
		ev, _, err := stream.Sale(ctx, f.st, id)
		if err != nil {
			f.cfg.Log.Error("front: sale unreadable, skipped", "sale", id, "err", err)
			continue
		}
		f.saleCreated(ev)
		db, seq, ok, err := stream.LastDecision(ctx, f.st, id)
		if err != nil {
			return fmt.Errorf("front: %w", err)
		}
		if ok {
			f.applyHead(&db)
			// The stream brings the batches after start-1 again (a writer
			// may have committed since): they are processed then, in order
			// (the head and the room skip what they have).
			f.decMu.Lock()
			f.lastDec[id] = min(seq, start-1)
			f.decMu.Unlock()
			if f.roomOf(id) != nil {
				// The room is folded from every decision: read the history.
				if err := f.replayQueue(ctx, id, seq); err != nil {
					return fmt.Errorf("front: waiting room of %s: %w", id, err)
				}
			}
		}
	}
	cons, err := f.st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectSaleAll, events.SubjectDecAll},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    start,
	})
	if err != nil {
		return fmt.Errorf("front: follow decisions: %w", err)
	}
	// A heartbeat every second (stream.ReadHeartbeat): otherwise the
	// shoppers of sales written by other processes get no answer here for
	// up to 10 s after the NATS server holding this consumer is lost.
	// handle never blocks for long.
	cc, err := cons.Consume(f.handle, stream.PullBuffer(32<<20),
		jetstream.PullHeartbeat(stream.ReadHeartbeat), stream.LogConsumeErrors(f.cfg.Log, "front decisions"))
	if err != nil {
		return fmt.Errorf("front: follow decisions: %w", err)
	}
	close(f.ready)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.presence(ctx)
	}()
	<-ctx.Done()
	stream.Stop(cc)
	return nil
}

func (f *Front) handle(m jetstream.Msg) {
	subj := m.Subject()
	switch {
	case len(subj) > len(events.SubjectSalePfx) && subj[:len(events.SubjectSalePfx)] == events.SubjectSalePfx:
		ev, err := events.DecodeEvent(m.Data())
		if err != nil || ev.Type != events.TypeSaleCreated {
			f.cfg.Log.Error("front: bad sale event", "subject", subj, "err", err)
			return
		}
		f.saleCreated(ev)
	default:
		sale, err := events.SaleOfSubject(subj)
		md, merr := m.Metadata()
		if err != nil || merr != nil {
			f.cfg.Log.Error("front: bad decision message", "subject", subj, "err", errors.Join(err, merr))
			return
		}
		f.decMu.Lock()
		defer f.decMu.Unlock()
		if md.Sequence.Stream <= f.lastDec[sale] {
			return // this process's writer handed it over already
		}
		db, err := events.DecodeDecisions(m.Data())
		if err != nil {
			f.cfg.Log.Error("front: bad decision batch", "subject", subj, "err", err)
			return
		}
		f.lastDec[sale] = md.Sequence.Stream
		f.decided(&db)
	}
}

// Committed takes a batch this process's writer committed at stream
// sequence seq, the sale's previous batch being at prev: the writer calls
// it once JetStream acknowledged the batch, so its shoppers are answered
// without waiting for the stream to deliver it back (and without decoding
// it again). It is taken only if the front has processed the batch at prev;
// otherwise the stream's delivery, which keeps the order, brings it. The
// batch is not modified.
func (f *Front) Committed(db *events.DecisionBatch, prev, seq uint64) {
	select {
	case <-f.ready:
	default:
		return // still loading: the stream brings it
	}
	f.decMu.Lock()
	defer f.decMu.Unlock()
	if f.lastDec[db.Sale] != prev || seq <= prev {
		return
	}
	f.lastDec[db.Sale] = seq
	f.decided(db)
}

// decided processes a sale's next decision batch: the sale's head, its
// waiting room, the figures, and the answers to the requests waiting here.
// decMu is held.
func (f *Front) decided(db *events.DecisionBatch) {
	f.applyHead(db)
	f.foldQueue(db) // before the waiters hear: a joined shopper finds the ticket
	f.count(db)
	queued := f.roomOf(db.Sale) != nil
	for i := range db.Events {
		e := &db.Events[i]
		if e.Request == "" {
			continue
		}
		if queued && (e.Type == events.TypeTokenIssued || e.Type == events.TypeQueueAdmitted) {
			// An admission names the join it answers a second time: the
			// join keeps its own answer (GET /requests/{join} never hands
			// the token over; the ticket does, with a claim).
			continue
		}
		f.recent.put(e.Request, *e)
		if e.Type == events.TypePurchaseAccepted {
			f.orders.put(e.Request, *e)
		}
		f.waiters.deliver(e.Request, result{ev: *e})
	}
	if f.cfg.OnBatch != nil {
		f.cfg.OnBatch(db)
	}
}

func (f *Front) saleCreated(ev events.Event) {
	s, err := handlers.SaleFromEvent(ev)
	if err != nil {
		return
	}
	f.mu.Lock()
	_, known := f.sales[s.ID]
	if !known {
		f.sales[s.ID] = &SaleView{Sale: s, Head: events.Head{Stock: s.Stock, Quota: s.Quota}}
		if s.Queue != nil {
			f.rooms[s.ID] = newRoomView(s.ID, *s.Queue)
		}
	}
	f.mu.Unlock()
	if !known && f.cfg.OnSale != nil {
		f.cfg.OnSale(s.ID)
	}
}

func (f *Front) applyHead(db *events.DecisionBatch) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if v := f.sales[db.Sale]; v != nil && db.Head.Version > v.Head.Version {
		v.Head = db.Head
		if opens, closes, ok := handlers.Schedule(db.Head); ok { // an operator may have opened or closed it
			v.Sale.OpensAt, v.Sale.ClosesAt = opens, closes
		}
	}
}

// Stats is a sale's decision figures as this process saw them go by (every
// process sees every batch), plus the commit latency of the batches this
// process's writer committed.
type Stats struct {
	Decisions   map[string]int64 // by "Type" or "Type:reason"
	Batches     int64            // batches seen
	Requests    int64            // decisions answering a request
	Commits     int64            // batches committed by this process
	CommitNanos int64            // their total decide-and-commit time
}

func (f *Front) statsOf(sale string) *Stats {
	st := f.stats[sale]
	if st == nil {
		st = &Stats{Decisions: map[string]int64{}}
		f.stats[sale] = st
	}
	return st
}

func (f *Front) count(db *events.DecisionBatch) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sales[db.Sale] == nil {
		return
	}
	st := f.statsOf(db.Sale)
	st.Batches++
	for i := range db.Events {
		e := &db.Events[i]
		key := string(e.Type)
		switch d := e.Data.(type) {
		case *events.TokenDenied:
			key += ":" + d.Reason
		case *events.PurchaseRefused:
			key += ":" + d.Reason
		case *events.TokenIssued:
			if d.AlreadyIssued {
				key += ":already_issued"
			}
		}
		st.Decisions[key]++
		if e.Request != "" {
			st.Requests++
		}
	}
}

// NoteCommit records a batch this process's writer committed (the writer's
// OnCommit hook).
func (f *Front) NoteCommit(sale string, took time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sales[sale] == nil {
		return
	}
	st := f.statsOf(sale)
	st.Commits++
	st.CommitNanos += took.Nanoseconds()
}

// SaleStats returns a copy of a sale's figures.
func (f *Front) SaleStats(sale string) Stats {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := f.stats[sale]
	if st == nil {
		return Stats{Decisions: map[string]int64{}}
	}
	c := *st
	c.Decisions = make(map[string]int64, len(st.Decisions))
	for k, v := range st.Decisions {
		c.Decisions[k] = v
	}
	return c
}

// Sale returns what the front knows of a sale.
func (f *Front) Sale(id string) (SaleView, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.sales[id]
	if !ok {
		return SaleView{}, false
	}
	return *v, true
}

// Sales returns every sale the front knows, in no particular order.
func (f *Front) Sales() []SaleView {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]SaleView, 0, len(f.sales))
	for _, v := range f.sales {
		out = append(out, *v)
	}
	return out
}

// CreateSale appends the sale's SaleCreated event; stream.ErrSaleExists if
// the id is taken.
func (f *Front) CreateSale(ctx context.Context, ev events.Event) error {
	if _, err := stream.CreateSale(ctx, f.js, ev); err != nil {
		return err
	}
	f.saleCreated(ev)
	return nil
}

// InFlight is how many requests wait for their decision here.
func (f *Front) InFlight() int64 { return f.waiters.n.Load() }

// Flooded reports whether this process serves a flood: FloodWaiting or
// more requests wait for their decisions here, or did within the last
// `within` (a flood has short lulls).
//
// It is the process's one flood detector: the views, readiness and the
// fulfilment pace all ask it. Its clock is Config.Now.
func (f *Front) Flooded(within time.Duration) bool {
	return f.InFlight() >= f.cfg.FloodWaiting || f.cfg.Now().UnixNano()-f.floodAt.Load() < int64(within)
}

// Recent returns a decision this process saw lately, by request id: one of
// the last RecentDecisions decisions, or of the last RecentOrders accepted
// purchases.
func (f *Front) Recent(request string) (events.Event, bool) {
	if e, ok := f.recent.get(request); ok {
		return e, true
	}
	return f.orders.get(request)
}

// Pending is a submitted request waiting for its decision.
type Pending struct {
	f     *Front
	id    string
	ch    chan result // the decision
	start time.Time
	// The append's outcome. On success the appender only records when
	// (stored: the time from start to the ack, plus 1; 0: not yet), so a
	// Wait that is waiting for the decision is not woken for it; a failure
	// goes to failed. settled is closed once either is there.
	stored  atomic.Int64
	failed  chan error
	settled chan struct{}
	// claim settles a race: the appender takes the request into an append
	// (pendingTaken), or Wait gives up on it before that (pendingDropped),
	// and then it is never appended, so that a 503 for it is true.
	claim atomic.Int32
}

// Pending.claim's values.
const (
	pendingQueued  = 0
	pendingTaken   = 1
	pendingDropped = 2
)

type result struct {
	ev  events.Event
	err error
}

// queued is a request waiting for its append.
type queued struct {
	ev   events.Event
	p    *Pending    // nil for Send
	then func(error) // if set, told the append's outcome too
}

// done tells the append's outcome.
func (q queued) done(err error) {
	if p := q.p; p != nil {
		if err != nil {
			p.failed <- err // buffered: never blocks
		} else {
			p.stored.Store(int64(time.Since(p.start)) + 1)
		}
		close(p.settled)
	}
	if q.then != nil {
		q.then(err)
	}
}

// Submit appends a request and registers for its decision. It fails at once
// with ErrOverloaded when a bound is reached, ErrNotReady before the sales
// are loaded and ErrUnavailable once the front is stopping.
func (f *Front) Submit(req events.Event) (*Pending, error) {
	select {
	case <-f.ready:
	default:
		return nil, ErrNotReady
	}
	f.mu.RLock()
	stopping := f.ctx == nil || f.ctx.Err() != nil
	f.mu.RUnlock()
	if stopping {
		return nil, ErrUnavailable
	}
	ch, ok := f.waiters.add(req.ID)
	if !ok {
		return nil, ErrOverloaded
	}
	if f.waiters.n.Load() >= f.cfg.FloodWaiting {
		f.floodAt.Store(f.cfg.Now().UnixNano())
	}
	a, err := f.appender(req.Sale)
	if err != nil {
		f.waiters.remove(req.ID)
		return nil, err
	}
	p := &Pending{f: f, id: req.ID, ch: ch, start: time.Now(), failed: make(chan error, 1), settled: make(chan struct{})}
	select {
	case a.q <- queued{ev: req, p: p}:
	default:
		f.waiters.remove(req.ID)
		return nil, ErrOverloaded
	}
	return p, nil
}

// Send appends a request without waiting for its decision (no waiter is
// registered): the front's own requests, presence and claims. Like Submit
// it fails at once with ErrOverloaded when the sale's append queue is full,
// ErrNotReady before the sales are loaded and ErrUnavailable once the front
// is stopping; an append that fails later is logged by the appender.
func (f *Front) Send(req events.Event) error { return f.send(req, nil) }

// send is Send; when it returns nil, then (if set) is told the append's
// outcome once it is known (nil: stored).
func (f *Front) send(req events.Event, then func(error)) error {
	select {
	case <-f.ready:
	default:
		return ErrNotReady
	}
	f.mu.RLock()
	stopping := f.ctx == nil || f.ctx.Err() != nil
	f.mu.RUnlock()
	if stopping {
		return ErrUnavailable
	}
	a, err := f.appender(req.Sale)
	if err != nil {
		return err
	}
	select {
	case a.q <- queued{ev: req, then: then}:
		return nil
	default:
		return ErrOverloaded
	}
}

// Wait returns the decision. First it waits for the request to be stored:
// if the append fails the error wraps ErrUnavailable and the request must be
// retried (an append that timed out may still have landed; the retry then
// meets the same token or order, never a second one). A request still
// queued behind other appends when the append's allowance is over is
// dropped, never appended (ErrNotAppended); one already taken into an
// append waits for that append's outcome, at most its timeout and
// AppendSlack more (the allowance is twice AppendTimeout and AppendSlack).
// Once stored, it waits up to wait for the decision; ok=false means the
// time passed first: the request will be decided, poll for it.
func (p *Pending) Wait(ctx context.Context, wait time.Duration) (events.Event, bool, error) {
	// One timer and, on the common path, one wake-up: the decision. The
	// timer first runs for wait (at most the append's allowance), since the
	// append is usually acknowledged within a millisecond; when it fires,
	// the wait is counted again from the ack, or, with no ack yet, the
	// timer runs out the append's own allowance (the queue time plus its
	// timeout) while settled is watched, and then, for a request an append
	// took, that append's timeout.
	slack := p.f.cfg.AppendSlack
	appendLimit := 2*p.f.cfg.AppendTimeout + slack
	timer := time.NewTimer(min(wait, appendLimit))
	defer timer.Stop()
	var settled <-chan struct{} // watched only while the ack is overdue
	for {
		select {
		case r := <-p.ch:
			return r.ev, true, nil
		case err := <-p.failed:
			return p.fail(err)
		case <-settled:
			settled = nil
			if p.stored.Load() == 0 { // failed: the error is in failed already
				return p.fail(<-p.failed)
			}
		case <-timer.C:
		case <-ctx.Done():
			if p.stored.Load() == 0 {
				if p.claim.CompareAndSwap(pendingQueued, pendingDropped) {
					// The client is gone: spare the append. Never stored,
					// so what the request spent can be given back.
					return p.fail(fmt.Errorf("%w: %w", ErrNotAppended, ctx.Err()))
				}
				return p.fail(ctx.Err()) // in an append: it may be stored
			}
			return p.pending()
		}
		elapsed := time.Since(p.start)
		if at := p.stored.Load(); at > 0 {
			left := time.Duration(at-1) + wait - elapsed
			if left <= 0 {
				return p.pending()
			}
			timer.Reset(left) // since Go 1.23 no stale expiry can be left in timer.C
			continue
		}
		if elapsed >= appendLimit {
			if p.claim.CompareAndSwap(pendingQueued, pendingDropped) {
				// Still queued behind other appends: now it never will be.
				p.f.waiters.remove(p.id)
				return events.Event{}, false, fmt.Errorf("%w in time", ErrNotAppended)
			}
			if elapsed >= appendLimit+p.f.cfg.AppendTimeout+slack {
				return p.fail(fmt.Errorf("%w: append not acknowledged in time", ErrUnavailable))
			}
			// Taken into an append: its outcome comes within AppendTimeout.
			settled = p.settled
			timer.Reset(appendLimit + p.f.cfg.AppendTimeout + slack - elapsed)
			continue
		}
		settled = p.settled
		timer.Reset(appendLimit - elapsed)
	}
}

// fail gives up on a request whose append failed, or was not acknowledged,
// or whose client went away first: the error, unless the decision came in
// meanwhile (an append that timed out may have landed and been decided).
func (p *Pending) fail(err error) (events.Event, bool, error) {
	p.f.waiters.remove(p.id)
	// The decision may have been delivered before the removal.
	select {
	case r := <-p.ch:
		return r.ev, true, nil
	default:
		return events.Event{}, false, err
	}
}

// pending gives up waiting for a stored request's decision: ok=false,
// unless the decision came in meanwhile.
func (p *Pending) pending() (events.Event, bool, error) { return p.fail(nil) }

func (f *Front) appender(sale string) (*appender, error) {
	f.mu.RLock()
	a := f.appenders[sale]
	f.mu.RUnlock()
	if a != nil {
		return a, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if a = f.appenders[sale]; a != nil {
		return a, nil
	}
	if f.ctx == nil || f.ctx.Err() != nil {
		return nil, ErrUnavailable
	}
	a = &appender{f: f, subject: events.RequestSubject(sale), q: make(chan queued, f.cfg.QueueLen)}
	f.appenders[sale] = a
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		a.run(f.ctx)
	}()
	return a, nil
}

// appender appends one sale's requests: everything queued while an append
// is in flight goes into the next message (group append).
type appender struct {
	f       *Front
	subject string
	q       chan queued
}

func (a *appender) run(ctx context.Context) {
	batch := make([]queued, 0, a.f.cfg.MaxAppendBatch)
	reqs := make([]events.Event, 0, a.f.cfg.MaxAppendBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			a.failQueued()
			return
		case r := <-a.q:
			batch = append(batch, r)
		}
		size := approxSize(batch[0].ev)
	drain:
		for len(batch) < cap(batch) && size < maxAppendBytes {
			select {
			case r := <-a.q:
				batch = append(batch, r)
				size += approxSize(r.ev)
			default:
				break drain
			}
		}
		taken := take(batch)
		if len(taken) == 0 {
			continue
		}
		reqs = reqs[:0]
		for _, q := range taken {
			reqs = append(reqs, q.ev)
		}
		err := a.append(ctx, reqs)
		for _, q := range taken {
			q.done(err)
		}
	}
}

// take claims the batch's requests for an append, in place: a request
// whose Wait gave up while it was queued is left out.
func take(batch []queued) []queued {
	taken := batch[:0]
	for _, q := range batch {
		if q.p == nil || q.p.claim.CompareAndSwap(pendingQueued, pendingTaken) {
			taken = append(taken, q)
		}
	}
	return taken
}

// maxAppendBytes caps the requests of one append message (about: see
// approxSize), so that presence pings of many tickets do not pile up into a
// message, or a decision batch, larger than the stream takes.
const maxAppendBytes = 512 << 10

// approxSize is about the encoded size of a request, from above.
func approxSize(e events.Event) int {
	if d, ok := e.Data.(*events.QueueSeenRequested); ok {
		return 256 + 32*len(d.Tickets)
	}
	return 256
}

func (a *appender) append(ctx context.Context, reqs []events.Event) error {
	data, err := events.EncodeRequests(events.RequestBatch{Requests: reqs})
	if err == nil {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.f.cfg.AppendTimeout)
		_, err = a.f.js.Publish(pctx, a.subject, data)
		cancel()
	}
	if err != nil {
		a.f.cfg.Log.Warn("append failed", "subject", a.subject, "requests", len(reqs), "err", err)
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

func (a *appender) failQueued() {
	for {
		select {
		case q := <-a.q:
			if q.p == nil || q.p.claim.CompareAndSwap(pendingQueued, pendingDropped) {
				q.done(ErrNotAppended) // stopping: never appended
			}
		default:
			return
		}
	}
}

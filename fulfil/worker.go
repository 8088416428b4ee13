package fulfil

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/flashgate/flashgate/broker"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/wait"
	"github.com/flashgate/flashgate/provider"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// WorkerConsumer is the durable consumer of the orders queue every process's
// worker binds to.
const WorkerConsumer = "fulfil"

// Sender sends an order to the provider.
type Sender interface {
	SendOrder(ctx context.Context, token string, o provider.Order) (provider.Result, error)
}

// Tokens hands out the provider's shared token (a *broker.Broker).
type Tokens interface {
	Token(ctx context.Context) (broker.Token, error)
	Invalidate(ctx context.Context, t broker.Token) error
	Ban(ctx context.Context, d time.Duration, reason string) error
}

// Config tunes a worker. Zero values are the documented defaults.
type Config struct {
	Concurrency int           // orders handled at once by this process (default 16)
	MaxAttempts int           // failed calls before an order is given up (default 8)
	Backoff     time.Duration // the first retry's delay (default 1 s); it doubles, with full jitter
	MaxBackoff  time.Duration // (default 1 minute)
	AckWait     time.Duration // how long an order may be held without a sign of life (default 30 s)
	// OnOutcome is told what became of each delivery, for metrics:
	// confirmed, replayed (confirmed by a provider that had it already),
	// attempt_failed, failed, delayed (held back by a ban), unauthorized.
	OnOutcome func(outcome string)
	// Pace, if set, is waited for before each order is taken (the app
	// holds fulfilment back during a flood: see FloodPace).
	Pace func(ctx context.Context) error
	Now  func() time.Time
	Log  *slog.Logger

	// crash, in tests, is asked after the provider accepted an order; true
	// abandons the order as a process dying there would.
	crash func(order string) bool
}

func (c *Config) defaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = 16
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 8
	}
	if c.Backoff <= 0 {
		c.Backoff = time.Second
	}
	if c.MaxBackoff < c.Backoff {
		c.MaxBackoff = max(time.Minute, c.Backoff)
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.AckWait < 3*time.Second {
		c.AckWait = 3 * time.Second
	}
	if c.OnOutcome == nil {
		c.OnOutcome = func(string) {}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// Worker sends this process's share of the orders to the provider.
type Worker struct {
	js     jetstream.JetStream
	st     jetstream.Stream // FLASHGATE: the outcome events
	tokens Tokens
	send   Sender
	c      Config
	ids    *events.IDs

	rmu sync.Mutex
	rnd *rand.Rand
}

// NewWorker returns a worker. st is the FLASHGATE stream.
func NewWorker(js jetstream.JetStream, st jetstream.Stream, tokens Tokens, send Sender, c Config) *Worker {
	c.defaults()
	return &Worker{js: js, st: st, tokens: tokens, send: send, c: c, ids: events.NewIDs(), rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
}

// Run binds to the orders queue and handles orders until ctx ends. Orders
// in hand when ctx ends are left to be delivered again.
func (w *Worker) Run(ctx context.Context) error {
	cons, err := w.js.CreateOrUpdateConsumer(ctx, events.OrdersStream, jetstream.ConsumerConfig{
		Durable:       WorkerConsumer,
		Description:   "flashgate: orders to the fulfilment provider",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       w.c.AckWait,
		MaxDeliver:    -1, // attempts are counted in the order's events, not in deliveries
		MaxAckPending: 10_000,
	})
	if err != nil {
		return fmt.Errorf("fulfilment consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(w.c.Concurrency), jetstream.PullExpiry(5*time.Second), jetstream.PullHeartbeat(stream.ReadHeartbeat))
	if err != nil {
		return fmt.Errorf("fulfilment consumer: %w", err)
	}
	defer stream.Stop(it)
	sem := make(chan struct{}, w.c.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		if w.c.Pace != nil {
			if err := w.c.Pace(ctx); err != nil {
				<-sem
				return err
			}
		}
		m, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			<-sem
			return ctx.Err()
		}
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, jetstream.ErrConsumerDeleted) {
			<-sem
			return fmt.Errorf("fulfilment consumer: %w", err) // bound again by the caller
		}
		if err != nil {
			<-sem
			w.c.Log.Warn("fulfilment consumer", "err", err)
			if err := wait.Sleep(ctx, time.Second); err != nil {
				return err
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			w.handle(ctx, m)
		}()
	}
}

// handle settles one delivery of an order: it is acknowledged when the
// order is confirmed or given up, and handed back with a delay otherwise.
func (w *Worker) handle(ctx context.Context, m jetstream.Msg) {
	work, err := decodeWork(m.Data())
	var newer *newerError
	switch {
	case errors.As(err, &newer):
		// Written by a newer build: leave it to a process that knows it.
		w.c.Log.Warn("fulfilment: order message from a newer build, handed back", "subject", m.Subject(), "err", err)
		_ = m.NakWithDelay(time.Minute)
		return
	case err != nil:
		w.c.Log.Error("fulfilment: malformed order message dropped", "subject", m.Subject(), "err", err)
		_ = m.TermWithReason(err.Error())
		return
	}
	delivered := uint64(1)
	if md, err := m.Metadata(); err == nil {
		delivered = md.NumDelivered
	}
	// A sign of life while the order is held (a wait for a token, a slow
	// provider), so it is not delivered to another process meanwhile.
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		t := time.NewTicker(w.c.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	}()
	v, err := w.settle(hctx, &work, delivered)
	switch {
	case errors.Is(err, errAbandoned):
		return
	case err != nil && ctx.Err() != nil:
		return // shutting down: delivered again later
	case err != nil:
		w.c.Log.Warn("fulfilment: order handed back", "order", work.Order, "sale", work.Sale, "err", err, "retry_in", v.delay)
		_ = m.NakWithDelay(max(v.delay, time.Second))
	case v.done:
		_ = m.Ack()
	default:
		_ = m.NakWithDelay(max(v.delay, 10*time.Millisecond))
	}
}

var errAbandoned = errors.New("abandoned")

// verdict is what becomes of a delivery: done (acknowledged: the order is
// confirmed or given up), or handed back to be tried after delay.
type verdict struct {
	done  bool
	delay time.Duration
}

var finished = verdict{done: true}

func later(d time.Duration) verdict { return verdict{delay: d} }

// settle does what the order needs now.
func (w *Worker) settle(ctx context.Context, work *Work, delivered uint64) (verdict, error) {
	for range 8 { // bounded: each turn is a state another process moved
		state, err := ReadState(ctx, w.st, work.Sale, work.Order)
		if err != nil {
			return later(time.Second), err
		}
		v, err := w.step(ctx, work, state, delivered)
		if errors.Is(err, errMoved) {
			continue
		}
		return v, err
	}
	return later(time.Second), errors.New("the order's state keeps moving")
}

// maxTokenWait bounds one delivery's wait for a token, so that an order
// whose provider cannot give tokens still reaches its deadline.
const maxTokenWait = 30 * time.Second

func (w *Worker) step(ctx context.Context, work *Work, state State, delivered uint64) (verdict, error) {
	switch state.Status {
	case StatusConfirmed:
		return finished, nil
	case StatusFailed:
		// Given up before (a redelivery, or a restore that lost the
		// dead-letter stream): make sure the entry is there.
		return finished, w.dead(ctx, work, state.Reason, state.Attempts, state.Error)
	}
	now := w.c.Now()
	late := !now.Before(work.Deadline)
	if late && state.Status != StatusRetrying && delivered <= 1 {
		// Never sent: give it up without a call.
		return w.giveUp(ctx, work, state, events.OrderFailedDeadline, state.Attempts, firstNonEmpty(state.Error, "not confirmed by its deadline"))
	}
	// (Late, but a call was made before — it may have reached the provider
	// — the last try below asks once more: a provider that has the order
	// answers its first result, and the order is confirmed, not failed.)
	var last error
	for refresh := 0; refresh < 2; refresh++ {
		tctx, cancel := context.WithTimeout(ctx, min(maxTokenWait, max(work.Deadline.Sub(now), time.Second)))
		tok, err := w.tokens.Token(tctx)
		cancel()
		var banned *broker.BannedError
		switch {
		case errors.As(err, &banned) && late:
			return w.giveUp(ctx, work, state, events.OrderFailedDeadline, state.Attempts, "not confirmed by its deadline: the provider bans us")
		case errors.As(err, &banned):
			w.c.OnOutcome("delayed")
			// Back when the ban ends, or at the deadline if that comes first.
			return later(min(banned.Until.Sub(now), work.Deadline.Sub(now)) + w.jitter(time.Second)), nil
		case err != nil && ctx.Err() != nil:
			return later(0), ctx.Err()
		case err != nil && late:
			return w.giveUp(ctx, work, state, events.OrderFailedDeadline, state.Attempts, "not confirmed by its deadline: no provider token: "+err.Error())
		case err != nil:
			// No call was made: nothing to count. The next delivery
			// looks at the deadline again.
			return later(w.c.Backoff), fmt.Errorf("provider token: %w", err)
		}
		o := provider.Order{OrderID: work.Order, Sale: work.Sale, Shopper: work.Shopper, Units: work.Units, TokenID: work.TokenID}
		res, err := w.send.SendOrder(ctx, tok.Value, o)
		if err == nil {
			if w.c.crash != nil && w.c.crash(work.Order) {
				return verdict{}, errAbandoned
			}
			return finished, w.confirm(ctx, work, state, res)
		}
		if ctx.Err() != nil {
			return later(0), ctx.Err()
		}
		last = err
		switch provider.KindOf(err) {
		case provider.Unauthorized:
			// The token is no good: one renewal for everyone who saw it,
			// then one more try with the new one.
			w.c.OnOutcome("unauthorized")
			if err := w.tokens.Invalidate(ctx, tok); err != nil {
				return later(w.c.Backoff), fmt.Errorf("invalidate provider token: %w", err)
			}
			continue
		case provider.Banned:
			if ra := provider.RetryAfter(err); ra > 0 {
				// A ban (the fake provider, a carrier): nobody calls until
				// it ends. A 403 naming no end is this order's problem.
				if err := w.tokens.Ban(ctx, ra, err.Error()); err != nil {
					return later(w.c.Backoff), fmt.Errorf("record the provider's ban: %w", err)
				}
				w.c.OnOutcome("delayed")
				return later(w.c.Backoff), nil // the next try finds the ban and waits for its end
			}
		case provider.Rejected:
			return w.giveUp(ctx, work, state, events.OrderFailedRejected, attemptsAfter(state), err.Error())
		}
		return w.attemptFailed(ctx, work, state, err)
	}
	return w.attemptFailed(ctx, work, state, last)
}

// attemptsAfter is the failed calls counted once one more failed.
func attemptsAfter(state State) int {
	if state.Status != StatusRetrying {
		return 1
	}
	return state.Attempts + 1
}

// attemptFailed records a failed call and says when to try again, or gives
// the order up after MaxAttempts or past its deadline.
func (w *Worker) attemptFailed(ctx context.Context, work *Work, state State, err error) (verdict, error) {
	n := attemptsAfter(state)
	now := w.c.Now()
	switch {
	case n >= w.c.MaxAttempts:
		return w.giveUp(ctx, work, state, events.OrderFailedAttempts, n, err.Error())
	case !now.Before(work.Deadline):
		return w.giveUp(ctx, work, state, events.OrderFailedDeadline, n, err.Error())
	}
	delay := w.backoff(n)
	if ra := provider.RetryAfter(err); ra > delay {
		delay = ra
	}
	delay = min(delay, work.Deadline.Sub(now)+time.Millisecond) // the deadline is not overslept
	e := w.event(work, now, events.TypeOrderAttemptFailed, &events.OrderAttemptFailed{Attempt: n, Status: provider.StatusOf(err), Error: err.Error(), RetryAt: now.Add(delay)})
	if _, aerr := appendOutcome(ctx, w.js, w.st, e, state.Seq); aerr != nil {
		return later(time.Second), aerr
	}
	w.c.OnOutcome("attempt_failed")
	return later(delay), nil
}

// confirm records the provider's acceptance. The provider has the order:
// whatever else was recorded meanwhile, confirmed is the truth, once.
func (w *Worker) confirm(ctx context.Context, work *Work, state State, res provider.Result) error {
	attempts := attemptsAfter(state)
	e := w.event(work, w.c.Now(), events.TypeOrderConfirmed, &events.OrderConfirmed{Reference: res.Reference, Attempts: attempts})
	for range 8 {
		_, err := appendOutcome(ctx, w.js, w.st, e, state.Seq)
		if !errors.Is(err, errMoved) {
			if err == nil {
				if res.Replayed {
					w.c.OnOutcome("replayed")
				}
				w.c.OnOutcome("confirmed")
			}
			return err
		}
		if state, err = ReadState(ctx, w.st, work.Sale, work.Order); err != nil {
			return err
		}
		if state.Status == StatusConfirmed {
			return nil // another delivery confirmed it
		}
	}
	return errors.New("could not record the confirmation: the order's state keeps moving")
}

// giveUp records OrderFailed, then puts the order in the dead-letter
// stream (a crash between the two: the redelivery finds the order failed
// and writes the entry).
func (w *Worker) giveUp(ctx context.Context, work *Work, state State, reason string, attempts int, why string) (verdict, error) {
	e := w.event(work, w.c.Now(), events.TypeOrderFailed, &events.OrderFailed{Reason: reason, Attempts: attempts, Error: why})
	if _, err := appendOutcome(ctx, w.js, w.st, e, state.Seq); err != nil {
		return later(time.Second), err
	}
	if err := w.dead(ctx, work, reason, attempts, why); err != nil {
		return later(time.Second), err
	}
	w.c.OnOutcome("failed")
	w.c.Log.Warn("fulfilment: order given up, in the dead-letter stream", "order", work.Order, "sale", work.Sale, "reason", reason, "attempts", attempts, "err", why)
	return finished, nil
}

func (w *Worker) dead(ctx context.Context, work *Work, reason string, attempts int, why string) error {
	b, err := json.Marshal(Dead{V: workVersion, Work: *work, Reason: reason, Attempts: attempts, Error: why, FailedAt: w.c.Now().UTC()})
	if err != nil {
		return err
	}
	if _, err := w.js.Publish(ctx, events.DLQSubject(work.Sale, work.Order), b); err != nil {
		return fmt.Errorf("dead-letter order %s: %w", work.Order, err)
	}
	return nil
}

func (w *Worker) event(work *Work, now time.Time, t events.Type, data any) events.Event {
	return events.Event{ID: w.ids.New(now), Type: t, Version: events.SchemaVersion, Sale: work.Sale, Time: now.UTC(),
		Shopper: work.Shopper, Request: work.Order, Data: data}
}

// backoff is the delay before try n+1: exponential, capped, with full
// jitter (a random delay between half and all of it).
func (w *Worker) backoff(n int) time.Duration {
	d := w.c.Backoff << min(n-1, 20)
	if d <= 0 || d > w.c.MaxBackoff {
		d = w.c.MaxBackoff
	}
	return d/2 + w.jitter(d/2)
}

func (w *Worker) jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	w.rmu.Lock()
	defer w.rmu.Unlock()
	return time.Duration(w.rnd.Int64N(int64(d)))
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

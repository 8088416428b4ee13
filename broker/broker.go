// Package broker shares one access token of a fulfilment provider among
// every flashgate process, so that the provider's token endpoint sees one
// renewal at a time, within a budget, and nothing at all while it bans us.
//
// A provider like the one in the design notes allows a few token requests a
// second per public IP and answers a burst with a ban of every process
// behind that IP. A retry loop that renews on every 401, run by many orders
// in several processes, is such a burst. The broker prevents it:
//
//   - The token lives in one KV entry (State), with its generation, its
//     expiry, a randomised renewal moment, the renewal lease, the token
//     request budget and the ban. Every change is a compare-and-set on the
//     entry's revision, so all processes agree on all of it.
//   - Only the holder of the renewal lease calls the token endpoint; taking
//     the lease spends one unit of the cluster-wide budget in the same CAS.
//     Everyone else waits for the new token to appear.
//   - A token is renewed ahead of its expiry at a moment drawn at random by
//     its renewer (plus a per-process jitter), so processes started together
//     do not renew together.
//   - A 401 invalidates a token only while it is still the current
//     generation: a burst of 401s causes one renewal.
//   - A 403 or 429 from the token endpoint (or a 403 from the provider's
//     API) records "banned until" (Retry-After, or the configured penalty);
//     no process calls the token endpoint before then.
//   - When NATS is unreachable a process keeps using the token it has while
//     it is valid, and renews on its own at most once per LocalRenewEvery.
//
// The token itself is stored in the bucket: whoever may read the bucket may
// use it. Times in the entry are wall-clock times of the processes; keep
// their clocks in sync (NTP), as for any lease.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashgate/flashgate/internal/wait"
	"github.com/flashgate/flashgate/provider"
	"github.com/nats-io/nats.go/jetstream"
)

// Fetcher asks the provider for a new token: one token request.
type Fetcher interface {
	FetchToken(ctx context.Context) (provider.Token, error)
}

// Config tunes a broker. The zero value of every field but KV is a safe
// default.
type Config struct {
	Key    string // the KV key of the token's state; default "token"
	Node   string // this process's name, as lease holder; default random
	Budget float64
	// Budget is the token requests per second allowed to all processes
	// together, retries included (default 1: a third of a 3-per-second
	// provider quota). Burst is how many may be spent at once (default 1).
	Burst float64
	// Penalty is how long a ban lasts when the provider does not say
	// (default 10 minutes).
	Penalty time.Duration
	// LeaseTTL is how long a renewer may take before another process may
	// renew instead (default 15 s); FetchTimeout bounds one token request
	// (default 10 s, at most LeaseTTL - 1 s).
	LeaseTTL     time.Duration
	FetchTimeout time.Duration
	// RenewFrom and RenewTo: a token is renewed at a random moment between
	// these shares of its lifetime (defaults 0.6 and 0.85).
	RenewFrom, RenewTo float64
	// Margin: a token is not handed out this close to its expiry (default
	// 2 s, at most a quarter of the lifetime).
	Margin time.Duration
	// LocalRenewEvery bounds the renewals a process makes on its own while
	// NATS is unreachable (default 3 minutes). LocalAfter is how long NATS
	// must have been unreachable first (default 5 s, plus a random share of
	// it drawn per process): a reconnect's blip, or every process at once
	// when NATS restarts, must not send a burst outside the shared budget.
	LocalRenewEvery time.Duration
	LocalAfter      time.Duration
	// KVTimeout bounds each KV call (default 2 s).
	KVTimeout time.Duration
	// Connected reports whether NATS is reachable; nil: always.
	Connected func() bool
	// OnRequest is told the outcome of each token request this process
	// makes ("ok", "banned", "error"), for metrics.
	OnRequest func(outcome string)
	Now       func() time.Time
	Seed      uint64 // of the random renewal moments; 0: random
	Log       *slog.Logger
}

func (c *Config) defaults() {
	if c.Key == "" {
		c.Key = "token"
	}
	if c.Node == "" {
		c.Node = fmt.Sprintf("node-%08x", rand.Uint32())
	}
	if c.Budget <= 0 {
		c.Budget = 1
	}
	if c.Burst < 1 {
		c.Burst = 1
	}
	if c.Penalty <= 0 {
		c.Penalty = 10 * time.Minute
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 15 * time.Second
	}
	if c.LeaseTTL < 2*time.Second {
		c.LeaseTTL = 2 * time.Second
	}
	if c.FetchTimeout <= 0 || c.FetchTimeout > c.LeaseTTL-time.Second {
		c.FetchTimeout = min(10*time.Second, c.LeaseTTL-time.Second)
	}
	if !(c.RenewFrom > 0 && c.RenewFrom < c.RenewTo && c.RenewTo < 1) {
		c.RenewFrom, c.RenewTo = 0.6, 0.85
	}
	if c.Margin <= 0 {
		c.Margin = 2 * time.Second
	}
	if c.LocalRenewEvery <= 0 {
		c.LocalRenewEvery = 3 * time.Minute
	}
	if c.LocalAfter <= 0 {
		c.LocalAfter = 5 * time.Second
	}
	if c.KVTimeout <= 0 {
		c.KVTimeout = 2 * time.Second
	}
	if c.Connected == nil {
		c.Connected = func() bool { return true }
	}
	if c.OnRequest == nil {
		c.OnRequest = func(string) {}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// State is the shared entry: the token, its renewal, the budget and the ban.
type State struct {
	Token   string    `json:"token,omitempty"`
	Gen     uint64    `json:"gen"`               // counts the tokens obtained
	Issued  time.Time `json:"issued,omitzero"`   // when the token was asked for
	Expires time.Time `json:"expires,omitzero"`  //
	RenewAt time.Time `json:"renewAt,omitzero"`  // the drawn renewal moment
	Invalid bool      `json:"invalid,omitempty"` // a 401 said it is no good

	Renewer    string    `json:"renewer,omitempty"` // the lease: who is asking for a token now
	LeaseUntil time.Time `json:"leaseUntil,omitzero"`

	Budget   float64   `json:"budget"` // token requests that may be made now (a token bucket)
	BudgetAt time.Time `json:"budgetAt,omitzero"`

	BannedUntil time.Time `json:"bannedUntil,omitzero"`
	Bans        uint64    `json:"bans"`
	Requests    uint64    `json:"requests"` // token requests made by every process, retries included
	LastError   string    `json:"lastError,omitempty"`
}

// Usable reports whether the token may be handed out at now.
func (s State) Usable(now time.Time, margin time.Duration) bool {
	if s.Token == "" || s.Invalid {
		return false
	}
	life := s.Expires.Sub(s.Issued)
	return now.Before(s.Expires.Add(-min(margin, life/4)))
}

// Banned reports whether the provider bans us at now.
func (s State) Banned(now time.Time) bool { return now.Before(s.BannedUntil) }

func (s State) leased(now time.Time) bool { return s.Renewer != "" && now.Before(s.LeaseUntil) }

// budgetAt is the budget available at now.
func (s *State) budgetAt(now time.Time, rate, burst float64) float64 {
	if s.BudgetAt.IsZero() {
		return burst
	}
	b := s.Budget
	if d := now.Sub(s.BudgetAt); d > 0 {
		b += d.Seconds() * rate
	}
	return min(b, burst)
}

// Token is a token handed out, with the generation Invalidate needs.
type Token struct {
	Value   string
	Gen     uint64
	Expires time.Time
	Local   bool // renewed by this process without NATS: not the shared token
}

// BannedError says the provider bans us until Until.
type BannedError struct{ Until time.Time }

func (e *BannedError) Error() string {
	return "the provider bans token requests until " + e.Until.UTC().Format(time.RFC3339)
}

// ErrUnavailable is returned while NATS is unreachable and this process may
// not renew on its own yet.
var ErrUnavailable = errors.New("no valid provider token: NATS is unreachable and this process renewed on its own recently")

// Broker hands out the shared token in one process.
type Broker struct {
	kv  jetstream.KeyValue
	f   Fetcher
	c   Config
	rnd *rand.Rand

	mu          sync.Mutex
	st          State
	local       bool // st.Token was renewed by this process without NATS
	dirty       bool // st was changed by this process without NATS
	rev         uint64
	changed     chan struct{} // closed and replaced at every change of st
	jitter      time.Duration // this process's extra wait past RenewAt for st.Gen
	jitterGen   uint64
	lastLocal   time.Time // the last renewal made without NATS
	renewing    atomic.Bool
	downSince   atomic.Pointer[time.Time] // when NATS was first seen unreachable; nil: reachable
	localJitter time.Duration
	life        atomic.Pointer[context.Context] // Run's context: background renewals end with it
	requests    atomic.Uint64                   // token requests this process made
}

// New returns a broker over the bucket kv. Call Run to keep it in step with
// the other processes.
func New(kv jetstream.KeyValue, f Fetcher, c Config) *Broker {
	c.defaults()
	seed := c.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	b := &Broker{kv: kv, f: f, c: c, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), changed: make(chan struct{})}
	b.localJitter = time.Duration(b.rnd.Float64() * float64(c.LocalAfter))
	return b
}

// State is the last state this process knows.
func (b *Broker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.st
}

// Requests is the number of token requests this process made.
func (b *Broker) Requests() uint64 { return b.requests.Load() }

// Token returns a valid token, waiting (bounded by ctx) while another
// process renews it. It returns a *BannedError while the provider bans us,
// and ErrUnavailable while NATS is unreachable and no renewal may be made.
func (b *Broker) Token(ctx context.Context) (Token, error) {
	for {
		b.mu.Lock()
		st, ch, local := b.st, b.changed, b.local
		b.mu.Unlock()
		now := b.c.Now()
		if st.Banned(now) {
			return Token{}, &BannedError{Until: st.BannedUntil}
		}
		if st.Usable(now, b.c.Margin) {
			if b.due(&st, now) {
				b.kick()
			}
			return Token{Value: st.Token, Gen: st.Gen, Expires: st.Expires, Local: local}, nil
		}
		switch {
		case !b.connected(now):
			return b.localToken(ctx)
		case b.c.Connected():
			b.kick()
		}
		t := time.NewTimer(250 * time.Millisecond) // a change is pushed; this is a safety net
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return Token{}, ctx.Err()
		}
		t.Stop()
	}
}

// due reports whether st's token should be renewed now: it cannot be used,
// or its renewal moment (with this process's jitter) has come.
func (b *Broker) due(st *State, now time.Time) bool {
	if !st.Usable(now, b.c.Margin) {
		return true
	}
	b.mu.Lock()
	if b.jitterGen != st.Gen {
		life := st.Expires.Sub(st.Issued)
		b.jitter = time.Duration(b.rnd.Float64() * 0.05 * float64(life))
		b.jitterGen = st.Gen
	}
	j := b.jitter
	b.mu.Unlock()
	return !now.Before(st.RenewAt.Add(j))
}

// kick starts a renewal in the background unless one runs in this process.
func (b *Broker) kick() {
	if !b.renewing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer b.renewing.Store(false)
		parent := context.Background()
		if p := b.life.Load(); p != nil {
			parent = *p
		}
		ctx, cancel := context.WithTimeout(parent, b.c.LeaseTTL+b.c.FetchTimeout)
		defer cancel()
		if err := b.renew(ctx); err != nil && ctx.Err() == nil {
			b.c.Log.Warn("provider token renewal", "err", err)
		}
	}()
}

// set records a state read from or written to the bucket, if it is newer
// than the one known. read marks a state just read from the bucket: it also
// replaces a state this process changed on its own without NATS.
func (b *Broker) set(st State, rev uint64, read bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if rev != 0 && rev < b.rev || rev == b.rev && !(read && b.dirty) {
		return
	}
	if b.dirty && !b.c.Connected() {
		return // a message still in flight from before NATS was lost: this process's own state stands
	}
	b.st, b.rev, b.local, b.dirty = st, rev, false, false
	close(b.changed)
	b.changed = make(chan struct{})
}

// setLocal records a state this process made without NATS. The bucket's
// entry, read again or changed, wins over it.
func (b *Broker) setLocal(fn func(*State)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fn(&b.st)
	b.dirty = true
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *Broker) get(ctx context.Context) (State, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, b.c.KVTimeout)
	defer cancel()
	e, err := b.kv.Get(ctx, b.c.Key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return State{}, 0, nil
	}
	if err != nil {
		return State{}, 0, err
	}
	var st State
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return State{}, 0, fmt.Errorf("provider token state at revision %d: %w", e.Revision(), err)
	}
	return st, e.Revision(), nil
}

// cas writes st over revision rev (0: the entry must not exist). ok is
// false when another process wrote first.
func (b *Broker) cas(ctx context.Context, st State, rev uint64) (newRev uint64, ok bool, err error) {
	v, err := json.Marshal(st)
	if err != nil {
		return 0, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.c.KVTimeout)
	defer cancel()
	if rev == 0 {
		newRev, err = b.kv.Create(ctx, b.c.Key, v)
	} else {
		newRev, err = b.kv.Update(ctx, b.c.Key, v, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	b.set(st, newRev, true)
	return newRev, true, nil
}

// update applies fn to the entry with compare-and-set until it lands or fn
// says there is nothing to do (false).
func (b *Broker) update(ctx context.Context, fn func(st *State, now time.Time) bool) error {
	for {
		st, rev, err := b.get(ctx)
		if err != nil {
			return err
		}
		b.set(st, rev, true)
		if !fn(&st, b.c.Now()) {
			return nil
		}
		if _, ok, err := b.cas(ctx, st, rev); err != nil || ok {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// renew makes sure a usable, not yet due token is in the bucket: it takes
// the lease and asks the provider, or waits for whoever holds the lease.
func (b *Broker) renew(ctx context.Context) error {
	for {
		st, rev, err := b.get(ctx)
		if err != nil {
			return err
		}
		b.set(st, rev, true)
		now := b.c.Now()
		switch {
		case st.Banned(now):
			return nil
		case !b.due(&st, now):
			return nil // someone renewed
		case st.leased(now):
			// Another process asks; its token is pushed by the watch. Look
			// again when its lease would run out.
			if err := wait.Sleep(ctx, min(st.LeaseUntil.Sub(now)+10*time.Millisecond, 500*time.Millisecond)); err != nil {
				return err
			}
			continue
		}
		avail := st.budgetAt(now, b.c.Budget, b.c.Burst)
		if avail < 1 {
			refill := time.Duration((1 - avail) / b.c.Budget * float64(time.Second))
			if err := wait.Sleep(ctx, refill+time.Millisecond); err != nil {
				return err
			}
			continue
		}
		taken := st
		taken.Renewer, taken.LeaseUntil = b.c.Node, now.Add(b.c.LeaseTTL)
		taken.Budget, taken.BudgetAt = avail-1, maxTime(now, st.BudgetAt) // a process behind in time gains nothing
		taken.Requests++
		if _, ok, err := b.cas(ctx, taken, rev); err != nil {
			return err
		} else if !ok {
			continue
		}
		// The lease is ours and a unit of the budget spent: see the request
		// through even if the caller gives up.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.c.FetchTimeout+4*b.c.KVTimeout)
		defer cancel()
		return b.fetch(fctx, taken.Gen, now)
	}
}

// fetch makes the one token request this process holds the lease for, and
// records its outcome.
func (b *Broker) fetch(ctx context.Context, gen uint64, leased time.Time) error {
	fctx, cancel := context.WithTimeout(ctx, b.c.FetchTimeout)
	tok, ferr := b.f.FetchToken(fctx)
	cancel()
	b.requests.Add(1)
	outcome := b.outcome(ferr)
	b.c.OnRequest(outcome)
	renewAt := b.renewAt(leased, tok.Expires)
	err := b.update(ctx, func(st *State, now time.Time) bool {
		mine := st.Renewer == b.c.Node && st.LeaseUntil.Equal(leased.Add(b.c.LeaseTTL))
		if mine {
			st.Renewer, st.LeaseUntil = "", time.Time{}
		}
		switch {
		case ferr == nil && st.Gen == gen:
			// Nobody stored a newer token meanwhile (even if our lease ran out).
			st.Token, st.Gen, st.Issued, st.Expires, st.RenewAt, st.Invalid = tok.Value, gen+1, leased.Round(0), tok.Expires.Round(0), renewAt.Round(0), false
			st.LastError = ""
		case ferr == nil:
			// Another process got a token meanwhile: ours is unused.
		case outcome == "banned":
			st.BannedUntil = maxTime(st.BannedUntil, now.Add(b.banFor(ferr)))
			st.Bans++
			st.LastError = ferr.Error()
		default:
			st.LastError = ferr.Error()
		}
		return true
	})
	if err != nil {
		// The entry could not be written: keep what we learnt here at least.
		switch {
		case ferr == nil:
			b.setLocal(func(st *State) {
				st.Token, st.Issued, st.Expires, st.RenewAt, st.Invalid = tok.Value, leased.Round(0), tok.Expires.Round(0), renewAt.Round(0), false
			})
			b.mu.Lock()
			b.local = true
			b.mu.Unlock()
		case outcome == "banned":
			b.setLocal(func(st *State) { st.BannedUntil = maxTime(st.BannedUntil, b.c.Now().Add(b.banFor(ferr))) })
		}
	}
	if ferr != nil {
		return ferr
	}
	return err
}

func (b *Broker) outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case provider.StatusOf(err) == 403 || provider.StatusOf(err) == 429:
		return "banned"
	}
	return "error"
}

func (b *Broker) banFor(err error) time.Duration {
	if d := provider.RetryAfter(err); d > 0 {
		return d
	}
	return b.c.Penalty
}

// renewAt draws the moment a token obtained at issued is renewed.
func (b *Broker) renewAt(issued, expires time.Time) time.Time {
	life := expires.Sub(issued)
	b.mu.Lock()
	share := b.c.RenewFrom + b.rnd.Float64()*(b.c.RenewTo-b.c.RenewFrom)
	b.mu.Unlock()
	return issued.Add(time.Duration(share * float64(life)))
}

// Invalidate says the provider refused t (a 401). The token is marked bad
// only if it is still the current generation, so that many 401s for one
// token cause one renewal.
func (b *Broker) Invalidate(ctx context.Context, t Token) error {
	if t.Local || !b.c.Connected() {
		b.setLocal(func(st *State) {
			if st.Token == t.Value {
				st.Invalid = true
			}
		})
		return nil
	}
	marked := false
	err := b.update(ctx, func(st *State, _ time.Time) bool {
		if st.Gen != t.Gen || st.Invalid {
			return false
		}
		st.Invalid, marked = true, true
		return true
	})
	if marked {
		b.kick()
	}
	return err
}

// Ban records that the provider refused us (a 403 from its API): no process
// asks for a token, and the worker sends nothing, until the ban ends. d 0:
// the configured penalty.
func (b *Broker) Ban(ctx context.Context, d time.Duration, reason string) error {
	if d <= 0 {
		d = b.c.Penalty
	}
	until := b.c.Now().Add(d)
	if !b.c.Connected() {
		b.setLocal(func(st *State) { st.BannedUntil = maxTime(st.BannedUntil, until); st.LastError = reason })
		return nil
	}
	return b.update(ctx, func(st *State, _ time.Time) bool {
		if !st.BannedUntil.Before(until) {
			return false
		}
		st.BannedUntil, st.LastError = until, reason
		st.Bans++
		return true
	})
}

// connected reports whether the shared entry may be used: NATS is
// reachable, or it was lost less than LocalAfter (+ jitter) ago.
func (b *Broker) connected(now time.Time) bool {
	if b.c.Connected() {
		b.downSince.Store(nil)
		return true
	}
	since := b.downSince.Load()
	if since == nil {
		b.downSince.CompareAndSwap(nil, &now)
		return true
	}
	return now.Sub(*since) < b.c.LocalAfter+b.localJitter
}

// localToken renews without NATS, at most once per LocalRenewEvery.
func (b *Broker) localToken(ctx context.Context) (Token, error) {
	b.mu.Lock()
	now := b.c.Now()
	if !b.lastLocal.IsZero() && now.Sub(b.lastLocal) < b.c.LocalRenewEvery {
		b.mu.Unlock()
		return Token{}, ErrUnavailable
	}
	b.lastLocal = now
	b.mu.Unlock()
	fctx, cancel := context.WithTimeout(ctx, b.c.FetchTimeout)
	tok, err := b.f.FetchToken(fctx)
	cancel()
	b.requests.Add(1)
	outcome := b.outcome(err)
	b.c.OnRequest(outcome)
	if err != nil {
		if outcome == "banned" {
			b.setLocal(func(st *State) { st.BannedUntil = maxTime(st.BannedUntil, now.Add(b.banFor(err))) })
		}
		return Token{}, err
	}
	renewAt := b.renewAt(now, tok.Expires)
	var t Token
	b.setLocal(func(st *State) {
		st.Token, st.Issued, st.Expires, st.RenewAt, st.Invalid = tok.Value, now.Round(0), tok.Expires.Round(0), renewAt.Round(0), false
		t = Token{Value: st.Token, Gen: st.Gen, Expires: st.Expires, Local: true}
	})
	b.mu.Lock()
	b.local = true
	b.mu.Unlock()
	b.c.Log.Warn("provider token renewed without NATS (unreachable): the other processes do not share it", "next_local_renewal_after", b.c.LocalRenewEvery)
	return t, nil
}

// Run keeps the broker in step: it watches the shared entry and renews the
// token at its moment even when no order asks for it. It returns when ctx
// ends.
func (b *Broker) Run(ctx context.Context) error {
	b.life.Store(&ctx)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		w, err := b.kv.Watch(ctx, b.c.Key)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			b.c.Log.Warn("watch provider token", "err", err)
			if err := wait.Sleep(ctx, time.Second); err != nil {
				break
			}
			continue
		}
		b.follow(ctx, w, tick.C)
		_ = w.Stop()
	}
	return ctx.Err()
}

// follow applies the watch's updates until it ends, renewing on time.
func (b *Broker) follow(ctx context.Context, w jetstream.KeyWatcher, tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil {
				continue // the end of the initial values
			}
			var st State
			if e.Operation() == jetstream.KeyValuePut {
				if err := json.Unmarshal(e.Value(), &st); err != nil {
					b.c.Log.Error("provider token state undecodable", "revision", e.Revision(), "err", err)
					continue
				}
			}
			b.set(st, e.Revision(), false)
		case <-tick:
			st := b.State()
			now := b.c.Now()
			if st.Token != "" && !st.Banned(now) && b.c.Connected() && b.due(&st, now) {
				b.kick()
			}
		}
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

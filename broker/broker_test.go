package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/provider"
	"github.com/nats-io/nats.go/jetstream"
)

// fetcher is a provider's token endpoint: it counts the requests and answers
// what answer says (default: a token living ttl).
type fetcher struct {
	ttl    time.Duration
	calls  atomic.Int64
	mu     sync.Mutex
	answer func(n int64) error // nil: a token
	delay  time.Duration
}

func (f *fetcher) FetchToken(ctx context.Context) (provider.Token, error) {
	n := f.calls.Add(1)
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	f.mu.Lock()
	answer := f.answer
	f.mu.Unlock()
	if answer != nil {
		if err := answer(n); err != nil {
			return provider.Token{}, err
		}
	}
	return provider.Token{Value: fmt.Sprintf("tok-%d", n), Expires: time.Now().Add(f.ttl)}, nil
}

// brokers starts n brokers, each on its own NATS connection to one server,
// sharing f.
func brokers(t *testing.T, n int, f Fetcher, c Config) ([]*Broker, jetstream.KeyValue) {
	t.Helper()
	env := fgtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var bs []*Broker
	var first jetstream.KeyValue
	for i := range n {
		nc, err := env.Server.Connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, _ := jetstream.New(nc)
		kv, err := js.KeyValue(ctx, events.ProviderBucket)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = kv
		}
		cc := c
		cc.Node = fmt.Sprint("node-", i)
		b := New(kv, f, cc)
		wg.Add(1)
		go func() { defer wg.Done(); _ = b.Run(ctx) }()
		bs = append(bs, b)
	}
	t.Cleanup(func() { cancel(); wg.Wait() }) // before the connections close
	return bs, first
}

func tokenCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestOneRenewalForManyCallers: 100 callers in two processes ask at once
// for a token that does not exist yet: one token request, one token.
func TestOneRenewalForManyCallers(t *testing.T) {
	t.Parallel()
	f := &fetcher{ttl: time.Hour, delay: 50 * time.Millisecond}
	bs, _ := brokers(t, 2, f, Config{})
	ctx := tokenCtx(t, 10*time.Second)
	var wg sync.WaitGroup
	got := make([]Token, 100)
	errs := make([]error, 100)
	for i := range got {
		wg.Add(1)
		go func() { defer wg.Done(); got[i], errs[i] = bs[i%2].Token(ctx) }()
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if got[i].Value != got[0].Value || got[i].Gen != got[0].Gen || !got[i].Expires.Equal(got[0].Expires) {
			t.Fatalf("caller %d got %+v, caller 0 %+v", i, got[i], got[0])
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d token requests, want 1", n)
	}
}

// TestBurstOf401sCausesOneRenewal: every caller of both processes sees a 401
// for the same token; only the first invalidation counts.
func TestBurstOf401sCausesOneRenewal(t *testing.T) {
	f := &fetcher{ttl: time.Hour}
	bs, _ := brokers(t, 2, f, Config{Budget: 100, Burst: 5})
	ctx := tokenCtx(t, 10*time.Second)
	old, err := bs[0].Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := bs[i%2]
			if err := b.Invalidate(ctx, old); err != nil {
				t.Error(err)
				return
			}
			nt, err := b.Token(ctx)
			if err != nil || nt.Gen != old.Gen+1 || nt.Value == old.Value {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d callers did not get the one new token", bad.Load())
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("%d token requests, want 2 (the first token and one renewal)", n)
	}
	// A late 401 for the old token changes nothing.
	if err := bs[1].Invalidate(ctx, old); err != nil {
		t.Fatal(err)
	}
	if st := bs[1].State(); st.Invalid || st.Gen != old.Gen+1 {
		t.Fatalf("stale invalidation landed: %+v", st)
	}
}

// TestBudgetBoundsTokenRequests: a token refused again and again is renewed
// no faster than the cluster-wide budget allows.
func TestBudgetBoundsTokenRequests(t *testing.T) {
	t.Parallel()
	f := &fetcher{ttl: time.Hour}
	const rate = 4.0
	bs, _ := brokers(t, 2, f, Config{Budget: rate, Burst: 1})
	ctx := tokenCtx(t, 20*time.Second)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < 2*time.Second {
				tok, err := bs[i%2].Token(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				_ = bs[i%2].Invalidate(ctx, tok)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	n := f.calls.Load()
	if limit := int64(1 + rate*elapsed + 1); n > limit {
		t.Fatalf("%d token requests in %.1fs, budget allows %d", n, elapsed, limit)
	}
	if n < 3 {
		t.Fatalf("only %d token requests: the budget is not being used", n)
	}
	// The last invalidations may have started a renewal still under way: its
	// count and its call land in either order, and bs[0] hears of the count
	// through its watch.
	fgtest.WaitFor(t, 5*time.Second, func() error {
		if st, n := bs[0].State(), f.calls.Load(); st.Requests != uint64(n) {
			return fmt.Errorf("shared count %d, provider saw %d", st.Requests, n)
		}
		return nil
	})
}

// TestBanStopsTokenRequests: a 403 from the token endpoint bans every
// process until Retry-After; no token request is made until then.
func TestBanStopsTokenRequests(t *testing.T) {
	t.Parallel()
	f := &fetcher{ttl: time.Hour}
	f.answer = func(n int64) error {
		if n == 1 {
			return &provider.Error{Op: "token", Status: 403, Code: "banned", RetryAfter: 1500 * time.Millisecond}
		}
		return nil
	}
	bs, _ := brokers(t, 2, f, Config{Budget: 50, Burst: 5})
	ctx := tokenCtx(t, 10*time.Second)
	_, err := bs[0].Token(ctx)
	var be *BannedError
	if !errors.As(err, &be) {
		t.Fatalf("first token: %v, want a ban", err)
	}
	// Both processes refuse at once, without asking the provider.
	deadline := be.Until.Add(-300 * time.Millisecond)
	for time.Now().Before(deadline) {
		for _, b := range bs {
			if _, err := b.Token(ctx); !errors.As(err, &be) {
				t.Fatalf("during the ban: %v", err)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d token requests during the ban, want only the banned one", n)
	}
	time.Sleep(time.Until(be.Until))
	tok, err := bs[1].Token(ctx)
	if err != nil || tok.Value != "tok-2" {
		t.Fatalf("after the ban: %+v %v", tok, err)
	}
	if st := bs[1].State(); st.Bans != 1 {
		t.Fatalf("bans %d", st.Bans)
	}
}

// TestBanFromTheAPI: a 403 on an order call recorded with Ban stops the
// tokens too.
func TestBanFromTheAPI(t *testing.T) {
	t.Parallel()
	f := &fetcher{ttl: time.Hour}
	bs, _ := brokers(t, 2, f, Config{})
	ctx := tokenCtx(t, 10*time.Second)
	if _, err := bs[0].Token(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bs[0].Ban(ctx, time.Minute, "orders: 403"); err != nil {
		t.Fatal(err)
	}
	fgtest.WaitFor(t, 5*time.Second, func() error {
		_, err := bs[1].Token(ctx)
		var be *BannedError
		if !errors.As(err, &be) {
			return fmt.Errorf("process 2 not banned: %v", err)
		}
		return nil
	})
}

// TestRenewsAheadAtARandomMoment: a token is renewed before it expires,
// without any caller, between 60% and 85% (+5% jitter) of its life.
func TestRenewsAheadAtARandomMoment(t *testing.T) {
	t.Parallel()
	// A life of 4 s renews between 2.4 s and 3.4 s: at least 0.6 s ahead,
	// which a loaded runner needs (with 2 s, one race run renewed 0.2 ms
	// after the old token expired).
	f := &fetcher{ttl: 4 * time.Second}
	bs, _ := brokers(t, 2, f, Config{Budget: 10, Margin: 100 * time.Millisecond})
	ctx := tokenCtx(t, 30*time.Second)
	first, err := bs[0].Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := bs[0].State()
	life := st.Expires.Sub(st.Issued)
	if at := st.RenewAt.Sub(st.Issued); at < time.Duration(0.6*float64(life)) || at > time.Duration(0.85*float64(life)) {
		t.Fatalf("renewal moment at %v of a %v life", at, life)
	}
	moments := map[time.Duration]bool{}
	for range 3 {
		fgtest.WaitFor(t, 8*time.Second, func() error {
			if s := bs[1].State(); s.Gen <= st.Gen {
				return fmt.Errorf("still generation %d", s.Gen)
			}
			return nil
		})
		prev := st
		st = bs[1].State()
		if !st.Issued.Before(prev.Expires) {
			t.Fatalf("generation %d renewed at %v, after the old one expired at %v", st.Gen, st.Issued, prev.Expires)
		}
		moments[st.RenewAt.Sub(st.Issued).Round(time.Millisecond)] = true
	}
	if len(moments) < 2 {
		t.Fatalf("renewal moments not random: %v", moments)
	}
	if n := f.calls.Load(); n != int64(st.Gen) || first.Gen != 1 {
		t.Fatalf("%d token requests for %d generations", n, st.Gen)
	}
}

// TestDeadRenewerIsReplaced: a process that took the lease and died holds
// the others only until the lease runs out.
func TestDeadRenewerIsReplaced(t *testing.T) {
	t.Parallel()
	f := &fetcher{ttl: time.Hour}
	bs, kv := brokers(t, 1, f, Config{LeaseTTL: 2 * time.Second})
	ctx := tokenCtx(t, 10*time.Second)
	dead := State{Renewer: "dead", LeaseUntil: time.Now().Add(2 * time.Second), Budget: 0, BudgetAt: time.Now()}
	if _, ok, err := bs[0].cas(ctx, dead, 0); !ok || err != nil {
		t.Fatal(ok, err)
	}
	_ = kv
	start := time.Now()
	tok, err := bs[0].Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 1500*time.Millisecond {
		t.Fatalf("got %+v after %v: the live lease was not respected", tok, waited)
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("%d token requests", n)
	}
}

// TestWithoutNATS: a process cut off from NATS keeps its valid token and
// renews on its own at most once per LocalRenewEvery.
func TestWithoutNATS(t *testing.T) {
	t.Parallel()
	f := &fetcher{ttl: time.Hour}
	var up atomic.Bool
	up.Store(true)
	bs, _ := brokers(t, 1, f, Config{Connected: up.Load, LocalRenewEvery: time.Hour, LocalAfter: 100 * time.Millisecond})
	b := bs[0]
	ctx := tokenCtx(t, 10*time.Second)
	tok, err := b.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	up.Store(false)
	if again, err := b.Token(ctx); err != nil || again.Value != tok.Value {
		t.Fatalf("cached token: %+v %v", again, err)
	}
	_ = b.Invalidate(ctx, tok)
	// Not at once: a blip of the connection is waited out (here 100-200 ms).
	start := time.Now()
	local, err := b.Token(ctx)
	if err != nil || local.Value == tok.Value || !local.Local {
		t.Fatalf("local renewal: %+v %v", local, err)
	}
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Fatalf("renewed on its own after %v without NATS", waited)
	}
	_ = b.Invalidate(ctx, local)
	if _, err := b.Token(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("second local renewal within the hour: %v", err)
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("%d token requests", n)
	}
	// NATS is back: the shared entry wins over the local state.
	up.Store(true)
	if err := b.Ban(ctx, time.Millisecond, "nudge"); err != nil { // any write brings the entry back
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	fgtest.WaitFor(t, 5*time.Second, func() error {
		tk, err := b.Token(ctx)
		if err != nil || tk.Local {
			return fmt.Errorf("after NATS came back: %+v %v", tk, err)
		}
		return nil
	})
}

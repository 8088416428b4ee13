package fulfil

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/broker"
	"github.com/flashgate/flashgate/embed"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/provider"
	"github.com/flashgate/flashgate/provider/fake"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// rig is one NATS server and one fake provider; instances are flashgate
// processes' fulfilment parts, each on its own connection.
type rig struct {
	env  *fgtest.Env
	fake *fake.Provider
	url  string
	ids  *events.IDs
	ver  atomic.Uint64
}

func newRig(t *testing.T, fc fake.Config) *rig {
	t.Helper()
	fc.ClientID, fc.ClientSecret = "flashgate", "secret"
	p, err := fake.New(fc)
	if err != nil {
		t.Fatal(err)
	}
	u, stop, err := fake.Listen(context.Background(), "127.0.0.1:0", p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })
	// The instances connect over TCP, as separate processes would.
	return &rig{env: fgtest.NewWith(t, embed.Options{Listen: "127.0.0.1:0"}), fake: p, url: u, ids: events.NewIDs()}
}

type instance struct {
	js     jetstream.JetStream
	st     jetstream.Stream
	broker *broker.Broker
	worker *Worker
	stop   func()
}

type sender struct {
	Sender
	fail atomic.Pointer[error] // when set, every call fails with it
}

func (s *sender) SendOrder(ctx context.Context, token string, o provider.Order) (provider.Result, error) {
	if e := s.fail.Load(); e != nil {
		return provider.Result{}, *e
	}
	return s.Sender.SendOrder(ctx, token, o)
}

// start runs an instance: broker, worker and intake on a connection of its
// own. stop is as abrupt as a process's end: the connection closes.
func (r *rig) start(t *testing.T, name string, wc Config, bc broker.Config, s *sender) *instance {
	t.Helper()
	nc, err := nats.Connect(r.env.Server.ClientURL(), nats.Name(name))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithCancel(context.Background())
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, events.ProviderBucket)
	if err != nil {
		t.Fatal(err)
	}
	client, err := provider.New(provider.Config{URL: r.url, ClientID: "flashgate", ClientSecret: "secret", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if s == nil {
		s = &sender{}
	}
	s.Sender = client
	bc.Node = name
	b := broker.New(kv, client, bc)
	w := NewWorker(js, st, b, s, wc)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = b.Run(ctx) }()
	go func() { defer wg.Done(); _ = w.Run(ctx) }()
	go func() { defer wg.Done(); _ = RunIntake(ctx, js, IntakeConfig{}) }()
	var once sync.Once
	in := &instance{js: js, st: st, broker: b, worker: w}
	in.stop = func() { once.Do(func() { cancel(); nc.Close(); wg.Wait() }) }
	t.Cleanup(in.stop)
	return in
}

// accept appends decision batches accepting n purchases of sale, 50 a
// batch, and returns the order ids.
func (r *rig) accept(t *testing.T, sale string, n int) []string {
	t.Helper()
	ctx := context.Background()
	var orders []string
	for len(orders) < n {
		now := time.Now().UTC()
		db := events.DecisionBatch{Sale: sale, Writer: "test", DecidedAt: now, Head: events.Head{Version: r.ver.Add(1), Stock: 1_000_000, Quota: 1_000_000}}
		for i := 0; i < 50 && len(orders) < n; i++ {
			order := r.ids.New(now)
			db.Events = append(db.Events, events.Event{ID: r.ids.New(now), Type: events.TypePurchaseAccepted, Version: events.SchemaVersion,
				Sale: sale, Time: now, Shopper: fmt.Sprint("shopper-", len(orders)), Request: order,
				Data: &events.PurchaseAccepted{TokenID: r.ids.New(now), OrderID: order, Units: 1}})
			orders = append(orders, order)
		}
		b, err := events.EncodeDecisions(db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.env.JS.Publish(ctx, events.DecisionSubject(sale), b); err != nil {
			t.Fatal(err)
		}
	}
	return orders
}

// outcomes reads every order's outcome events, in stream order.
func (r *rig) outcomes(t *testing.T) map[string][]events.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[string][]events.Event{}
	last, err := r.env.Stream.GetLastMsgForSubject(ctx, events.SubjectOrdAll)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Read(ctx, r.env.Stream, events.SubjectOrdAll, 1, last.Sequence, func(m *jetstream.RawStreamMsg) error {
		e, err := events.DecodeEvent(m.Data)
		if err != nil {
			return err
		}
		if m.Subject != events.OrderSubject(e.Sale, e.Request) {
			return fmt.Errorf("%s on %s", e.Type, m.Subject)
		}
		out[e.Request] = append(out[e.Request], e)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitStatus waits until every order has reached status.
func (r *rig) waitStatus(t *testing.T, timeout time.Duration, sale string, orders []string, status Status) {
	t.Helper()
	ctx := context.Background()
	fgtest.WaitFor(t, timeout, func() error {
		left := 0
		var example string
		for _, o := range orders {
			s, err := ReadState(ctx, r.env.Stream, sale, o)
			if err != nil {
				return err
			}
			if s.Status != status {
				left++
				example = fmt.Sprintf("%s is %s (%s)", o, s.Status, s.Error)
			}
		}
		if left > 0 {
			return fmt.Errorf("%d of %d orders not %s, e.g. %s; provider %+v", left, len(orders), status, example, r.fake.Stats())
		}
		return nil
	})
}

// confirmedOnce checks every order has exactly one OrderConfirmed, last,
// and the provider has each once.
func (r *rig) confirmedOnce(t *testing.T, orders []string) {
	t.Helper()
	out := r.outcomes(t)
	taken := r.fake.Orders()
	for _, o := range orders {
		n := 0
		for _, e := range out[o] {
			if e.Type == events.TypeOrderConfirmed {
				n++
			}
		}
		if n != 1 || out[o][len(out[o])-1].Type != events.TypeOrderConfirmed {
			t.Fatalf("order %s: %d OrderConfirmed in %d events", o, n, len(out[o]))
		}
		ref := out[o][len(out[o])-1].Data.(*events.OrderConfirmed).Reference
		if p, ok := taken[o]; !ok || p.Reference != ref {
			t.Fatalf("order %s confirmed as %q, the provider has %+v", o, ref, p)
		}
	}
	if st := r.fake.Stats(); st.OrdersAccepted != len(orders) {
		t.Fatalf("the provider took %d orders, want %d", st.OrdersAccepted, len(orders))
	}
}

func TestOrdersAreConfirmed(t *testing.T) {
	t.Parallel()
	r := newRig(t, fake.Config{})
	r.start(t, "a", Config{}, broker.Config{}, nil)
	orders := r.accept(t, "s1", 40)
	r.waitStatus(t, 20*time.Second, "s1", orders, StatusConfirmed)
	r.confirmedOnce(t, orders)
	if st := r.fake.Stats(); st.TokenRequests != 1 {
		t.Fatalf("%d token requests for 40 orders", st.TokenRequests)
	}
}

// TestStorm is the renewal storm of the design notes: two processes, 500
// orders at once, tokens living 2 s and revoked by each renewal, spurious
// 401s and 503s. No ban, the token requests within the budget, every order
// confirmed exactly once.
func TestStorm(t *testing.T) {
	t.Parallel()
	r := newRig(t, fake.Config{TokenTTL: 2 * time.Second, RevokeOnRenew: true, Unauthorized: 0.05, FailShare: 0.05, Seed: 7})
	wc := Config{Concurrency: 32, Backoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, MaxAttempts: 50}
	bc := broker.Config{Margin: 200 * time.Millisecond}
	start := time.Now()
	r.start(t, "a", wc, bc, nil)
	r.start(t, "b", wc, bc, nil)
	orders := r.accept(t, "storm", 500)
	r.waitStatus(t, 90*time.Second, "storm", orders, StatusConfirmed)
	elapsed := time.Since(start)
	st := r.fake.Stats() // now: the brokers go on renewing the token meanwhile
	r.confirmedOnce(t, orders)
	t.Logf("500 orders in %v: %+v", elapsed.Round(time.Millisecond), st)
	if st.Bans != 0 || st.TokenRequestsDuringBan != 0 || st.OrderCallsDuringBan != 0 {
		t.Fatalf("banned: %+v", st)
	}
	if limit := 1 + int(elapsed.Seconds()) + 1; st.TokenRequests > limit {
		t.Fatalf("%d token requests in %v: over the budget of 1/s", st.TokenRequests, elapsed)
	}
	if st.MaxInWindow > 6 {
		t.Fatalf("%d token requests in one 5 s window: more than the budget allows", st.MaxInWindow)
	}
	if st.SpuriousUnauthorized == 0 || st.Failures == 0 {
		t.Fatalf("the storm had no 401s or failures: %+v", st)
	}
}

// TestBanHoldsEverything: once the provider bans, no token request is made
// until the ban ends; the orders are confirmed after it.
func TestBanHoldsEverything(t *testing.T) {
	t.Parallel()
	r := newRig(t, fake.Config{})
	r.fake.Ban(3 * time.Second)
	until := r.fake.BannedUntil()
	in := r.start(t, "a", Config{Backoff: 50 * time.Millisecond}, broker.Config{}, nil)
	r.start(t, "b", Config{Backoff: 50 * time.Millisecond}, broker.Config{}, nil)
	orders := r.accept(t, "s1", 30)
	fgtest.WaitFor(t, 5*time.Second, func() error {
		if !in.broker.State().Banned(time.Now()) {
			return errors.New("the ban is not recorded")
		}
		return nil
	})
	time.Sleep(time.Until(until) - 200*time.Millisecond)
	if st := r.fake.Stats(); st.TokenRequestsDuringBan != 1 || st.OrderCallsDuringBan != 0 {
		t.Fatalf("during the ban: %d token requests (want only the first), %d order calls", st.TokenRequestsDuringBan, st.OrderCallsDuringBan)
	}
	if s, _ := ReadState(context.Background(), r.env.Stream, "s1", orders[0]); s.Status != StatusAccepted {
		t.Fatalf("an order during the ban is %s", s.Status)
	}
	r.waitStatus(t, 20*time.Second, "s1", orders, StatusConfirmed)
	r.confirmedOnce(t, orders)
	if st := r.fake.Stats(); st.TokenRequestsDuringBan != 1 {
		t.Fatalf("%d token requests during the ban", st.TokenRequestsDuringBan)
	}
}

// TestCrashAfterTheProviderAccepted: the worker dies after the provider
// took the order and before the outcome is recorded. The next worker sends
// it again with the same key; the provider answers the first result; one
// OrderConfirmed, one order at the provider.
func TestCrashAfterTheProviderAccepted(t *testing.T) {
	t.Parallel()
	r := newRig(t, fake.Config{})
	crashed := make(chan string, 1)
	a := r.start(t, "a", Config{AckWait: 3 * time.Second, crash: func(order string) bool {
		select {
		case crashed <- order:
		default:
		}
		return true
	}}, broker.Config{}, nil)
	orders := r.accept(t, "s1", 1)
	select {
	case <-crashed:
	case <-time.After(10 * time.Second):
		t.Fatal("no order reached the provider")
	}
	a.stop()
	if st := r.fake.Stats(); st.OrdersAccepted != 1 {
		t.Fatalf("provider: %+v", st)
	}
	if out := r.outcomes(t); len(out[orders[0]]) != 0 {
		t.Fatalf("the crashed worker recorded %v", out[orders[0]])
	}

	r.start(t, "b", Config{AckWait: 3 * time.Second}, broker.Config{}, nil)
	r.waitStatus(t, 20*time.Second, "s1", orders, StatusConfirmed)
	r.confirmedOnce(t, orders)
	if st := r.fake.Stats(); st.Replays != 1 || r.fake.Orders()[orders[0]].Calls != 2 {
		t.Fatalf("the second send was not a replay: %+v", st)
	}
}

// TestDeadLetterAndRequeue: an order failing every call is given up after
// MaxAttempts into the dead-letter stream; requeued once the provider
// works, it is confirmed.
func TestDeadLetterAndRequeue(t *testing.T) {
	t.Parallel()
	r := newRig(t, fake.Config{})
	s := &sender{}
	down := error(&provider.Error{Op: "order", Status: http.StatusServiceUnavailable})
	s.fail.Store(&down)
	r.start(t, "a", Config{MaxAttempts: 3, Backoff: 20 * time.Millisecond}, broker.Config{}, s)
	orders := r.accept(t, "s1", 2)
	r.waitStatus(t, 20*time.Second, "s1", orders, StatusFailed)
	ctx := context.Background()
	// OrderFailed is recorded before the dead-letter entry is written: the
	// second order's entry may follow its status by a moment.
	var dead []DeadOrder
	fgtest.WaitFor(t, 10*time.Second, func() error {
		var total int
		var err error
		dead, total, err = ListDead(ctx, r.env.JS, "s1", 0)
		if err != nil || total != 2 || len(dead) != 2 {
			return fmt.Errorf("dead letters: %d/%d %v", len(dead), total, err)
		}
		return nil
	})
	if d := dead[0]; d.Reason != events.OrderFailedAttempts || d.Attempts != 3 || d.State.Status != StatusFailed {
		t.Fatalf("dead letter %+v", d)
	}
	out := r.outcomes(t)
	if evs := out[orders[0]]; len(evs) != 3 || evs[0].Type != events.TypeOrderAttemptFailed || evs[1].Data.(*events.OrderAttemptFailed).Attempt != 2 || evs[2].Type != events.TypeOrderFailed {
		t.Fatalf("outcomes %v", evs)
	}
	if _, err := Requeue(ctx, r.env.JS, orders[0], "test", time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := Requeue(ctx, r.env.JS, orders[0], "test", time.Hour, time.Now()); !errors.Is(err, ErrNotDead) {
		t.Fatalf("second requeue: %v", err)
	}
	s.fail.Store(nil)
	r.waitStatus(t, 20*time.Second, "s1", orders[:1], StatusConfirmed)
	if _, total, _ := ListDead(ctx, r.env.JS, "", 0); total != 1 {
		t.Fatalf("%d dead letters left, want 1", total)
	}
	if s, _ := ReadState(ctx, r.env.Stream, "s1", orders[1]); s.Status != StatusFailed {
		t.Fatalf("the other order is %s", s.Status)
	}
}

// TestRejectedAndDeadline: a 4xx is given up at once; an order past its
// deadline is given up without a call.
func TestRejectedAndDeadline(t *testing.T) {
	t.Parallel()
	r := newRig(t, fake.Config{})
	s := &sender{}
	bad := error(&provider.Error{Op: "order", Status: http.StatusUnprocessableEntity, Code: "bad_order"})
	s.fail.Store(&bad)
	r.start(t, "a", Config{}, broker.Config{}, s)
	orders := r.accept(t, "s1", 1)
	r.waitStatus(t, 20*time.Second, "s1", orders, StatusFailed)
	st, _ := ReadState(context.Background(), r.env.Stream, "s1", orders[0])
	if st.Reason != events.OrderFailedRejected || st.Attempts != 1 {
		t.Fatalf("rejected: %+v", st)
	}
	// An order whose deadline passed is given up without a call.
	s.fail.Store(nil)
	calls := r.fake.Stats().OrderCalls
	now := time.Now().UTC()
	late := Work{V: workVersion, Order: r.ids.New(now), Sale: "s1", Shopper: "u", TokenID: "t", Units: 1, AcceptedAt: now.Add(-2 * time.Hour), Deadline: now.Add(-time.Hour)}
	b, _ := json.Marshal(late)
	if _, err := r.env.JS.Publish(context.Background(), events.WorkSubject("s1"), b); err != nil {
		t.Fatal(err)
	}
	r.waitStatus(t, 20*time.Second, "s1", []string{late.Order}, StatusFailed)
	if st, _ := ReadState(context.Background(), r.env.Stream, "s1", late.Order); st.Reason != events.OrderFailedDeadline || st.Attempts != 0 {
		t.Fatalf("late: %+v", st)
	}
	if n := r.fake.Stats().OrderCalls; n != calls {
		t.Fatalf("%d calls for an order past its deadline", n-calls)
	}
}

// TestHubPassesOutcomes: a watch sees the order's state now, then its
// confirmation.
func TestHubPassesOutcomes(t *testing.T) {
	t.Parallel()
	r := newRig(t, fake.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hub := NewHub(r.env.JS, r.env.Stream, 1, nil)
	go func() { _ = hub.Run(ctx) }()
	orders := r.accept(t, "s1", 1)
	now, changes, stop, err := hub.Watch(ctx, "s1", orders[0])
	if err != nil || now.Status != StatusAccepted {
		t.Fatalf("watch: %+v %v", now, err)
	}
	defer stop()
	if _, _, _, err := hub.Watch(ctx, "s1", orders[0]); !errors.Is(err, ErrTooManyWatches) {
		t.Fatalf("a second watch over the bound: %v", err)
	}
	r.start(t, "a", Config{}, broker.Config{}, nil)
	select {
	case s := <-changes:
		if s.Status != StatusConfirmed || s.Reference == "" || s.Seq == 0 {
			t.Fatalf("change %+v", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no change")
	}
	stop()
	stop()
	if hub.Watches() != 0 {
		t.Fatalf("%d watches after stop", hub.Watches())
	}
}

// TestDeadlineDuringRetries: an order whose calls keep failing is given up
// at its deadline, not left retrying with nothing queued.
func TestDeadlineDuringRetries(t *testing.T) {
	t.Parallel()
	r := newRig(t, fake.Config{})
	s := &sender{}
	down := error(&provider.Error{Op: "order", Status: http.StatusBadGateway})
	s.fail.Store(&down)
	r.start(t, "a", Config{MaxAttempts: 1000, Backoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}, broker.Config{}, s)
	now := time.Now().UTC()
	w := Work{V: workVersion, Order: r.ids.New(now), Sale: "s1", Shopper: "u", TokenID: "t", Units: 1, AcceptedAt: now, Deadline: now.Add(3 * time.Second)}
	b, _ := json.Marshal(w)
	if _, err := r.env.JS.Publish(context.Background(), events.WorkSubject("s1"), b); err != nil {
		t.Fatal(err)
	}
	r.waitStatus(t, 20*time.Second, "s1", []string{w.Order}, StatusFailed)
	st, _ := ReadState(context.Background(), r.env.Stream, "s1", w.Order)
	if st.Reason != events.OrderFailedDeadline || st.Attempts < 2 {
		t.Fatalf("given up as %+v", st)
	}
	fgtest.WaitFor(t, 10*time.Second, func() error { // the entry follows OrderFailed
		if _, total, err := ListDead(context.Background(), r.env.JS, "s1", 0); err != nil || total != 1 {
			return fmt.Errorf("dead letters: %d %v", total, err)
		}
		return nil
	})
	// The list of another sale's dead letters ends too (its last entry is
	// not the stream's).
	if _, total, err := ListDead(context.Background(), r.env.JS, "other", 0); err != nil || total != 0 {
		t.Fatalf("another sale's dead letters: %d %v", total, err)
	}
}

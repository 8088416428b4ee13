package audit_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/audit"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ordersRun creates sale with n shoppers a-0-0 ... who each get a token
// and buy with it, decided by the sale's writer, and returns the purchase
// requests: the orders.
func ordersRun(t *testing.T, e *fgtest.Env, sale string, n int) []events.Event {
	t.Helper()
	now := time.Now().UTC()
	e.CreateSale(t, sale, int64(n), time.Hour, now.Add(-time.Minute))
	tokens := e.AppendTokenRequests(t, sale, "a", 1, n, now)
	decided(t, e, sale)
	ids := events.NewIDs()
	rb := events.RequestBatch{}
	for i, tok := range tokens {
		rb.Requests = append(rb.Requests, events.Event{ID: ids.New(now), Type: events.TypePurchaseRequested, Version: events.SchemaVersion,
			Sale: sale, Time: now, Shopper: fmt.Sprintf("a-0-%d", i), Data: &events.PurchaseRequested{TokenID: tok}})
	}
	data, err := events.EncodeRequests(rb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.JS.Publish(context.Background(), events.RequestSubject(sale), data); err != nil {
		t.Fatal(err)
	}
	decided(t, e, sale)
	return rb.Requests
}

// worker appends order events as the fulfilment worker does: on the
// order's subject, with the expected last sequence of that subject, so
// only what the subject held when the event was decided lets it land. A
// forger can do the same.
type worker struct {
	t    *testing.T
	js   jetstream.JetStream
	last map[string]uint64 // by subject
	ids  *events.IDs
}

func newWorker(t *testing.T, e *fgtest.Env) *worker {
	return &worker{t: t, js: e.JS, last: map[string]uint64{}, ids: events.NewIDs()}
}

// publish appends an order event of the order buy made, with data.
func (w *worker) publish(buy events.Event, data any) uint64 {
	w.t.Helper()
	var typ events.Type
	switch data.(type) {
	case *events.OrderAttemptFailed:
		typ = events.TypeOrderAttemptFailed
	case *events.OrderConfirmed:
		typ = events.TypeOrderConfirmed
	case *events.OrderFailed:
		typ = events.TypeOrderFailed
	case *events.OrderRequeued:
		typ = events.TypeOrderRequeued
	}
	now := time.Now().UTC()
	return w.event(events.Event{ID: w.ids.New(now), Type: typ, Version: events.SchemaVersion, Sale: buy.Sale, Time: now,
		Shopper: buy.Shopper, Request: buy.ID, Data: data})
}

// event appends e on its order's subject.
func (w *worker) event(e events.Event) uint64 {
	w.t.Helper()
	data, err := events.EncodeEvent(e)
	if err != nil {
		w.t.Fatal(err)
	}
	msg := nats.NewMsg(events.OrderSubject(e.Sale, e.Request))
	msg.Data = data
	ack, err := w.js.PublishMsg(context.Background(), msg, jetstream.WithExpectLastSequencePerSubject(w.last[msg.Subject]))
	if err != nil {
		w.t.Fatal(err)
	}
	w.last[msg.Subject] = ack.Sequence
	return ack.Sequence
}

func attemptFailed(n int) *events.OrderAttemptFailed {
	return &events.OrderAttemptFailed{Attempt: n, Status: 503, Error: "provider: 503", RetryAt: time.Now().Add(time.Second)}
}

// honestOrders puts six orders of sale s through the fulfilment outcomes
// of an honest worker:
//
//	0: retrying -> confirmed        3: failed (rejected)
//	1: failed -> pending -> confirmed 4: failed -> pending
//	2: retrying, twice              5: accepted, no outcome yet
func honestOrders(t *testing.T, e *fgtest.Env) (*worker, []events.Event) {
	t.Helper()
	o := ordersRun(t, e, "s", 6)
	w := newWorker(t, e)
	w.publish(o[0], attemptFailed(1))
	w.publish(o[1], &events.OrderFailed{Reason: events.OrderFailedAttempts, Attempts: 3, Error: "timeout"})
	w.publish(o[1], &events.OrderRequeued{By: "operator"})
	w.publish(o[0], &events.OrderConfirmed{Reference: "P-0", Attempts: 2})
	w.publish(o[2], attemptFailed(1))
	w.publish(o[2], attemptFailed(2))
	w.publish(o[3], &events.OrderFailed{Reason: events.OrderFailedRejected, Attempts: 1, Error: "provider: 422"})
	w.publish(o[4], &events.OrderFailed{Reason: events.OrderFailedDeadline})
	w.publish(o[4], &events.OrderRequeued{By: "operator"})
	w.publish(o[1], &events.OrderConfirmed{Reference: "P-1", Attempts: 1})
	return w, o
}

func TestAuditPassesHonestOrders(t *testing.T) {
	e := fgtest.New(t)
	honestOrders(t, e)
	rep, out := run(t, e)
	if !rep.OK() || len(rep.Sales) != 1 {
		t.Fatalf("honest orders:\n%s", out)
	}
	want := audit.OrderReport{Accepted: 6, Confirmed: 2, Failed: 1, InFlight: 3, Pending: 1,
		Events: 10, AttemptsFailed: 3, GivenUp: 3, Requeued: 2}
	if got := rep.Sales[0].Orders; got != want {
		t.Errorf("order figures %+v, want %+v\n%s", got, want, out)
	}
	for _, line := range []string{
		"orders      6 accepted: 2 confirmed, 1 failed, 3 in flight (1 requeued); 10 order events: 3 attempts failed, 3 given up, 2 requeued",
		"ok   orders: each of the 10 order events names an order accepted for its sale and shopper, on that order's subject",
		"ok   fulfilment: each order confirmed at most once",
		"ok   orders view: the status, attempts, reference and errors of each of the 6 orders = its events",
		"result: PASS",
	} {
		if !strings.Contains(out, line) {
			t.Errorf("report lacks %q:\n%s", line, out)
		}
	}
}

// wantCaught checks that the audit fails with violations holding each of
// texts, that the failing invariant lines are those of fail, and the
// others still hold.
func wantCaught(t *testing.T, e *fgtest.Env, fail []string, texts ...string) {
	t.Helper()
	rep, out := run(t, e)
	if rep.OK() {
		t.Fatalf("audit passed:\n%s", out)
	}
	for _, want := range texts {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	for _, line := range []string{"re-run:", "views:", "orders:", "fulfilment:", "orders view:"} {
		mark := "ok   "
		for _, f := range fail {
			if f == line {
				mark = "FAIL "
			}
		}
		if !strings.Contains(out, mark+line) {
			t.Errorf("report lacks %q:\n%s", mark+line, out)
		}
	}
}

func TestAuditCatchesASecondConfirmation(t *testing.T) {
	e := fgtest.New(t)
	w, o := honestOrders(t, e)
	// The forger appends it the way the worker does: past the subject's
	// guard, which only orders the order's events.
	seq := w.publish(o[0], &events.OrderConfirmed{Reference: "P-0-again", Attempts: 1})
	wantCaught(t, e, []string{"fulfilment:"},
		fmt.Sprintf("order %s: confirmed again at %d (first at", o[0].ID, seq),
		"OrderConfirmed", "confirms order "+o[0].ID+" again") // the replay's anomaly
	// The first confirmation stands: the figures do not move.
	rep, _ := run(t, e)
	if got := rep.Sales[0].Orders; got.Confirmed != 2 || got.BadTransitions != 1 || got.ViewsDiffer != 0 {
		t.Errorf("order figures %+v", got)
	}
}

func TestAuditCatchesAConfirmationOfNoOrder(t *testing.T) {
	e := fgtest.New(t)
	w, o := honestOrders(t, e)
	ghost := o[0]
	ghost.ID = events.NewIDs().New(time.Now())
	seq := w.publish(ghost, &events.OrderConfirmed{Reference: "P-ghost", Attempts: 1})
	wantCaught(t, e, []string{"orders:"},
		fmt.Sprintf("order %s: OrderConfirmed at %d, but no such order was accepted in sale s", ghost.ID, seq))
}

func TestAuditCatchesAConfirmationForAnotherShopper(t *testing.T) {
	e := fgtest.New(t)
	w, o := honestOrders(t, e)
	other := o[5]
	other.Shopper = "mallory"
	seq := w.publish(other, &events.OrderConfirmed{Reference: "P-5", Attempts: 1})
	wantCaught(t, e, []string{"orders:"},
		fmt.Sprintf(`order %s: OrderConfirmed at %d names shopper "mallory", the order was accepted for "a-0-5"`, o[5].ID, seq))
}

func TestAuditCatchesOrderEventsOutOfStep(t *testing.T) {
	e := fgtest.New(t)
	w, o := honestOrders(t, e)
	// A requeue of an order that did not fail, an attempt numbered out of
	// sequence, an attempt on a failed order, an event after the
	// confirmation, an event on another order's subject.
	rq := w.publish(o[5], &events.OrderRequeued{By: "operator"})
	at := w.publish(o[2], attemptFailed(5))
	af := w.publish(o[3], attemptFailed(2))
	ac := w.publish(o[0], attemptFailed(1))
	ev := events.Event{ID: events.NewIDs().New(time.Now()), Type: events.TypeOrderConfirmed, Version: events.SchemaVersion, Sale: "s",
		Time: time.Now().UTC(), Shopper: o[4].Shopper, Request: o[4].ID, Data: &events.OrderConfirmed{Reference: "X", Attempts: 1}}
	data, err := events.EncodeEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := e.JS.Publish(context.Background(), events.OrderSubject("s", o[5].ID), data)
	if err != nil {
		t.Fatal(err)
	}
	wantCaught(t, e, []string{"orders:", "fulfilment:"},
		fmt.Sprintf("order %s: requeued at %d, but it is accepted (only a failed order is requeued)", o[5].ID, rq),
		fmt.Sprintf("order %s: attempt 5 failed at %d, but 2 had failed before it", o[2].ID, at),
		fmt.Sprintf("order %s: OrderAttemptFailed at %d, but it is failed (only an OrderRequeued may follow an OrderFailed)", o[3].ID, af),
		fmt.Sprintf("order %s: OrderAttemptFailed at %d after its OrderConfirmed at", o[0].ID, ac),
		fmt.Sprintf("order %s: OrderConfirmed %s at %d on %s names order %s of sale s", o[5].ID, ev.ID, ack.Sequence, events.OrderSubject("s", o[5].ID), o[4].ID))
	rep, _ := run(t, e)
	// The attempt out of sequence counts (as in the view); the rest change nothing.
	if got := rep.Sales[0].Orders; got.Unmatched != 1 || got.BadTransitions != 4 || got.ViewsDiffer != 0 || got.AttemptsFailed != 4 ||
		got.Requeued != 2 || got.Confirmed != 2 {
		t.Errorf("order figures %+v", got)
	}
}

// TestAuditComparesTheOrdersView: an orders view that is not what the
// order events make of the orders is caught.
func TestAuditComparesTheOrdersView(t *testing.T) {
	e := fgtest.New(t)
	_, o := honestOrders(t, e)
	audit.SetHookAfterReplay(func(views *sql.DB) {
		if _, err := views.Exec(`UPDATE orders SET status = 'confirmed', reference = 'X' WHERE id = ?`, o[5].ID); err != nil {
			t.Error(err)
		}
		if _, err := views.Exec(`UPDATE orders SET attempts = 7 WHERE id = ?`, o[2].ID); err != nil {
			t.Error(err)
		}
	})
	defer audit.SetHookAfterReplay(nil)
	wantCaught(t, e, []string{"orders view:"},
		fmt.Sprintf(`orders view: order %s is confirmed (attempts 0, reference "X", error "", failed for "", updated ), its events make it accepted (0, "", "", "", -)`, o[5].ID),
		fmt.Sprintf(`orders view: order %s is retrying (attempts 7,`, o[2].ID),
		"orders view: 3 confirmed, 1 failed, 2 in flight (1 requeued), the events 2, 1, 3 (1)")
}

package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
)

// publishOrders creates sale id with n shoppers who each get a token and
// buy with it, and returns the purchase requests (the orders).
func publishOrders(t *testing.T, p pub, id string, n int) (*sale, []events.Event) {
	t.Helper()
	s := newSale(id)
	p.sale(s.created(int64(n)))
	var asks, buys, issued, accepted []events.Event
	for i := range n {
		asks = append(asks, s.tokenReq(fmt.Sprintf("%s-shopper-%d", id, i)))
	}
	p.requests(s, asks...)
	for _, a := range asks {
		issued = append(issued, s.issued(a))
	}
	p.decisions(s.batch(events.Head{Stock: int64(n), Quota: int64(n), Issued: int64(n)}, issued...))
	for _, a := range asks {
		buys = append(buys, s.purchaseReq(a.Shopper, a.ID))
	}
	p.requests(s, buys...)
	for _, b := range buys {
		accepted = append(accepted, s.accepted(b))
	}
	p.decisions(s.batch(events.Head{Stock: int64(n), Quota: int64(n), Issued: int64(n), Redeemed: int64(n)}, accepted...))
	return s, buys
}

// wantOrder checks an order's fulfilment columns.
func wantOrder(t *testing.T, st *Store, id, status string, attempts int, ref, lastErr, reason string) Order {
	t.Helper()
	o, err := st.Order(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if o.Status != status || o.Attempts != attempts || o.Reference != ref || o.LastError != lastErr || o.FailedReason != reason {
		t.Errorf("order %s = %s, attempts %d, reference %q, last error %q, failed reason %q; want %s, %d, %q, %q, %q",
			id, o.Status, o.Attempts, o.Reference, o.LastError, o.FailedReason, status, attempts, ref, lastErr, reason)
	}
	return o
}

func TestReplayFoldsOrderOutcomes(t *testing.T) {
	ctx := context.Background()
	js := startJS(t)
	p := pub{t, js}
	s, o := publishOrders(t, p, "o1", 6)
	// 0: accepted -> retrying -> confirmed
	p.order(s.attemptFailed(o[0], 1))
	// 1: accepted -> failed -> pending -> confirmed
	p.order(s.failed(o[1], events.OrderFailedAttempts, 5, "timeout"))
	p.order(s.requeued(o[1]))
	p.order(s.confirmed(o[0], "P-0", 2)) // interleaved with order 1's
	// 2: retrying, twice
	p.order(s.attemptFailed(o[2], 1))
	p.order(s.attemptFailed(o[2], 2))
	// 3: given up for good
	p.order(s.failed(o[3], events.OrderFailedRejected, 1, "provider: 422"))
	// 4: failed, then requeued: pending
	p.order(s.attemptFailed(o[4], 1))
	p.order(s.failed(o[4], events.OrderFailedDeadline, 1, ""))
	p.order(s.requeued(o[4]))
	// 5: accepted, no outcome yet; then order 1's confirmation
	last1 := s.confirmed(o[1], "P-1", 1)
	p.order(last1)
	// A second sale, its orders interleaved with a decision batch of the first.
	s2, o2 := publishOrders(t, p, "o2", 2)
	p.order(s2.confirmed(o2[0], "Q-0", 1))
	late := s.tokenReq("late")
	p.requests(s, late)
	p.decisions(s.batch(events.Head{Stock: 6, Quota: 6, Issued: 6, Redeemed: 6}, s.denied(late, events.ReasonSoldOut)))
	last := p.order(s2.attemptFailed(o2[1], 1))

	st, _ := openStore(t)
	if _, err := Replay(ctx, js, st); err != nil {
		t.Fatal(err)
	}
	if got, err := st.LastSeq(ctx); err != nil || got != last {
		t.Fatalf("LastSeq = %d, %v; want %d", got, err, last)
	}
	if a := anomalies(t, st); len(a) != 0 {
		t.Fatalf("anomalies of an honest stream:\n%s", strings.Join(a, "\n"))
	}
	wantOrder(t, st, o[0].ID, StatusConfirmed, 1, "P-0", "provider: 503 #1", "")
	got := wantOrder(t, st, o[1].ID, StatusConfirmed, 0, "P-1", "timeout", "")
	if !got.UpdatedAt.Equal(last1.Time) || got.Shopper != o[1].Shopper || got.TokenID != o[1].Data.(*events.PurchaseRequested).TokenID ||
		got.Units != 1 || got.CreatedAt.IsZero() {
		t.Errorf("order 1 = %+v", got)
	}
	wantOrder(t, st, o[2].ID, StatusRetrying, 2, "", "provider: 503 #2", "")
	wantOrder(t, st, o[3].ID, StatusFailed, 1, "", "provider: 422", events.OrderFailedRejected)
	wantOrder(t, st, o[4].ID, StatusPending, 0, "", "provider: 503 #1", "")
	if got := wantOrder(t, st, o[5].ID, StatusAccepted, 0, "", "", ""); !got.UpdatedAt.IsZero() {
		t.Errorf("order 5 updated at %v before any order event", got.UpdatedAt)
	}
	wantOrder(t, st, o2[0].ID, StatusConfirmed, 0, "Q-0", "", "")
	wantOrder(t, st, o2[1].ID, StatusRetrying, 1, "", "provider: 503 #1", "")

	for sale, want := range map[string]OrderCounts{
		"o1":   {Accepted: 1, Retrying: 1, Confirmed: 2, Failed: 1, Pending: 1},
		"o2":   {Retrying: 1, Confirmed: 1},
		"":     {Accepted: 1, Retrying: 2, Confirmed: 3, Failed: 1, Pending: 1},
		"none": {},
	} {
		got, err := st.OrderCounts(ctx, sale)
		if err != nil || got != want {
			t.Errorf("OrderCounts(%q) = %+v, %v; want %+v", sale, got, err, want)
		}
	}
	if c, _ := st.OrderCounts(ctx, "o1"); c.Total() != 6 || c.InFlight() != 3 {
		t.Errorf("o1: total %d, in flight %d; want 6, 3", c.Total(), c.InFlight())
	}
	// Every order event is in the audit trail, with its order's subject's sale.
	if n := count(t, st.DB(), `SELECT COUNT(*) FROM audit_trail WHERE type LIKE 'Order%'`); n != 13 {
		t.Errorf("%d order events in the audit trail, want 13", n)
	}
	var body string
	if err := st.DB().QueryRow(`SELECT body FROM audit_trail WHERE event_id = ?`, last1.ID).Scan(&body); err != nil {
		t.Fatal(err)
	}
	if e, err := events.DecodeEvent([]byte(body)); err != nil || e.Type != events.TypeOrderConfirmed || e.Request != o[1].ID ||
		e.Data.(*events.OrderConfirmed).Reference != "P-1" {
		t.Errorf("audit trail body decodes to %+v, %v", e, err)
	}

	// Idempotent: replayed again, applied again, or applied one message at
	// a time, on the fast path or row by row: the same rows.
	want := dump(t, st)
	if n, err := Replay(ctx, js, st); err != nil || n != 0 {
		t.Errorf("second Replay = %d, %v", n, err)
	}
	msgs := streamMsgs(t, ctx, js, last)
	if err := st.Apply(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, st); got != want {
		t.Errorf("replay again changed the views:\n%s\nwant\n%s", got, want)
	}
	single, _ := openStore(t)
	exact, _ := openStore(t)
	for _, m := range msgs {
		if err := single.Apply(ctx, []Msg{m}); err != nil {
			t.Fatal(err)
		}
	}
	if err := exact.applyTx(ctx, msgs, true); err != nil {
		t.Fatal(err)
	}
	for name, other := range map[string]*Store{"one message a transaction": single, "row by row": exact} {
		if got := dump(t, other); got != want {
			t.Errorf("%s:\n%s\nwant\n%s", name, got, want)
		}
	}

	if _, err := st.Order(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Order(nope) err = %v, want ErrNotFound", err)
	}
}

func TestOrderAnomalies(t *testing.T) {
	ctx := context.Background()
	js := startJS(t)
	p := pub{t, js}
	s, o := publishOrders(t, p, "a1", 6)
	_, other := publishOrders(t, p, "a2", 1)

	type anomaly struct {
		seq  uint64
		sale string
		text string
	}
	var wants []anomaly
	bad := func(sale, text string, seq uint64) { wants = append(wants, anomaly{seq, sale, text}) }

	// An order never accepted.
	ghost := s.purchaseReq("ghost", "01JZZZZZZZZZZZZZZZZZZZZZZZ")
	bad("a1", "OrderConfirmed .* for order "+ghost.ID+", which was never accepted", p.order(s.confirmed(ghost, "X", 1)))
	// An order of another sale, named as this sale's.
	e := s.confirmed(other[0], "X", 1)
	bad("a1", "names sale a1, order "+other[0].ID+" is of sale a2", p.order(e))
	// Another shopper.
	e = s.confirmed(o[0], "X", 1)
	e.Shopper = "mallory"
	bad("a1", `names shopper "mallory", order `+o[0].ID+` is "a1-shopper-0"'s`, p.order(e))
	// On the wrong subject: another order's, another sale's.
	e = s.confirmed(o[0], "X", 1)
	b, _ := events.EncodeEvent(e)
	bad("a1", "on fg.ord.a1."+o[1].ID+" names order "+o[0].ID+" of sale a1", p.raw(events.OrderSubject("a1", o[1].ID), b))
	bad("a2", "on fg.ord.a2."+o[0].ID+" names order "+o[0].ID+" of sale a1", p.raw(events.OrderSubject("a2", o[0].ID), b))
	// Undecodable, and not an order event.
	bad("a1", "undecodable order message on fg.ord.a1."+o[0].ID, p.raw(events.OrderSubject("a1", o[0].ID), []byte("{")))
	b, _ = events.EncodeEvent(s.created(1))
	bad("a1", "is a SaleCreated, not an order event", p.raw(events.OrderSubject("a1", o[0].ID), b))
	// A requeue of an order that has not failed.
	bad("a1", "OrderRequeued .* for order "+o[0].ID+", which is accepted", p.order(s.requeued(o[0])))
	// Confirmed twice, and an attempt after the confirmation.
	p.order(s.confirmed(o[0], "P-0", 1))
	bad("a1", "OrderConfirmed .* confirms order "+o[0].ID+" again", p.order(s.confirmed(o[0], "P-0b", 1)))
	bad("a1", "OrderAttemptFailed .* for order "+o[0].ID+" after its OrderConfirmed", p.order(s.attemptFailed(o[0], 1)))
	bad("a1", "OrderRequeued .* for order "+o[0].ID+" after its OrderConfirmed", p.order(s.requeued(o[0])))
	// Failed orders are tried again only after a requeue.
	p.order(s.failed(o[1], events.OrderFailedAttempts, 3, "timeout"))
	bad("a1", "OrderAttemptFailed .* for order "+o[1].ID+", which is failed", p.order(s.attemptFailed(o[1], 4)))
	bad("a1", "OrderConfirmed .* for order "+o[1].ID+", which is failed", p.order(s.confirmed(o[1], "P-1", 4)))
	bad("a1", "OrderFailed .* for order "+o[1].ID+", which is failed", p.order(s.failed(o[1], events.OrderFailedDeadline, 3, "")))
	// Attempt numbers that do not count up from 1 (folded all the same).
	bad("a1", "OrderAttemptFailed .* of order "+o[2].ID+" is attempt 2, after 0 failed", p.order(s.attemptFailed(o[2], 2)))
	bad("a1", "OrderAttemptFailed .* of order "+o[2].ID+" is attempt 2, after 2 failed", p.order(s.attemptFailed(o[2], 2)))
	// Good events after all that are still folded.
	p.order(s.failed(o[3], events.OrderFailedAttempts, 1, "timeout"))
	p.order(s.requeued(o[3]))
	bad("a1", "OrderRequeued .* for order "+o[3].ID+", which is pending", p.order(s.requeued(o[3])))
	last := p.order(s.attemptFailed(o[3], 1))

	st, _ := openStore(t)
	if _, err := Replay(ctx, js, st); err != nil {
		t.Fatal(err)
	}
	got := anomalies(t, st)
	for _, w := range wants {
		found := false
		for _, g := range got {
			prefix := itoa(w.seq) + " " + w.sale + ": "
			if strings.HasPrefix(g, prefix) && matches(g[len(prefix):], w.text) {
				found = true
			}
		}
		if !found {
			t.Errorf("no anomaly %q at %d (sale %s) in\n%s", w.text, w.seq, w.sale, strings.Join(got, "\n"))
		}
	}
	if len(got) != len(wants) {
		t.Errorf("%d anomalies, want %d:\n%s", len(got), len(wants), strings.Join(got, "\n"))
	}
	// What was refused changed nothing.
	wantOrder(t, st, o[0].ID, StatusConfirmed, 0, "P-0", "", "")
	wantOrder(t, st, o[1].ID, StatusFailed, 3, "", "timeout", events.OrderFailedAttempts)
	wantOrder(t, st, o[2].ID, StatusRetrying, 2, "", "provider: 503 #2", "")
	wantOrder(t, st, o[3].ID, StatusRetrying, 1, "", "provider: 503 #1", "")
	wantOrder(t, st, other[0].ID, StatusAccepted, 0, "", "", "")
	if _, err := st.Order(ctx, ghost.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Order(ghost) = %v, want ErrNotFound", err)
	}
	// Every event is in the audit trail, the refused ones too; the
	// undecodable message is not an event.
	if n := count(t, st.DB(), `SELECT COUNT(*) FROM audit_trail WHERE seq > ? AND seq <= ?`, 8, last); n != int(last)-8-1 {
		t.Errorf("%d audit trail rows after the sales' messages, want %d", n, int(last)-8-1)
	}

	// The same views one message at a time and row by row.
	msgs := streamMsgs(t, ctx, js, last)
	single, _ := openStore(t)
	for _, m := range msgs {
		if err := single.Apply(ctx, []Msg{m}); err != nil {
			t.Fatal(err)
		}
	}
	exact, _ := openStore(t)
	if err := exact.applyTx(ctx, msgs, true); err != nil {
		t.Fatal(err)
	}
	want := dump(t, st)
	for name, other := range map[string]*Store{"one message a transaction": single, "row by row": exact} {
		if got := dump(t, other); got != want {
			t.Errorf("%s:\n%s\nwant\n%s", name, got, want)
		}
	}
}

// matches reports whether s holds the parts of pattern around each " .* ".
func matches(s, pattern string) bool {
	for _, part := range strings.Split(pattern, " .* ") {
		i := strings.Index(s, part)
		if i < 0 {
			return false
		}
		s = s[i+len(part):]
	}
	return true
}

func TestRunFollowsOrderEvents(t *testing.T) {
	js := startJS(t)
	p := pub{t, js}
	st, _ := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, js, st, RunOptions{MaxBatch: 3, MaxDelay: 5 * time.Millisecond}) }()

	s, o := publishOrders(t, p, "live", 2)
	waitOrder := func(id, status string) {
		t.Helper()
		waitFor(t, 10*time.Second, func() error {
			got, err := st.Order(context.Background(), id)
			if err != nil {
				return err
			}
			if got.Status != status {
				return fmt.Errorf("order %s is %s, want %s", id, got.Status, status)
			}
			return nil
		})
	}
	waitOrder(o[1].ID, StatusAccepted)
	p.order(s.attemptFailed(o[0], 1))
	waitOrder(o[0].ID, StatusRetrying)
	p.order(s.confirmed(o[0], "P-0", 2))
	p.order(s.failed(o[1], events.OrderFailedDeadline, 0, ""))
	waitOrder(o[1].ID, StatusFailed)
	waitOrder(o[0].ID, StatusConfirmed)
	p.order(s.requeued(o[1]))
	last := p.order(s.confirmed(o[1], "P-1", 1))
	waitOrder(o[1].ID, StatusConfirmed)
	waitFor(t, 10*time.Second, func() error {
		if got, err := st.LastSeq(context.Background()); err != nil || got != last {
			return fmt.Errorf("last seq %d, %v; want %d", got, err, last)
		}
		return nil
	})
	stop(t, cancel, done)
	if a := anomalies(t, st); len(a) != 0 {
		t.Errorf("anomalies: %v", a)
	}
	wantOrder(t, st, o[0].ID, StatusConfirmed, 1, "P-0", "provider: 503 #1", "")
	wantOrder(t, st, o[1].ID, StatusConfirmed, 0, "P-1", "", "")

	// A fresh replay builds the same views as the live ones.
	fresh, _ := openStore(t)
	if _, err := Replay(context.Background(), js, fresh); err != nil {
		t.Fatal(err)
	}
	if got, want := dump(t, fresh), dump(t, st); got != want {
		t.Errorf("replay differs from live views:\n%s\nwant\n%s", got, want)
	}
}

// TestMigrateOrdersFromVersion1: a database of schema version 1 keeps its
// orders, which come out accepted with no attempts, and takes order events.
func TestMigrateOrdersFromVersion1(t *testing.T) {
	ctx := context.Background()
	path := t.TempDir() + "/v1.db"
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE migrations (version INTEGER PRIMARY KEY, applied_at TEXT)`,
		schemaV1,
		`INSERT INTO migrations (version, applied_at) VALUES (1, '')`,
		`INSERT INTO orders (id, sale, shopper, token_id, request, units, status, created_at)
			VALUES ('01JE2W6N2X7Q8V9B0C1D2E3F4H', 'm', 'alice', 'tok', '01JE2W6N2X7Q8V9B0C1D2E3F4H', 1, 'accepted', '2030-01-02T10:00:00.000000000Z')`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	st, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if n := count(t, st.DB(), `SELECT COUNT(*) FROM migrations`); n != len(migrations) {
		t.Errorf("%d migrations, want %d", n, len(migrations))
	}
	o := wantOrder(t, st, "01JE2W6N2X7Q8V9B0C1D2E3F4H", StatusAccepted, 0, "", "", "")
	if o.Shopper != "alice" || !o.UpdatedAt.IsZero() {
		t.Errorf("migrated order %+v", o)
	}
	s := newSale("m")
	buy := events.Event{ID: "01JE2W6N2X7Q8V9B0C1D2E3F4H", Shopper: "alice"}
	b, err := events.EncodeEvent(s.confirmed(buy, "P", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(ctx, []Msg{{Seq: 1, Subject: events.OrderSubject("m", buy.ID), Data: b}}); err != nil {
		t.Fatal(err)
	}
	wantOrder(t, st, buy.ID, StatusConfirmed, 0, "P", "", "")
	if c, err := st.OrderCounts(ctx, "m"); err != nil || c != (OrderCounts{Confirmed: 1}) {
		t.Errorf("OrderCounts = %+v, %v", c, err)
	}
}

package projections

import (
	"context"
	"database/sql"
	"fmt"
	"github.com/flashgate/flashgate/internal/fgtest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/nats-io/nats.go/jetstream"
)

// startJS runs an embedded NATS server with the flashgate stream.
func startJS(t testing.TB) jetstream.JetStream { return fgtest.New(t).JS }

// openStore opens a store in a fresh directory.
func openStore(tb testing.TB) (*Store, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "views.db")
	s, err := Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s, path
}

// waitFor polls fn until it returns nil or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sale builds the events of one sale by hand. Its clock advances one
// millisecond per event.
type sale struct {
	id      string
	ids     *events.IDs
	now     time.Time
	version uint64
	cursor  uint64
}

func newSale(id string) *sale {
	return &sale{id: id, ids: events.NewIDs(), now: time.Date(2030, 1, 2, 10, 0, 0, 0, time.UTC)}
}

func (s *sale) tick() time.Time {
	s.now = s.now.Add(time.Millisecond)
	return s.now
}

func (s *sale) created(stock int64) events.Event {
	t := s.tick()
	return events.Event{ID: s.ids.New(t), Type: events.TypeSaleCreated, Sale: s.id, Time: t,
		Data: &events.SaleCreated{Stock: stock, QuotaBuffer: 1.5, Quota: stock * 3 / 2, PerUserLimit: 1,
			TokenTTL: events.Duration(5 * time.Minute), OpensAt: t.Add(time.Hour)}}
}

func (s *sale) tokenReq(shopper string) events.Event {
	t := s.tick()
	return events.Event{ID: s.ids.New(t), Type: events.TypeTokenRequested, Sale: s.id, Time: t,
		Shopper: shopper, ClientRequestID: "c-" + shopper, Data: &events.TokenRequested{}}
}

func (s *sale) purchaseReq(shopper, token string) events.Event {
	t := s.tick()
	return events.Event{ID: s.ids.New(t), Type: events.TypePurchaseRequested, Sale: s.id, Time: t,
		Shopper: shopper, ClientRequestID: "p-" + shopper, Data: &events.PurchaseRequested{TokenID: token}}
}

// decision builds a decision answering req (nil for TokenExpired) with data;
// its time is set by batch.
func (s *sale) decision(typ events.Type, req *events.Event, data any) events.Event {
	e := events.Event{ID: s.ids.New(s.now), Type: typ, Sale: s.id, Data: data}
	if req != nil {
		e.Request = req.ID
	}
	return e
}

func (s *sale) issued(req events.Event) events.Event {
	return s.decision(events.TypeTokenIssued, &req, &events.TokenIssued{TokenID: req.ID,
		IssuedAt: s.now, ExpiresAt: s.now.Add(5 * time.Minute)})
}

// reissued answers req with the token first issued by first.
func (s *sale) reissued(req, first events.Event) events.Event {
	x := *first.Data.(*events.TokenIssued)
	x.AlreadyIssued = true
	return s.decision(events.TypeTokenIssued, &req, &x)
}

func (s *sale) denied(req events.Event, reason string) events.Event {
	return s.decision(events.TypeTokenDenied, &req, &events.TokenDenied{Reason: reason})
}

func (s *sale) expired(token string) events.Event {
	return s.decision(events.TypeTokenExpired, nil, &events.TokenExpired{TokenID: token, ExpiresAt: s.now})
}

func (s *sale) accepted(req events.Event) events.Event {
	p := req.Data.(*events.PurchaseRequested)
	return s.decision(events.TypePurchaseAccepted, &req, &events.PurchaseAccepted{TokenID: p.TokenID, OrderID: req.ID, Units: 1})
}

func (s *sale) refused(req events.Event, reason string) events.Event {
	p := req.Data.(*events.PurchaseRequested)
	return s.decision(events.TypePurchaseRefused, &req, &events.PurchaseRefused{TokenID: p.TokenID, Reason: reason})
}

// order is a fulfilment event (its type follows data) of the order that
// purchase request buy made.
func (s *sale) order(buy events.Event, data any) events.Event {
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
	t := s.tick()
	return events.Event{ID: s.ids.New(t), Type: typ, Sale: s.id, Time: t, Shopper: buy.Shopper, Request: buy.ID, Data: data}
}

// attemptFailed, confirmed, failed and requeued are order events of the
// order buy made.
func (s *sale) attemptFailed(buy events.Event, attempt int) events.Event {
	return s.order(buy, &events.OrderAttemptFailed{Attempt: attempt, Status: 503, Error: "provider: 503 #" + strconv.Itoa(attempt),
		RetryAt: s.now.Add(time.Second)})
}

func (s *sale) confirmed(buy events.Event, ref string, attempts int) events.Event {
	return s.order(buy, &events.OrderConfirmed{Reference: ref, Attempts: attempts})
}

func (s *sale) failed(buy events.Event, reason string, attempts int, msg string) events.Event {
	return s.order(buy, &events.OrderFailed{Reason: reason, Attempts: attempts, Error: msg})
}

func (s *sale) requeued(buy events.Event) events.Event {
	return s.order(buy, &events.OrderRequeued{By: "operator"})
}

// batch is the next decision batch holding evs, all stamped with one
// decision time.
func (s *sale) batch(head events.Head, evs ...events.Event) events.DecisionBatch {
	t := s.tick()
	s.version++
	for i := range evs {
		evs[i].Time = t
	}
	head.Version, head.Cursor = s.version, s.cursor
	return events.DecisionBatch{Sale: s.id, Writer: "w1", DecidedAt: t, Head: head, Events: evs}
}

// pub publishes messages of one sale to the stream.
type pub struct {
	t  *testing.T
	js jetstream.JetStream
}

func (p pub) raw(subject string, data []byte) uint64 {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := p.js.Publish(ctx, subject, data)
	if err != nil {
		p.t.Fatal(err)
	}
	return ack.Sequence
}

func (p pub) sale(e events.Event) uint64 {
	p.t.Helper()
	b, err := events.EncodeEvent(e)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.raw(events.SaleSubject(e.Sale), b)
}

func (p pub) requests(s *sale, evs ...events.Event) uint64 {
	p.t.Helper()
	b, err := events.EncodeRequests(events.RequestBatch{Requests: evs})
	if err != nil {
		p.t.Fatal(err)
	}
	seq := p.raw(events.RequestSubject(s.id), b)
	s.cursor = seq
	return seq
}

func (p pub) decisions(db events.DecisionBatch) uint64 {
	p.t.Helper()
	b, err := events.EncodeDecisions(db)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.raw(events.DecisionSubject(db.Sale), b)
}

// order publishes an order event on its order's subject.
func (p pub) order(e events.Event) uint64 {
	p.t.Helper()
	b, err := events.EncodeEvent(e)
	if err != nil {
		p.t.Fatal(err)
	}
	return p.raw(events.OrderSubject(e.Sale, e.Request), b)
}

// count runs a COUNT query.
func count(tb testing.TB, db *sql.DB, query string, args ...any) int {
	tb.Helper()
	var n int
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

// anomalies lists the anomalies table.
func anomalies(tb testing.TB, s *Store) []string {
	tb.Helper()
	rows, err := s.DB().Query(`SELECT seq, sale, what FROM anomalies ORDER BY rowid`)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var seq int64
		var sale, what string
		if err := rows.Scan(&seq, &sale, &what); err != nil {
			tb.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d %s: %s", seq, sale, what))
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

// dump renders every view table, for comparing two stores.
func dump(tb testing.TB, s *Store) string {
	tb.Helper()
	var b strings.Builder
	for _, q := range []string{
		`SELECT * FROM meta ORDER BY key`,
		`SELECT * FROM sales ORDER BY id`,
		`SELECT * FROM requests ORDER BY id`,
		`SELECT * FROM batches ORDER BY sale, version`,
		`SELECT * FROM decisions ORDER BY id`,
		`SELECT * FROM tokens ORDER BY id`,
		`SELECT * FROM orders ORDER BY id`,
		`SELECT * FROM audit_trail ORDER BY seq, idx`,
		`SELECT * FROM anomalies ORDER BY rowid`,
	} {
		rows, err := s.DB().Query(q)
		if err != nil {
			tb.Fatal(err)
		}
		cols, _ := rows.Columns()
		fmt.Fprintf(&b, "%s\n", q)
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				tb.Fatal(err)
			}
			fmt.Fprintf(&b, "%v\n", vals)
		}
		if err := rows.Err(); err != nil {
			tb.Fatal(err)
		}
		rows.Close()
	}
	return b.String()
}

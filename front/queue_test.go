package front

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/handlers"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/queue"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

var qt0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func TestETA(t *testing.T) {
	for _, c := range []struct {
		ahead            int
		observed, config float64
		want             int
	}{
		{ahead: -1, observed: 10, config: 10, want: -1}, // not drawn yet
		{ahead: 0, observed: 10, config: 10, want: 0},
		{ahead: 100, observed: 10, config: 50, want: 10}, // the observed rate wins
		{ahead: 100, observed: 0, config: 50, want: 2},   // none observed: the configured rate
		{ahead: 101, observed: 10, config: 50, want: 11}, // rounded up
		{ahead: 5, observed: 0.5, config: 50, want: 10},
	} {
		if got := eta(c.ahead, c.observed, c.config); got != c.want {
			t.Errorf("eta(%d, %v, %v) = %d, want %d", c.ahead, c.observed, c.config, got, c.want)
		}
	}
}

// TestAdmissionRate: the rate is admissions per second over the last 30 s
// of batch times; the opening burst is not counted while the queue is
// younger than the window; it is unknown at first and after a long pause,
// when the estimate takes the long-run rate.
func TestAdmissionRate(t *testing.T) {
	var a admissions
	if r := a.perSecond(qt0); r != 0 {
		t.Fatalf("rate before any admission: %v", r)
	}
	a.add(qt0, 10) // the writer's full allowance at the opening
	if r := a.perSecond(qt0.Add(500 * time.Millisecond)); r != 0 {
		t.Fatalf("rate half a second after the first batch: %v, want unknown", r)
	}
	at := qt0
	for range 50 { // 10 a second for 5 s
		at = at.Add(100 * time.Millisecond)
		a.add(at, 1)
	}
	if r := a.perSecond(at); r < 9.9 || r > 10.1 {
		t.Fatalf("rate after 5 s at 10/s: %v", r)
	}
	for range 400 { // 40 s more at 2 a second
		at = at.Add(500 * time.Millisecond)
		a.add(at, 1)
	}
	if r := a.perSecond(at); r < 1.9 || r > 2.1 {
		t.Fatalf("rate after 40 s at 2/s: %v", r)
	}
	if len(a.recent) > 61 {
		t.Errorf("%d batches kept; the window holds at most 61", len(a.recent))
	}
	if r := a.perSecond(at.Add(15 * time.Second)); r < 0.9 || r > 1.1 {
		t.Errorf("rate 15 s after admissions stopped: %v, want about half", r)
	}
	if r := a.perSecond(at.Add(31 * time.Second)); r != 0 {
		t.Errorf("rate 31 s after admissions stopped: %v, want unknown", r)
	}
	// The estimate then falls back on the long run: 460 admissions over
	// the 236 s since the first.
	if r := a.estimate(at.Add(31 * time.Second)); r < 1.94 || r > 1.96 {
		t.Errorf("estimate 31 s after admissions stopped: %v, want the long-run 460/236", r)
	}
	var young admissions
	young.add(qt0, 10)
	if r := young.estimate(qt0.Add(10 * time.Second)); r != 0 {
		t.Errorf("estimate 10 s after the opening burst alone: %v, want unknown (the configured rate)", r)
	}
	if r := young.estimate(qt0.Add(40 * time.Second)); r != 0.25 {
		t.Errorf("estimate 40 s after the opening burst alone: %v, want 10/40", r)
	}
}

// TestPingsAtMostEveryQuarter: a shopper polling every 100 ms is pinged at
// once, then once per idle timeout / 4, never more often.
func TestPingsAtMostEveryQuarter(t *testing.T) {
	idle := time.Minute
	p := newPings(idle / 4)
	all := func(string) bool { return true }
	var pinged []time.Time
	now := qt0.Add(300 * time.Millisecond)
	for tick := 0; tick < 5*60*10; tick++ { // 5 minutes in steps of 100 ms
		now = now.Add(100 * time.Millisecond)
		p.note("t1", now)
		if tick%10 == 0 { // a round a second
			if due := p.round(now, all); len(due) > 0 {
				pinged = append(pinged, now)
			}
		}
	}
	if len(pinged) < 5*4 || len(pinged) > 5*4+1 {
		t.Fatalf("%d pings in 5 minutes with a 1 m idle timeout, want 20 or 21: %v", len(pinged), pinged)
	}
	for i := 1; i < len(pinged); i++ {
		if gap := pinged[i].Sub(pinged[i-1]); gap < idle/4 || gap > idle/4+time.Second {
			t.Errorf("ping %d came %v after the one before, want %v to %v", i, gap, idle/4, idle/4+time.Second)
		}
	}
}

// TestPingsBounded: tickets not seen again are forgotten after a quarter of
// the idle timeout, tickets no longer active at once; a ticket seen once is
// pinged once.
func TestPingsBounded(t *testing.T) {
	p := newPings(15 * time.Second)
	gone := map[string]bool{}
	active := func(id string) bool { return !gone[id] }
	now := qt0
	for i := range 10000 {
		id := fmt.Sprint("t", i)
		p.note(id, now)
		if i%2 == 0 {
			gone[id] = true // admitted and claimed, left, ...
		}
	}
	now = now.Add(time.Second)
	due := p.round(now, active)
	if len(due) != 5000 {
		t.Fatalf("%d due, want the 5000 active", len(due))
	}
	if n := p.size(); n != 5000 {
		t.Fatalf("%d tickets kept, want the 5000 pinged", n)
	}
	for s := 0; s < 20; s++ { // nobody seen again
		now = now.Add(time.Second)
		if due := p.round(now, active); len(due) != 0 {
			t.Fatalf("%d pinged again without being seen", len(due))
		}
	}
	if n := p.size(); n != 0 {
		t.Fatalf("%d tickets kept 20 s after they were last seen, want none", n)
	}
	if len(p.slots) != 0 || len(p.fresh) != 0 {
		t.Fatalf("slots %d, fresh %d left", len(p.slots), len(p.fresh))
	}
	// A long pause between rounds (a stalled process) still sends what is due.
	p.note("late", now)
	p.round(now, active)
	p.note("late", now.Add(time.Second))
	if due := p.round(now.Add(10*time.Minute), active); len(due) != 1 {
		t.Fatalf("after a pause: due %v, want [late]", due)
	}
}

// roomFront is a front with no stream, for folding batches by hand.
func roomFront(t *testing.T, sale handlers.Sale, now func() time.Time) *Front {
	t.Helper()
	f := New(nil, nil, Config{Now: now, Log: quiet})
	f.sales[sale.ID] = &SaleView{Sale: sale}
	f.rooms[sale.ID] = newRoomView(sale.ID, *sale.Queue)
	return f
}

// TestFoldQueue: the front's room follows the writer's decisions: tickets,
// positions, the waiting count equal to the writer's, the change signal
// (not for joins), a refused leave that changes nothing, and a batch seen
// twice folded once.
func TestFoldQueue(t *testing.T) {
	q := events.Queue{AdmissionRate: 2, ClaimWindow: events.Duration(time.Minute), IdleTimeout: events.Duration(time.Minute),
		PreQueueOpensAt: qt0.Add(-time.Hour)}
	opens := qt0.Add(time.Minute)
	sale := handlers.Sale{ID: "q", Stock: 3, QuotaBuffer: 1, Quota: 3, PerUserLimit: 1, TokenTTL: 5 * time.Minute, OpensAt: opens, Queue: &q}
	st := handlers.NewState(sale)
	st.SetSeed(func() uint64 { return 42 })
	now := qt0
	f := roomFront(t, sale, func() time.Time { return now })
	var version uint64
	seq := 0
	decide := func(reqs ...events.Event) events.DecisionBatch {
		out := st.Decide(now, reqs)
		version++
		st.Head.Version = version
		db := events.DecisionBatch{Sale: "q", DecidedAt: now, Head: st.Head, Events: out}
		f.foldQueue(&db)
		return db
	}
	req := func(typ events.Type, shopper string, data any) events.Event {
		seq++
		return events.Event{ID: events.DerivedID(now, fmt.Sprint("r", seq)), Type: typ, Version: events.SchemaVersion, Sale: "q",
			Time: now, Shopper: shopper, Data: data}
	}
	join := func(shopper string) events.Event {
		return req(events.TypeQueueJoinRequested, shopper, &events.QueueJoinRequested{})
	}
	var tickets []string
	changed := f.QueueChanged("q")
	for i := range 6 {
		r := join(fmt.Sprint("s", i))
		decide(r)
		tickets = append(tickets, r.ID)
	}
	select {
	case <-changed:
		t.Fatal("joins signalled a change: they move nobody's place")
	default:
	}
	v, ok := f.QueueTicket("q", tickets[0])
	if !ok || v.Status != queue.Waiting || v.Ahead != -1 || v.ETASeconds != -1 || v.Place != -1 {
		t.Fatalf("pre-queue ticket: %+v, %v", v, ok)
	}
	if w, _, _ := f.QueueStats("q"); w != 6 {
		t.Fatalf("waiting %d, want 6", w)
	}
	// Another shopper's leave changes nothing (the writer records not_waiting).
	changed = f.QueueChanged("q")
	decide(req(events.TypeQueueLeaveRequested, "mallory", &events.QueueLeaveRequested{Ticket: tickets[1]}))
	if v, _ := f.QueueTicket("q", tickets[1]); v.Status != queue.Waiting {
		t.Fatalf("a refused leave took the ticket out: %+v", v)
	}
	select {
	case <-changed:
		t.Fatal("a refused leave signalled a change")
	default:
	}
	// The shopper's own leave.
	decide(req(events.TypeQueueLeaveRequested, "s1", &events.QueueLeaveRequested{Ticket: tickets[1]}))
	if v, _ := f.QueueTicket("q", tickets[1]); v.Status != queue.Left || v.Reason != events.LeftByShopper {
		t.Fatalf("after leaving: %+v", v)
	}
	// The opening: the pre-queue is drawn, two are admitted (the allowance).
	now = opens
	db := decide()
	if got := f.roomOf("q").room.Waiting(); got != st.Room().Waiting() {
		t.Fatalf("front counts %d waiting, the writer's room %d", got, st.Room().Waiting())
	}
	w, admitted, _ := f.QueueStats("q")
	if admitted != 2 || w != 3 {
		t.Fatalf("after opening: waiting %d admitted %d, want 3 and 2", w, admitted)
	}
	aheads := map[int]bool{}
	for i, id := range tickets {
		v, _ := f.QueueTicket("q", id)
		want, _ := st.Room().Ticket(id)
		if v.Status != st.Room().StatusOf(want) || v.Place != want.Place {
			t.Errorf("ticket %d: front %+v, writer %+v", i, v, want)
		}
		switch v.Status {
		case queue.Waiting:
			aheads[v.Ahead] = true
			if v.ETASeconds != eta(v.Ahead, 0, q.AdmissionRate) {
				t.Errorf("ticket %d: eta %d with %d ahead at the configured rate 2/s", i, v.ETASeconds, v.Ahead)
			}
		case queue.Admitted:
			if v.TokenID != id || v.TokenExpiresAt.IsZero() || v.ClaimBy.IsZero() || v.Ahead != -1 {
				t.Errorf("admitted ticket %d: %+v", i, v)
			}
		}
	}
	if len(aheads) != 3 || !aheads[0] || !aheads[1] || !aheads[2] {
		t.Errorf("positions of the waiting: %v, want 0, 1, 2", aheads)
	}
	// The same batch again (the consumer after the replay at start): folded once.
	f.foldQueue(&db)
	if _, admitted, _ := f.QueueStats("q"); admitted != 2 {
		t.Fatalf("a batch folded twice: %d admitted", admitted)
	}
	if v, _ := f.Sale("q"); v.QueueWaiting != 3 || v.QueueAdmitted != 2 {
		t.Errorf("sale view figures: waiting %d admitted %d", v.QueueWaiting, v.QueueAdmitted)
	}
}

// driver decides requests with a writer's State and folds the batches into
// a front's room by hand, as the front's consumer would.
type driver struct {
	t       *testing.T
	f       *Front
	st      *handlers.State
	sale    string
	now     time.Time
	version uint64
	seq     int
}

// newDriver is a front (no stream unless f is given) and a writer for a
// queue sale opening at opens.
func newDriver(t *testing.T, f *Front, sale handlers.Sale) *driver {
	t.Helper()
	d := &driver{t: t, sale: sale.ID, now: qt0}
	if f == nil {
		f = roomFront(t, sale, func() time.Time { return d.now })
	}
	d.f = f
	d.st = handlers.NewState(sale)
	d.st.SetSeed(func() uint64 { return 7 })
	return d
}

func (d *driver) decide(reqs ...events.Event) events.DecisionBatch {
	out := d.st.Decide(d.now, reqs)
	d.version++
	d.st.Head.Version = d.version
	db := events.DecisionBatch{Sale: d.sale, DecidedAt: d.now, Head: d.st.Head, Events: out}
	d.f.foldQueue(&db)
	return db
}

func (d *driver) req(typ events.Type, shopper string, data any) events.Event {
	d.seq++
	return events.Event{ID: events.DerivedID(d.now, fmt.Sprint("r", d.seq)), Type: typ, Version: events.SchemaVersion, Sale: d.sale,
		Time: d.now, Shopper: shopper, Data: data}
}

func (d *driver) join(shopper string) string {
	r := d.req(events.TypeQueueJoinRequested, shopper, &events.QueueJoinRequested{})
	d.decide(r)
	return r.ID
}

func (d *driver) ticket(id string) QueueView {
	d.t.Helper()
	v, ok := d.f.QueueTicket(d.sale, id)
	if !ok {
		d.t.Fatalf("ticket %s unknown to the front", id)
	}
	return v
}

func openQueueSale(id string, stock int64, rate float64) handlers.Sale {
	q := events.Queue{AdmissionRate: rate, ClaimWindow: events.Duration(time.Minute), IdleTimeout: events.Duration(time.Hour)}
	return handlers.Sale{ID: id, Stock: stock, QuotaBuffer: 1, Quota: stock, PerUserLimit: 1, TokenTTL: 5 * time.Minute, OpensAt: qt0, Queue: &q}
}

// TestFoldQueueReopens: closing a queue sale ends its queue on the front
// (the waiting read closed, none counted waiting); reopening it brings the
// waiting back in line, on the front as in the writer, and signals it.
func TestFoldQueueReopens(t *testing.T) {
	d := newDriver(t, nil, openQueueSale("q", 5, 0.01))
	first := d.join("a") // admitted at once (one admission, then one per 100 s)
	waiting := d.join("b")
	if v := d.ticket(first); v.Status != queue.Admitted {
		t.Fatalf("first joiner: %+v", v)
	}
	update := func(action string) {
		d.now = d.now.Add(time.Second)
		d.decide(d.req(events.TypeSaleUpdateRequested, "operator", &events.SaleUpdateRequested{Action: action}))
	}
	update(events.ActionClose)
	if v := d.ticket(waiting); v.Status != queue.Closed {
		t.Fatalf("after closing: %+v, want closed", v)
	}
	if w, _, _ := d.f.QueueStats("q"); w != 0 {
		t.Errorf("after closing: %d counted waiting, want 0", w)
	}
	time.Sleep(SignalEvery) // the close's signal is not held back
	changed := d.f.QueueChanged("q")
	update(events.ActionOpen)
	if d.st.Room().Closed() != "" {
		t.Fatal("the writer's queue did not reopen: the test tests nothing")
	}
	if v := d.ticket(waiting); v.Status != queue.Waiting || v.Ahead != 0 {
		t.Fatalf("after reopening: %+v, want waiting with none ahead", v)
	}
	if w, _, _ := d.f.QueueStats("q"); w != 1 {
		t.Errorf("after reopening: %d counted waiting, want 1", w)
	}
	select {
	case <-changed:
	case <-time.After(time.Second):
		t.Error("reopening did not signal a change")
	}
	if v := d.ticket(d.join("c")); v.Status != queue.Waiting || v.Ahead != 1 {
		t.Errorf("a join after reopening: %+v, want waiting behind b", v)
	}
	if v, _ := d.f.Sale("q"); v.QueueWaiting != 2 {
		t.Errorf("the sale view counts %d waiting, want 2", v.QueueWaiting)
	}
}

// TestQueueChangedCoalesced: joins and signs of life wake no stream; the
// changes of a busy room are signalled at most every SignalEvery, none
// lost.
func TestQueueChangedCoalesced(t *testing.T) {
	d := newDriver(t, nil, openQueueSale("q", 1000, 1000))
	d.join("warm") // the first admission (and its signal)
	time.Sleep(SignalEvery)
	changed := d.f.QueueChanged("q")
	d.st.Sale.Stock = 0 // (the writer's state is not the front's business: no admission follows)
	var joined []string
	d.now = d.now.Add(time.Second)
	for i := range 5 {
		r := d.req(events.TypeQueueJoinRequested, fmt.Sprint("s", i), &events.QueueJoinRequested{})
		joined = append(joined, r.ID)
		d.f.foldQueue(&events.DecisionBatch{Sale: "q", DecidedAt: d.now, Head: events.Head{Version: d.version + 1},
			Events: []events.Event{{ID: r.ID, Type: events.TypeQueueJoined, Sale: "q", Shopper: r.Shopper, Request: r.ID,
				Data: &events.QueueJoined{Ticket: r.ID, Place: int64(d.f.roomOf("q").room.Len())}}}})
		d.version++
	}
	seen := events.Event{Type: events.TypeQueueSeen, Sale: "q", Data: &events.QueueSeen{Tickets: joined}}
	d.f.foldQueue(&events.DecisionBatch{Sale: "q", DecidedAt: d.now, Head: events.Head{Version: d.version + 1}, Events: []events.Event{seen}})
	d.version++
	if v := d.ticket(joined[4]); v.Status != queue.Waiting || v.Ahead != 4 {
		t.Fatalf("the last joiner: %+v", v)
	}
	select {
	case <-changed:
		t.Fatal("joins or a sign of life signalled a change")
	default:
	}
	// Two leaves within SignalEvery: the first signals at once, the second
	// when SignalEvery has passed.
	leave := func(i int) {
		d.f.foldQueue(&events.DecisionBatch{Sale: "q", DecidedAt: d.now, Head: events.Head{Version: d.version + 1},
			Events: []events.Event{{Type: events.TypeQueueLeft, Sale: "q", Shopper: fmt.Sprint("s", i),
				Data: &events.QueueLeft{Ticket: joined[i], Reason: events.LeftByShopper}}}})
		d.version++
	}
	leave(0)
	select {
	case <-changed:
	default:
		t.Fatal("a leave after a quiet time was not signalled at once")
	}
	at := time.Now()
	changed = d.f.QueueChanged("q")
	leave(1)
	select {
	case <-changed:
		if took := time.Since(at); took < SignalEvery/2 {
			t.Errorf("the second change was signalled %v after the first, want about %v", took, SignalEvery)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a change held back was never signalled")
	}
	if v := d.ticket(joined[4]); v.Ahead != 2 {
		t.Errorf("after two left: %+v, want 2 ahead", v)
	}
}

// TestETAObservedRate: the estimate uses the rate observed over the last
// 30 s; when admissions stalled for longer, the long-run observed rate, not
// the configured one; the rate is brought up to date by every batch.
func TestETAObservedRate(t *testing.T) {
	sale := openQueueSale("q", 1000, 1) // one a second
	sale.Quota = 21                     // then the quota is out: admissions stall
	sale.Queue.ClaimWindow = events.Duration(5 * time.Minute)
	d := newDriver(t, nil, sale)
	var tickets []string
	for i := range 60 {
		tickets = append(tickets, d.join(fmt.Sprint("s", i)))
	}
	last := tickets[59]
	if v := d.ticket(last); v.Ahead != 58 || v.ETASeconds != 58 {
		t.Fatalf("before any admission but the opening's: %+v, want 58 ahead, the configured rate's 58 s", v)
	}
	for range 20 {
		d.now = d.now.Add(time.Second)
		d.decide()
	}
	if v := d.ticket(last); v.Ahead != 38 || v.ETASeconds != 38 {
		t.Fatalf("after 20 s at 1/s: %+v, want 38 ahead, eta 38 s", v)
	}
	// Nothing for 40 s (the quota is out): the window is empty; the
	// long-run rate is 21 admissions over 60 s.
	d.now = qt0.Add(time.Minute)
	d.decide()
	if _, admitted, r := d.f.QueueStats("q"); admitted != 21 || r < 0.34 || r > 0.36 {
		t.Errorf("40 s after the last admission: %d admitted, rate %v; want 21 and the long-run 21/60", admitted, r)
	}
	if v := d.ticket(last); v.ETASeconds != 109 { // ceil(38 / 0.35)
		t.Errorf("40 s after the last admission: eta %d s, want 109 (the long-run rate), not 38 (the configured)", v.ETASeconds)
	}
}

// fakeMsg is a decision batch as the front's consumer hands it over.
type fakeMsg struct {
	jetstream.Msg
	subject string
	data    []byte
	seq     uint64 // the stream sequence
}

func (m fakeMsg) Subject() string { return m.subject }
func (m fakeMsg) Data() []byte    { return m.data }
func (m fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq}}, nil
}

// TestAdmissionKeepsJoinAnswer: an admission names the join it answers,
// but the join's request keeps the join's answer: GET /requests/{join}
// never shows the admission's token (it is handed over with the ticket,
// and claimed), even when the join's own answer was forgotten.
func TestAdmissionKeepsJoinAnswer(t *testing.T) {
	sale := openQueueSale("q", 5, 0.5) // one at once, then one every 2 s
	now := qt0
	f := New(nil, nil, Config{Now: func() time.Time { return now }, Log: quiet, RecentDecisions: 1})
	f.sales[sale.ID] = &SaleView{Sale: sale}
	f.rooms[sale.ID] = newRoomView(sale.ID, *sale.Queue)
	d := newDriver(t, f, sale)
	deliver := func(reqs ...events.Event) {
		out := d.st.Decide(d.now, reqs)
		d.version++
		d.st.Head.Version = d.version
		b, err := events.EncodeDecisions(events.DecisionBatch{Sale: "q", DecidedAt: d.now, Head: d.st.Head, Events: out})
		if err != nil {
			t.Fatal(err)
		}
		f.handle(fakeMsg{subject: events.DecisionSubject("q"), data: b, seq: d.version})
	}
	deliver(d.req(events.TypeQueueJoinRequested, "first", &events.QueueJoinRequested{})) // let in at once
	a := d.req(events.TypeQueueJoinRequested, "a", &events.QueueJoinRequested{})
	deliver(a)
	if e, ok := f.Recent(a.ID); !ok || e.Type != events.TypeQueueJoined {
		t.Fatalf("the join's answer: %v %v", e.Type, ok)
	}
	deliver(d.req(events.TypeQueueJoinRequested, "b", &events.QueueJoinRequested{})) // a's answer is forgotten (one decision kept)
	d.now = d.now.Add(2 * time.Second)
	deliver() // a's turn
	if v, _ := f.QueueTicket("q", a.ID); v.Status != queue.Admitted {
		t.Fatalf("a: %+v, want admitted", v)
	}
	if e, ok := f.Recent(a.ID); ok && e.Type != events.TypeQueueJoined {
		t.Errorf("GET /requests/{a's join} would answer %s, want the join (or the stored answer)", e.Type)
	}
}

// queueFixture is a front on a real stream (no writer) with an open queue
// sale "q" whose room the driver folds by hand; the front's clock is the
// driver's.
func queueFixture(t *testing.T, cfg Config) (*fixture, *driver) {
	t.Helper()
	var d *driver
	cfg.Now = func() time.Time { return d.now }
	fx := newFixture(t, cfg)
	sale := openQueueSale("q", 5, 1)
	ev := events.Event{ID: events.NewIDs().New(time.Now()), Type: events.TypeSaleCreated, Version: events.SchemaVersion, Sale: "q", Time: qt0,
		Data: &events.SaleCreated{Stock: sale.Stock, QuotaBuffer: 1, Quota: sale.Quota, PerUserLimit: 1, TokenTTL: events.Duration(sale.TokenTTL),
			OpensAt: sale.OpensAt, Queue: sale.Queue}}
	if err := fx.f.CreateSale(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	d = newDriver(t, fx.f, sale)
	return fx, d
}

// claimsSent counts the claim requests appended for sale q.
func claimsSent(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(events.RequestSubject("q")))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return 0
	}
	err = stream.Read(ctx, st, events.RequestSubject("q"), 1, info.State.LastSeq, func(m *jetstream.RawStreamMsg) error {
		rb, err := events.DecodeRequests(m.Data)
		if err != nil {
			return err
		}
		for _, r := range rb.Requests {
			if r.Type == events.TypeQueueClaimRequested {
				n++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestQueueClaimResent: a claim the writer did not answer with QueueClaimed
// within ClaimRetry is sent again at the next hand-over, not before; a
// claimed ticket is not claimed again.
func TestQueueClaimResent(t *testing.T) {
	fx, d := queueFixture(t, Config{})
	ticket := d.join("a") // admitted at once
	if v := d.ticket(ticket); v.Status != queue.Admitted {
		t.Fatalf("ticket %+v, want admitted", v)
	}
	want := func(n int) {
		t.Helper()
		fgtest.WaitFor(t, 5*time.Second, func() error {
			if got := claimsSent(t, fx.js); got != n {
				return fmt.Errorf("%d claims sent, want %d", got, n)
			}
			return nil
		})
		time.Sleep(100 * time.Millisecond) // and no more
		if got := claimsSent(t, fx.js); got != n {
			t.Fatalf("%d claims sent, want %d", got, n)
		}
	}
	claim := func() {
		t.Helper()
		if err := fx.f.QueueClaim("q", ticket); err != nil {
			t.Fatal(err)
		}
	}
	claim()
	want(1)
	d.now = d.now.Add(time.Second)
	claim() // a reload a second later: the claim is on its way
	want(1)
	d.now = d.now.Add(ClaimRetry)
	claim() // no QueueClaimed came back: lost, or the writer never saw it
	want(2)
	d.decide(d.req(events.TypeQueueClaimRequested, "a", &events.QueueClaimRequested{Ticket: ticket}))
	if v := d.ticket(ticket); v.Status != queue.Claimed {
		t.Fatalf("after the writer's claim: %+v", v)
	}
	d.now = d.now.Add(time.Minute)
	claim()
	want(2)
}

// TestQueueClaimAppendFailed: a claim whose append failed is forgotten, so
// the next hand-over sends it again at once.
func TestQueueClaimAppendFailed(t *testing.T) {
	fx, d := queueFixture(t, Config{AppendTimeout: 200 * time.Millisecond})
	ticket := d.join("a")
	fx.ns.Shutdown()
	if err := fx.f.QueueClaim("q", ticket); err != nil {
		return // refused at once: nothing was recorded as sent
	}
	rv := fx.f.roomOf("q")
	fgtest.WaitFor(t, 5*time.Second, func() error {
		rv.mu.RLock()
		defer rv.mu.RUnlock()
		if _, sent := rv.claims[ticket]; sent {
			return fmt.Errorf("the failed claim still counts as sent")
		}
		return nil
	})
}

// TestRecentKeepsOrders: an accepted purchase stays findable by its order
// id after many other decisions pushed it out of the recent decisions, so a
// shopper finds a new order while the views lag behind a flood.
func TestRecentKeepsOrders(t *testing.T) {
	f := New(nil, nil, Config{Log: quiet, RecentDecisions: 2, RecentOrders: 2})
	version := uint64(0)
	deliver := func(evs ...events.Event) {
		version++
		b, err := events.EncodeDecisions(events.DecisionBatch{Sale: "s", DecidedAt: qt0, Head: events.Head{Version: version}, Events: evs})
		if err != nil {
			t.Fatal(err)
		}
		f.handle(fakeMsg{subject: events.DecisionSubject("s"), data: b, seq: version})
	}
	decision := func(typ events.Type, request string, data any) events.Event {
		return events.Event{ID: events.DerivedID(qt0, "d"+request), Type: typ, Version: events.SchemaVersion, Sale: "s",
			Time: qt0, Shopper: "shopper-" + request, Request: request, Data: data}
	}
	deliver(decision(events.TypePurchaseAccepted, "order1", &events.PurchaseAccepted{TokenID: "t1", OrderID: "order1", Units: 1}))
	for i := range 5 {
		r := fmt.Sprint("token", i)
		deliver(decision(events.TypeTokenIssued, r, &events.TokenIssued{TokenID: "t" + r, ExpiresAt: qt0.Add(time.Minute)}))
	}
	if _, ok := f.Recent("token0"); ok {
		t.Errorf("token0's decision kept beyond RecentDecisions (2)")
	}
	if e, ok := f.Recent("order1"); !ok || e.Type != events.TypePurchaseAccepted {
		t.Fatalf("order1: %v %v, want its PurchaseAccepted", e.Type, ok)
	}
	for i := 2; i <= 3; i++ {
		r := fmt.Sprint("order", i)
		deliver(decision(events.TypePurchaseAccepted, r, &events.PurchaseAccepted{TokenID: "t" + r, OrderID: r, Units: 1}))
	}
	if _, ok := f.Recent("order1"); ok {
		t.Errorf("order1 kept beyond RecentOrders (2)")
	}
}

package front

import (
	"fmt"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/handlers"
	"github.com/flashgate/flashgate/queue"
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
// younger than the window; it is unknown at first and after a long pause.
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
// positions, the waiting count (kept per event) equal to the room's, the
// change signal, a refused leave that changes nothing, and a batch seen
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
	default:
		t.Fatal("joins did not signal a change")
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
	if got := f.roomOf("q").waiting; got != st.Room().Waiting() {
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

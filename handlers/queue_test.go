package handlers_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/handlers"
	"github.com/flashgate/flashgate/queue"
)

var qt0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func queueSale(stock int64, opens time.Time, q events.Queue) handlers.Sale {
	return handlers.Sale{ID: "q", Stock: stock, QuotaBuffer: 1.2, Quota: handlers.Quota(stock, 1.2), PerUserLimit: 1,
		TokenTTL: 5 * time.Minute, OpensAt: opens, Queue: &q}
}

// sim drives a queue sale's State batch by batch, as the writer does, and
// keeps every batch so that a rebuild and a re-run can be checked.
type sim struct {
	t       *testing.T
	s       *handlers.State
	now     time.Time
	n       int
	batches []events.DecisionBatch
	reqs    [][]events.Event
	seq     int
}

func newSim(t *testing.T, sale handlers.Sale, now time.Time) *sim {
	s := handlers.NewState(sale)
	s.SetSeed(func() uint64 { return 0x5eed })
	return &sim{t: t, s: s, now: now}
}

func (m *sim) req(typ events.Type, shopper string, data any) events.Event {
	m.seq++
	return events.Event{ID: events.DerivedID(m.now, fmt.Sprint("req:", m.seq)), Type: typ, Version: events.SchemaVersion, Sale: "q", Time: m.now, Shopper: shopper, Data: data}
}

// batch decides reqs at the current time and records the batch.
func (m *sim) batch(reqs ...events.Event) []events.Event {
	m.t.Helper()
	out := m.s.Decide(m.now, reqs)
	m.n++
	h := m.s.Head
	h.Version = uint64(m.n)
	m.s.Head = h
	m.batches = append(m.batches, events.DecisionBatch{Sale: "q", DecidedAt: m.now, Head: h, Events: out})
	m.reqs = append(m.reqs, reqs)
	return out
}

func of[T any](out []events.Event) []*T {
	var r []*T
	for _, e := range out {
		if d, ok := e.Data.(*T); ok {
			r = append(r, d)
		}
	}
	return r
}

func (m *sim) join(shoppers ...string) []*events.QueueJoined {
	m.t.Helper()
	var reqs []events.Event
	for _, sh := range shoppers {
		reqs = append(reqs, m.req(events.TypeQueueJoinRequested, sh, &events.QueueJoinRequested{}))
	}
	return of[events.QueueJoined](m.batch(reqs...))
}

// rebuild folds the recorded batches into a fresh state, as a new writer
// does after a takeover, and checks it matches.
func (m *sim) rebuild(sale handlers.Sale) *handlers.State {
	m.t.Helper()
	r := handlers.NewState(sale)
	for _, db := range m.batches {
		if err := r.Apply(db); err != nil {
			m.t.Fatalf("rebuild: %v", err)
		}
	}
	if r.Head != m.s.Head {
		m.t.Fatalf("rebuilt head %+v, live %+v", r.Head, m.s.Head)
	}
	a, b := r.Room(), m.s.Room()
	if a.Waiting() != b.Waiting() || a.Admitted() != b.Admitted() || a.Len() != b.Len() || a.Closed() != b.Closed() {
		m.t.Fatalf("rebuilt room: waiting %d admitted %d len %d closed %q; live %d %d %d %q",
			a.Waiting(), a.Admitted(), a.Len(), a.Closed(), b.Waiting(), b.Admitted(), b.Len(), b.Closed())
	}
	return r
}

// TestQueueOrder: 5,000 shoppers join after opening; admissions happen
// exactly in join order, at most at the admission rate.
func TestQueueOrder(t *testing.T) {
	sale := queueSale(5000, qt0, events.Queue{AdmissionRate: 1000, ClaimWindow: events.Duration(2 * time.Minute), IdleTimeout: events.Duration(time.Minute)})
	m := newSim(t, sale, qt0)
	var shoppers []string
	for i := range 5000 {
		shoppers = append(shoppers, fmt.Sprintf("s%05d", i))
	}
	var reqs []events.Event
	for _, sh := range shoppers {
		reqs = append(reqs, m.req(events.TypeQueueJoinRequested, sh, &events.QueueJoinRequested{}))
	}
	first := m.batch(reqs...)
	joined := of[events.QueueJoined](first)
	if len(joined) != 5000 {
		t.Fatalf("%d joined", len(joined))
	}
	var order []string
	admittedAt := map[string]time.Time{}
	for _, a := range of[events.QueueAdmitted](first) { // the burst, in the joins' batch
		order = append(order, a.Ticket)
		admittedAt[a.Ticket] = m.now
	}
	for step := 0; step < 1000 && len(order) < 5000; step++ {
		m.now = m.now.Add(100 * time.Millisecond)
		out := m.batch()
		for _, a := range of[events.QueueAdmitted](out) {
			order = append(order, a.Ticket)
			admittedAt[a.Ticket] = m.now
		}
		for _, l := range of[events.QueueLeft](out) {
			t.Fatalf("step %d: %+v left", step, l)
		}
	}
	if len(order) != 5000 {
		t.Fatalf("%d admitted", len(order))
	}
	for i, j := range joined {
		if order[i] != j.Ticket {
			t.Fatalf("admission %d is ticket %s, join %d was %s", i, order[i], i, j.Ticket)
		}
	}
	// The rate: 5,000 at 1,000/s with a burst of 1,000 take at least 4 s.
	if took := admittedAt[order[len(order)-1]].Sub(admittedAt[order[0]]); took < 3900*time.Millisecond {
		t.Fatalf("5,000 admissions at 1,000/s took %v", took)
	}
	m.rebuild(sale)
}

// TestPreQueueShuffle: shoppers who join before the opening are put in the
// order drawn from the seed recorded at the opening; later joins follow.
func TestPreQueueShuffle(t *testing.T) {
	opens := qt0.Add(time.Minute)
	sale := queueSale(1000, opens, events.Queue{PreQueueOpensAt: qt0, AdmissionRate: 10000,
		ClaimWindow: events.Duration(2 * time.Minute), IdleTimeout: events.Duration(5 * time.Minute)})
	m := newSim(t, sale, qt0.Add(-time.Second))
	if d := of[events.QueueJoinDenied](m.batch(m.req(events.TypeQueueJoinRequested, "early", &events.QueueJoinRequested{}))); len(d) != 1 || d[0].Reason != events.ReasonNotOpen {
		t.Fatalf("a join before the pre-queue: %+v", d)
	}
	m.now = qt0
	var pre []string
	for i := range 300 {
		pre = append(pre, fmt.Sprintf("p%03d", i))
	}
	joined := m.join(pre...)
	for i, j := range joined {
		if j.Place != -1 || j.PreIndex != int64(i) {
			t.Fatalf("pre-queue join %d: %+v", i, j)
		}
	}
	// Joining again gives the same ticket.
	again := m.join("p007")
	if len(again) != 1 || !again[0].Already || again[0].Ticket != joined[7].Ticket {
		t.Fatalf("joining again: %+v", again)
	}
	m.now = opens
	out := m.batch(m.req(events.TypeQueueJoinRequested, "late", &events.QueueJoinRequested{}))
	sh := of[events.QueueShuffled](out)
	if len(sh) != 1 || sh[0].Seed != 0x5eed || sh[0].PreQueue != 300 {
		t.Fatalf("shuffle: %+v", sh)
	}
	late := of[events.QueueJoined](out)
	if len(late) != 1 || late[0].Place != 300 {
		t.Fatalf("the first join after opening: %+v", late)
	}
	var admitted []*events.QueueAdmitted
	for step := 0; step < 100 && len(admitted) < 301; step++ {
		admitted = append(admitted, of[events.QueueAdmitted](out)...)
		m.now = m.now.Add(10 * time.Millisecond)
		out = m.batch()
	}
	if len(admitted) != 301 {
		t.Fatalf("%d admitted", len(admitted))
	}
	perm := queue.Permutation(queue.SeedOf(0x5eed), 300)
	want := make([]string, 301)
	for i, j := range joined {
		want[perm[i]] = j.Ticket
	}
	want[300] = late[0].Ticket
	got := make([]string, len(admitted))
	for i, a := range admitted {
		got[i] = a.Ticket
		if a.Place != int64(i) {
			t.Fatalf("admission %d at place %d", i, a.Place)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatal("admissions do not follow the permutation of the recorded seed")
	}
	if slices.Equal(got[:300], ticketsOf(joined)) {
		t.Fatal("the pre-queue was admitted in join order: no shuffle")
	}
	m.rebuild(sale)
}

func ticketsOf(js []*events.QueueJoined) []string {
	var out []string
	for _, j := range js {
		out = append(out, j.Ticket)
	}
	return out
}

// TestQueueFlow: stock 100, quota 120, 2,000 queued; a third of the
// admitted never claim their token. Exactly 100 units are sold, every idle
// turn is reclaimed, nobody is admitted twice, and when the stock is gone
// everyone still waiting is told at once.
func TestQueueFlow(t *testing.T) {
	sale := queueSale(100, qt0, events.Queue{AdmissionRate: 50, ClaimWindow: events.Duration(10 * time.Second), IdleTimeout: events.Duration(time.Hour)})
	m := newSim(t, sale, qt0)
	var shoppers []string
	for i := range 2000 {
		shoppers = append(shoppers, fmt.Sprintf("s%04d", i))
	}
	var joins []events.Event
	for _, sh := range shoppers {
		joins = append(joins, m.req(events.TypeQueueJoinRequested, sh, &events.QueueJoinRequested{}))
	}
	out := m.batch(joins...)
	admittedTwice := map[string]bool{}
	sold, unclaimed := 0, 0
	var pending []events.Event // purchases for the next batch
	for step := 0; step < 2000 && m.s.Room().Closed() == ""; step++ {
		if step > 0 {
			m.now = m.now.Add(200 * time.Millisecond)
			out = m.batch(pending...)
			pending = nil
		}
		sold += len(of[events.PurchaseAccepted](out))
		for _, l := range of[events.QueueLeft](out) {
			if l.Reason == events.LeftUnclaimed {
				unclaimed++
			}
		}
		for _, a := range of[events.QueueAdmitted](out) {
			if admittedTwice[a.Ticket] {
				t.Fatalf("ticket %s admitted twice", a.Ticket)
			}
			admittedTwice[a.Ticket] = true
			tk, _ := m.s.Room().Ticket(a.Ticket)
			if a.Place%3 == 2 {
				continue // never claims
			}
			pending = append(pending, m.req(events.TypeQueueClaimRequested, tk.Shopper, &events.QueueClaimRequested{Ticket: a.Ticket}),
				m.req(events.TypePurchaseRequested, tk.Shopper, &events.PurchaseRequested{TokenID: a.TokenID}))
		}
	}
	out = m.batch(pending...)
	sold += len(of[events.PurchaseAccepted](out))
	// After the claim windows, every admission that was never claimed is
	// reclaimed.
	m.now = m.now.Add(11 * time.Second)
	for _, l := range of[events.QueueLeft](m.batch()) {
		if l.Reason == events.LeftUnclaimed {
			unclaimed++
		}
	}
	if sold != 100 || m.s.Head.Redeemed != 100 {
		t.Fatalf("sold %d (head %d), want 100", sold, m.s.Head.Redeemed)
	}
	if m.s.Room().Closed() != events.ReasonSoldOut {
		t.Fatalf("queue closed %q, want sold_out", m.s.Room().Closed())
	}
	if admitted := len(admittedTwice); unclaimed != admitted-sold {
		t.Fatalf("%d of %d admissions reclaimed unclaimed, %d bought: every admission either bought or was reclaimed", unclaimed, admitted, sold)
	}
	// Every unclaimed admission gave its quota back.
	if held := m.s.Head.Issued - m.s.Head.Expired; held > m.s.Head.Quota || m.s.Head.Issued-m.s.Head.Expired-m.s.Head.Redeemed < 0 {
		t.Fatalf("head %+v", m.s.Head)
	}
	// Those still waiting learn it at once.
	if tk, ok := m.s.Room().Active("s1999"); !ok || m.s.Room().StatusOf(tk) != queue.SoldOut {
		t.Fatalf("a ticket waiting when the queue closed: %+v, want sold_out", tk)
	}
	j := of[events.QueueJoinDenied](m.batch(m.req(events.TypeQueueJoinRequested, "newcomer", &events.QueueJoinRequested{})))
	if len(j) != 1 || j[0].Reason != events.ReasonSoldOut {
		t.Fatalf("a join after sold out: %+v", j)
	}
	t.Logf("admitted %d, unclaimed %d, sold %d", len(admittedTwice), unclaimed, sold)
	m.rebuild(sale)
}

// TestQueueIdleAndLeave: a shopper silent past the idle timeout when the
// turn comes loses the place; a shopper seen in time keeps it; a shopper who
// leaves is passed over; a direct token request is refused.
func TestQueueIdleAndLeave(t *testing.T) {
	sale := queueSale(10, qt0, events.Queue{AdmissionRate: 1, ClaimWindow: events.Duration(time.Minute), IdleTimeout: events.Duration(30 * time.Second)})
	m := newSim(t, sale, qt0)
	js := m.join("a", "b", "c", "d")
	// a is admitted at once (burst 1); the rest wait one a second.
	m.now = m.now.Add(40 * time.Second) // b, c, d silent for 40 s...
	seen := m.req(events.TypeQueueSeenRequested, "front", &events.QueueSeenRequested{Tickets: []string{js[2].Ticket, "no-such-ticket"}})
	leave := m.req(events.TypeQueueLeaveRequested, "d", &events.QueueLeaveRequested{Ticket: js[3].Ticket})
	direct := m.req(events.TypeTokenRequested, "x", &events.TokenRequested{})
	out := m.batch(seen, leave, direct)
	if s := of[events.QueueSeen](out); len(s) != 1 || !slices.Equal(s[0].Tickets, []string{js[2].Ticket}) {
		t.Fatalf("seen: %+v", s)
	}
	if d := of[events.TokenDenied](out); len(d) != 1 || d[0].Reason != handlers.ReasonQueueRequired {
		t.Fatalf("a direct token request: %+v", d)
	}
	left := map[string]string{}
	for _, l := range of[events.QueueLeft](out) {
		left[l.Ticket] = l.Reason
	}
	if left[js[1].Ticket] != events.LeftIdle || left[js[3].Ticket] != events.LeftByShopper {
		t.Fatalf("left: %v", left)
	}
	if a := of[events.QueueAdmitted](out); len(a) != 1 || a[0].Ticket != js[2].Ticket {
		t.Fatalf("admitted: %+v (c was seen, b idle, d left)", a)
	}
	m.rebuild(sale)
}

// TestQueueTakeoverContinuesTheSame: a writer rebuilt from the batches at
// any point decides the rest exactly as the first writer would have.
func TestQueueTakeoverContinuesTheSame(t *testing.T) {
	sale := queueSale(30, qt0.Add(time.Second), events.Queue{PreQueueOpensAt: qt0, AdmissionRate: 7, ClaimWindow: events.Duration(3 * time.Second), IdleTimeout: events.Duration(time.Hour)})
	run := func(takeover int) []events.DecisionBatch {
		m := newSim(t, sale, qt0)
		for i := range 40 {
			m.join(fmt.Sprintf("s%02d", i))
			m.now = m.now.Add(50 * time.Millisecond)
		}
		for step := 0; step < 200; step++ {
			if step == takeover {
				s := m.rebuild(sale)
				s.SetSeed(func() uint64 { return 0x5eed })
				m.s = s
			}
			var reqs []events.Event
			for _, db := range m.batches[max(0, len(m.batches)-1):] {
				for _, a := range of[events.QueueAdmitted](db.Events) {
					if a.Place%2 == 0 {
						tk, _ := m.s.Room().Ticket(a.Ticket)
						reqs = append(reqs, m.req(events.TypePurchaseRequested, tk.Shopper, &events.PurchaseRequested{TokenID: a.TokenID}))
					}
				}
			}
			m.now = m.now.Add(300 * time.Millisecond)
			m.batch(reqs...)
		}
		return m.batches
	}
	straight := run(-1)
	for _, k := range []int{1, 5, 17, 60} {
		other := run(k)
		for i := range straight {
			a, _ := events.EncodeDecisions(straight[i])
			b, _ := events.EncodeDecisions(other[i])
			if string(a) != string(b) {
				t.Fatalf("takeover at step %d: batch %d differs:\n%s\n%s", k, i, a, b)
			}
		}
	}
}

// TestQueueMixedHistoryReproduces: a random mix of joins, joining again,
// presence, leaves (own and others' tickets), purchases and operator closes
// and reopenings; after every batch a writer rebuilt from the history
// decides the next batch exactly as the live one, and every wake the writer
// asks for decides something (no busy loop).
func TestQueueMixedHistoryReproduces(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		r := rand.New(rand.NewPCG(seed, 99))
		sale := queueSale(15, qt0.Add(2*time.Second), events.Queue{PreQueueOpensAt: qt0, AdmissionRate: 0.5 + 5*r.Float64(),
			ClaimWindow: events.Duration(3 * time.Second), IdleTimeout: events.Duration(4 * time.Second)})
		m := newSim(t, sale, qt0)
		var tickets []string
		shopper := func() string { return fmt.Sprintf("s%02d", r.IntN(40)) }
		for step := 0; step < 300; step++ {
			var reqs []events.Event
			for range r.IntN(4) {
				switch r.IntN(9) {
				case 0, 1, 2:
					reqs = append(reqs, m.req(events.TypeQueueJoinRequested, shopper(), &events.QueueJoinRequested{}))
				case 3:
					if len(tickets) > 0 {
						reqs = append(reqs, m.req(events.TypeQueueSeenRequested, "front", &events.QueueSeenRequested{Tickets: tickets[r.IntN(len(tickets)):]}))
					}
				case 4:
					if len(tickets) > 0 { // anyone's ticket: mostly not the sender's
						reqs = append(reqs, m.req(events.TypeQueueLeaveRequested, shopper(), &events.QueueLeaveRequested{Ticket: tickets[r.IntN(len(tickets))]}))
					}
				case 5:
					if len(tickets) > 0 {
						tk, _ := m.s.Room().Ticket(tickets[r.IntN(len(tickets))])
						if tk.TokenID != "" {
							reqs = append(reqs, m.req(events.TypePurchaseRequested, tk.Shopper, &events.PurchaseRequested{TokenID: tk.TokenID}))
						}
					}
				case 6:
					if r.IntN(8) == 0 {
						action := events.ActionClose
						if r.IntN(2) == 0 {
							action = events.ActionOpen
						}
						reqs = append(reqs, m.req(events.TypeSaleUpdateRequested, "operator", &events.SaleUpdateRequested{Action: action}))
					}
				default:
					if len(tickets) > 0 {
						tk, _ := m.s.Room().Ticket(tickets[r.IntN(len(tickets))])
						reqs = append(reqs, m.req(events.TypeQueueClaimRequested, tk.Shopper, &events.QueueClaimRequested{Ticket: tk.ID}))
					}
				}
			}
			// A rebuilt writer must decide this batch as the live one.
			twin := m.rebuild(sale)
			twin.SetSeed(func() uint64 { return 0x5eed })
			want := twin.Decide(m.now, reqs)
			out := m.batch(reqs...)
			a, _ := events.EncodeDecisions(events.DecisionBatch{Sale: "q", Events: out})
			b, _ := events.EncodeDecisions(events.DecisionBatch{Sale: "q", Events: want})
			if string(a) != string(b) {
				t.Fatalf("seed %d step %d: the rebuilt writer decides otherwise:\nlive    %s\nrebuilt %s", seed, step, a, b)
			}
			for _, j := range of[events.QueueJoined](out) {
				if !j.Already {
					tickets = append(tickets, j.Ticket)
				}
			}
			// Advance to the writer's next wake, or a random step.
			next := m.now.Add(time.Duration(r.IntN(700)) * time.Millisecond)
			if w, ok := m.s.NextWake(m.now); ok && w.Before(next) && !w.Before(m.now) {
				m.now = w
				if out := m.batch(); len(out) == 0 {
					t.Fatalf("seed %d step %d: woken at %v for nothing", seed, step, w)
				}
			}
			m.now = next
		}
		if m.s.Head.Redeemed > m.s.Head.Stock || m.s.Head.Issued-m.s.Head.Expired > m.s.Head.Quota {
			t.Fatalf("seed %d: head %+v", seed, m.s.Head)
		}
		kinds := map[events.Type]int{}
		for _, db := range m.batches {
			for _, e := range db.Events {
				kinds[e.Type]++
			}
		}
		t.Logf("seed %d: %v", seed, kinds)
		if kinds[events.TypeQueueAdmitted] == 0 || kinds[events.TypeSaleUpdated] == 0 || kinds[events.TypeQueueLeft] == 0 {
			t.Fatalf("seed %d: the history misses admissions, schedule changes or leaves: %v", seed, kinds)
		}
	}
}

// TestRejoinKeepsTheToken: a shopper who took the token and joins again
// (a reload) gets the same ticket while the token is unused; after buying,
// the per-user limit answers; after the token ran out unused, a new ticket.
func TestRejoinKeepsTheToken(t *testing.T) {
	sale := queueSale(10, qt0, events.Queue{AdmissionRate: 100, ClaimWindow: events.Duration(time.Minute), IdleTimeout: events.Duration(time.Hour)})
	sale.TokenTTL = 2 * time.Minute
	m := newSim(t, sale, qt0)
	out := m.batch(m.req(events.TypeQueueJoinRequested, "a", &events.QueueJoinRequested{}), m.req(events.TypeQueueJoinRequested, "b", &events.QueueJoinRequested{}))
	adm := of[events.QueueAdmitted](out)
	if len(adm) != 2 {
		t.Fatalf("admitted: %+v", adm)
	}
	m.now = m.now.Add(time.Second)
	m.batch(m.req(events.TypeQueueClaimRequested, "a", &events.QueueClaimRequested{Ticket: adm[0].Ticket}),
		m.req(events.TypeQueueClaimRequested, "b", &events.QueueClaimRequested{Ticket: adm[1].Ticket}))
	again := m.join("a", "b")
	if len(again) != 2 || !again[0].Already || again[0].Ticket != adm[0].Ticket || !again[1].Already {
		t.Fatalf("rejoining after the claim: %+v", again)
	}
	m.batch(m.req(events.TypePurchaseRequested, "a", &events.PurchaseRequested{TokenID: adm[0].TokenID}))
	if d := of[events.QueueJoinDenied](m.batch(m.req(events.TypeQueueJoinRequested, "a", &events.QueueJoinRequested{}))); len(d) != 1 || d[0].Reason != events.ReasonLimitReached {
		t.Fatalf("rejoining after buying: %+v", d)
	}
	m.now = m.now.Add(3 * time.Minute) // b's token runs out unused
	out = m.batch(m.req(events.TypeQueueJoinRequested, "b", &events.QueueJoinRequested{}))
	if e := of[events.TokenExpired](out); len(e) != 1 {
		t.Fatalf("b's token did not expire: %+v", out)
	}
	if j := of[events.QueueJoined](out); len(j) != 1 || j[0].Already || j[0].Ticket == adm[1].Ticket {
		t.Fatalf("rejoining after the token ran out: %+v", j)
	}
	m.rebuild(sale)
}

// TestQueueBatchFitsAStandardPayload: the largest batch a queue sale can
// make — a full batch of joins with long ids (128 KiB of requests, the
// writer's cap), the most token expiries, unclaimed turns and admissions a
// batch takes — encodes under 1 MiB, a standard NATS max_payload.
func TestQueueBatchFitsAStandardPayload(t *testing.T) {
	sale := queueSale(100_000, qt0, events.Queue{AdmissionRate: 100_000, ClaimWindow: events.Duration(10 * time.Second), IdleTimeout: events.Duration(time.Hour)})
	sale.ID = strings.Repeat("s", 64)
	sale.TokenTTL = 10 * time.Second
	s := handlers.NewState(sale)
	s.SetSeed(func() uint64 { return 1 })
	long := strings.Repeat("x", 128)
	join := func(n, from int, at time.Time) []events.Event {
		var reqs []events.Event
		for i := range n {
			reqs = append(reqs, events.Event{ID: events.DerivedID(at, fmt.Sprint("j", from+i)), Type: events.TypeQueueJoinRequested,
				Version: events.SchemaVersion, Sale: sale.ID, Time: at, Shopper: fmt.Sprintf("%s-%06d", long, from+i), Data: &events.QueueJoinRequested{}})
		}
		return reqs
	}
	// Fill: many admitted (their tokens and claims run out together later)
	// and many waiting.
	for i := 0; i < 40; i++ {
		s.Decide(qt0, join(512, i*512, qt0))
	}
	// As many requests as fit 128 KiB, at the moment everything runs out.
	perReq, _ := events.EncodeRequests(events.RequestBatch{Requests: join(1, 0, qt0)})
	n := (128 << 10) / len(perReq)
	out := s.Decide(qt0.Add(10*time.Second), join(n, 1_000_000, qt0.Add(10*time.Second)))
	b, err := events.EncodeDecisions(events.DecisionBatch{Sale: sale.ID, Writer: strings.Repeat("w", 60), DecidedAt: qt0, Head: s.Head, Events: out})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[events.Type]int{}
	for _, e := range out {
		kinds[e.Type]++
	}
	t.Logf("worst queue batch: %d events %v, %d bytes", len(out), kinds, len(b))
	if len(b) > 1<<20-4096 {
		t.Fatalf("a queue batch of %d bytes does not fit a 1 MiB payload", len(b))
	}
	if kinds[events.TypeQueueAdmitted] == 0 || kinds[events.TypeTokenExpired] == 0 || kinds[events.TypeQueueJoined] < n {
		t.Fatalf("the batch is not the worst case: %v", kinds)
	}
}

package handlers

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
)

// sameState reports how two states differ (nil: they are deeply equal, the
// unexported parts included), naming the first difference it finds. An
// empty list equals a nil one: whether a list that is empty now was ever
// used is no part of the state (sameState sets both to nil).
func sameState(a, b *State) error {
	for _, s := range []*State{a, b} {
		if len(s.expiry) == 0 {
			s.expiry = nil
		}
		if len(s.redeemed) == 0 {
			s.redeemed = nil
		}
		if s.q != nil && len(s.q.tickets) == 0 {
			s.q.tickets = nil
		}
		if s.q != nil && len(s.q.claims) == 0 {
			s.q.claims = nil
		}
	}
	if reflect.DeepEqual(a, b) {
		return nil
	}
	switch {
	case !reflect.DeepEqual(a.Sale, b.Sale):
		return fmt.Errorf("sale %+v, %+v", a.Sale, b.Sale)
	case a.Head != b.Head:
		return fmt.Errorf("head %+v, %+v", a.Head, b.Head)
	case len(a.tokens) != len(b.tokens) || len(a.shoppers) != len(b.shoppers) || len(a.expiry) != len(b.expiry) || len(a.redeemed) != len(b.redeemed):
		return fmt.Errorf("sizes: tokens %d, %d; shoppers %d, %d; outstanding %d, %d; redeemed %d, %d", len(a.tokens), len(b.tokens),
			len(a.shoppers), len(b.shoppers), len(a.expiry), len(b.expiry), len(a.redeemed), len(b.redeemed))
	}
	for id, t := range a.tokens {
		if u := b.tokens[id]; u == nil || !reflect.DeepEqual(t, u) {
			return fmt.Errorf("token %s: %+v, %+v", id, t, u)
		}
	}
	for id, sh := range a.shoppers {
		if sh2 := b.shoppers[id]; sh2 == nil || !reflect.DeepEqual(sh, sh2) {
			return fmt.Errorf("shopper %s: %+v, %+v", id, sh, sh2)
		}
	}
	for i := range a.expiry {
		if a.expiry[i].id != b.expiry[i].id {
			return fmt.Errorf("expiry heap at %d: %s, %s", i, a.expiry[i].id, b.expiry[i].id)
		}
	}
	for i := range a.redeemed {
		if a.redeemed[i].id != b.redeemed[i].id {
			return fmt.Errorf("redeemed at %d: %s, %s", i, a.redeemed[i].id, b.redeemed[i].id)
		}
	}
	if (a.q == nil) != (b.q == nil) {
		return fmt.Errorf("queue %v, %v", a.q != nil, b.q != nil)
	}
	if a.q != nil {
		qa, qb := a.q, b.q
		switch {
		case qa.cfg != qb.cfg || qa.interval != qb.interval || qa.tolerance != qb.tolerance || qa.tat != qb.tat || qa.preJoins != qb.preJoins:
			return fmt.Errorf("queue: cfg %+v, %+v; rate %d/%d/%d, %d/%d/%d; pre-queue %d, %d", qa.cfg, qb.cfg,
				qa.interval, qa.tolerance, qa.tat, qb.interval, qb.tolerance, qb.tat, qa.preJoins, qb.preJoins)
		case len(qa.tickets) != len(qb.tickets) || len(qa.claims) != len(qb.claims):
			return fmt.Errorf("queue: %d, %d tickets; %d, %d claims", len(qa.tickets), len(qb.tickets), len(qa.claims), len(qb.claims))
		}
		for i := range qa.tickets {
			if !reflect.DeepEqual(qa.tickets[i], qb.tickets[i]) {
				return fmt.Errorf("ticket %d: %+v, %+v", i, *qa.tickets[i], *qb.tickets[i])
			}
		}
		for i := range qa.claims {
			if qa.claims[i].ID != qb.claims[i].ID {
				return fmt.Errorf("claim %d: %s, %s", i, qa.claims[i].ID, qb.claims[i].ID)
			}
		}
		if !reflect.DeepEqual(qa.room, qb.room) {
			return fmt.Errorf("queue: the rooms differ: %+v, %+v", *qa.room, *qb.room)
		}
	}
	return fmt.Errorf("the states differ elsewhere")
}

// snapSim drives a sale's State batch by batch as the writer does, keeps
// every batch as committed and a snapshot copy after each, and knows the
// tokens and tickets handed out, to make up plausible requests.
type snapSim struct {
	t       *testing.T
	sale    Sale
	s       *State
	now     time.Time
	rnd     *rand.Rand
	n       int
	batches [][]byte
	snaps   []*snapshot // snaps[k]: after batch k+1
	tokens  []issued
	tickets map[string]string // shopper -> their latest ticket
	turns   []issued          // admissions: ticket (= token) and shopper
	seen    map[string]int    // decision types and reasons met
}

type issued struct{ id, shopper string }

func newSnapSim(t *testing.T, sale Sale, now time.Time) *snapSim {
	m := &snapSim{t: t, sale: sale, s: NewState(sale), now: now, rnd: rand.New(rand.NewPCG(7, uint64(len(sale.ID)))),
		tickets: map[string]string{}, seen: map[string]int{}}
	m.s.SetSeed(func() uint64 { return 0x5eed })
	return m
}

func (m *snapSim) req(shopper string, data any) events.Event {
	m.n++
	var typ events.Type
	switch data.(type) {
	case *events.TokenRequested:
		typ = events.TypeTokenRequested
	case *events.PurchaseRequested:
		typ = events.TypePurchaseRequested
	case *events.SaleUpdateRequested:
		typ = events.TypeSaleUpdateRequested
	case *events.QueueJoinRequested:
		typ = events.TypeQueueJoinRequested
	case *events.QueueLeaveRequested:
		typ = events.TypeQueueLeaveRequested
	case *events.QueueSeenRequested:
		typ = events.TypeQueueSeenRequested
	case *events.QueueClaimRequested:
		typ = events.TypeQueueClaimRequested
	}
	return events.Event{ID: events.DerivedID(m.now, fmt.Sprint("req:", m.n)), Type: typ, Version: events.SchemaVersion,
		Sale: m.sale.ID, Time: m.now, Shopper: shopper, Data: data}
}

// batch decides reqs, commits the batch and copies a snapshot of the state.
func (m *snapSim) batch(reqs []events.Event) {
	m.t.Helper()
	out := m.s.Decide(m.now, reqs)
	h := m.s.Head
	h.Version++
	h.Cursor += uint64(1 + m.rnd.IntN(3))
	m.s.Head = h
	data, err := events.EncodeDecisions(events.DecisionBatch{Sale: m.sale.ID, Writer: "sim", DecidedAt: m.now, Head: h, Events: out})
	if err != nil {
		m.t.Fatal(err)
	}
	m.batches = append(m.batches, data)
	m.snaps = append(m.snaps, copySnapshot(m.s, m.sale.ID, uint64(len(m.batches)), m.now, data))
	for _, e := range out {
		m.seen[string(e.Type)]++
		switch d := e.Data.(type) {
		case *events.TokenIssued:
			if d.AlreadyIssued {
				m.seen["already_issued"]++
			} else {
				m.tokens = append(m.tokens, issued{d.TokenID, e.Shopper})
			}
		case *events.TokenDenied:
			m.seen["token:"+d.Reason]++
		case *events.PurchaseRefused:
			m.seen["purchase:"+d.Reason]++
		case *events.QueueJoined:
			if !d.Already {
				m.tickets[e.Shopper] = d.Ticket
				if d.Place < 0 {
					m.seen["pre-queue"]++
				}
			}
		case *events.QueueAdmitted:
			m.turns = append(m.turns, issued{d.Ticket, e.Shopper})
		case *events.QueueLeft:
			m.seen["left:"+d.Reason]++
		case *events.QueueClosed:
			m.seen["closed:"+d.Reason]++
		}
	}
}

func (m *snapSim) shopper(n int) string { return fmt.Sprintf("shopper-%03d", m.rnd.IntN(n)) }

// tokenSaleRequests makes up a batch's requests for a sale without a queue.
func (m *snapSim) tokenSaleRequests() []events.Event {
	var reqs []events.Event
	for range m.rnd.IntN(9) {
		switch p := m.rnd.Float64(); {
		case p < 0.5:
			reqs = append(reqs, m.req(m.shopper(80), &events.TokenRequested{}))
		case p < 0.92 && len(m.tokens) > 0:
			tk := m.tokens[m.rnd.IntN(len(m.tokens))]
			who := tk.shopper
			if m.rnd.IntN(8) == 0 {
				who = m.shopper(80)
			}
			reqs = append(reqs, m.req(who, &events.PurchaseRequested{TokenID: tk.id}))
		case p < 0.96:
			reqs = append(reqs, m.req("operator", &events.SaleUpdateRequested{Action: []string{events.ActionClose, events.ActionOpen}[m.rnd.IntN(2)]}))
		}
	}
	return reqs
}

// queueSaleRequests makes up a batch's requests for a sale with a queue.
func (m *snapSim) queueSaleRequests() []events.Event {
	var reqs []events.Event
	for range m.rnd.IntN(9) {
		who := m.shopper(120)
		ticket, has := m.tickets[who]
		if len(m.turns) > 0 && m.rnd.IntN(3) == 0 { // mostly the latest turns
			tn := m.turns[max(0, len(m.turns)-1-m.rnd.IntN(10))]
			who, ticket, has = tn.shopper, tn.id, true
		}
		switch p := m.rnd.Float64(); {
		case p < 0.4 || !has:
			reqs = append(reqs, m.req(who, &events.QueueJoinRequested{}))
		case p < 0.5:
			reqs = append(reqs, m.req(who, &events.QueueLeaveRequested{Ticket: ticket}))
		case p < 0.7:
			var ts []string
			for range 1 + m.rnd.IntN(5) {
				if tk, ok := m.tickets[m.shopper(120)]; ok {
					ts = append(ts, tk)
				}
			}
			reqs = append(reqs, m.req("front", &events.QueueSeenRequested{Tickets: append(ts, ticket)}))
		case p < 0.85:
			reqs = append(reqs, m.req(who, &events.QueueClaimRequested{Ticket: ticket}))
		case p < 0.96:
			reqs = append(reqs, m.req(who, &events.PurchaseRequested{TokenID: ticket}))
		default:
			reqs = append(reqs, m.req(who, &events.TokenRequested{}))
		}
	}
	return reqs
}

// replay folds batches into a fresh state as Load does.
func replay(t *testing.T, sale Sale, into *State, batches [][]byte) *State {
	t.Helper()
	if into == nil {
		into = NewState(sale)
	}
	for _, b := range batches {
		db, err := events.DecodeDecisions(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := into.Apply(db); err != nil {
			t.Fatal(err)
		}
	}
	return into
}

// checkSnapshots checks, for the snapshot after every batch, that loading it
// and applying the batches after it gives the state a full replay gives, and
// that both then decide the same requests alike.
func (m *snapSim) checkSnapshots(next func() []events.Event) {
	t := m.t
	t.Helper()
	full := replay(t, m.sale, nil, m.batches)
	for k, sn := range m.snaps { // encoded only now: the copy must not have moved with the state
		data := sn.encode()
		r, err := openSnapshot(data)
		if err != nil {
			t.Fatalf("snapshot after batch %d: %v", k+1, err)
		}
		if r.seq != sn.seq || r.head != sn.head || !r.decidedAt.Equal(sn.decidedAt) || r.digest != sha256.Sum256(m.batches[k]) {
			t.Fatalf("snapshot after batch %d: prelude %d %+v %v", k+1, r.seq, r.head, r.decidedAt)
		}
		s, err := r.restore(m.sale)
		if err != nil {
			t.Fatalf("snapshot after batch %d: %v", k+1, err)
		}
		s = replay(t, m.sale, s, m.batches[k+1:])
		if err := sameState(full, s); err != nil {
			t.Fatalf("snapshot after batch %d and the %d batches after it: %v", k+1, len(m.batches)-k-1, err)
		}
		if k%10 != 0 && k != len(m.snaps)-1 {
			continue
		}
		// The same new requests, decided by both.
		a, b := replay(t, m.sale, nil, m.batches), s
		a.SetSeed(func() uint64 { return 42 })
		b.SetSeed(func() uint64 { return 42 })
		now := m.now
		for i := range 20 {
			now = now.Add(time.Duration(1+i%7) * 7 * time.Second)
			reqs := next()
			if da, db := a.Decide(now, reqs), b.Decide(now, reqs); !reflect.DeepEqual(da, db) {
				t.Fatalf("snapshot after batch %d: the next decisions differ:\n%+v\n%+v", k+1, da, db)
			}
		}
		a.SetSeed(nil)
		b.SetSeed(nil)
		if err := sameState(a, b); err != nil {
			t.Fatalf("snapshot after batch %d, after the same new decisions: %v", k+1, err)
		}
	}
}

func (m *snapSim) mustHaveSeen(kinds ...string) {
	m.t.Helper()
	for _, k := range kinds {
		if m.seen[k] == 0 {
			m.t.Errorf("the scenario never met %s (met %v)", k, m.seen)
		}
	}
}

// TestSnapshotLoadEqualsReplay: for a sale with tokens issued, asked again,
// expired, redeemed and issued again, purchases refused for every reason,
// the sale closed and reopened, a snapshot taken after any batch, loaded,
// and followed by the batches after it gives exactly the state a replay from
// the start gives, and the next decisions of both are the same.
func TestSnapshotLoadEqualsReplay(t *testing.T) {
	sale := Sale{ID: "snap", Stock: 25, Quota: 30, QuotaBuffer: 1.2, PerUserLimit: 2, TokenTTL: 5 * time.Minute,
		OpensAt: t0.Add(30 * time.Second), ClosesAt: t0.Add(3 * time.Hour)}
	m := newSnapSim(t, sale, t0)
	for range 250 {
		m.batch(m.tokenSaleRequests())
		step := time.Duration(1+m.rnd.IntN(5)) * time.Second
		if m.rnd.IntN(10) == 0 {
			step = 3 * time.Minute // tokens run out
		}
		m.now = m.now.Add(step + time.Duration(m.rnd.IntN(1000))*time.Millisecond)
	}
	m.mustHaveSeen(string(events.TypeTokenIssued), "already_issued", string(events.TypeTokenExpired), string(events.TypePurchaseAccepted),
		string(events.TypeSaleUpdated), "token:"+events.ReasonNotOpen, "token:"+events.ReasonClosed, "token:"+events.ReasonLimitReached,
		"token:"+events.ReasonSoldOut, "purchase:"+events.ReasonTokenUsed, "purchase:"+events.ReasonTokenNotYours,
		"purchase:"+events.ReasonTokenExpired, "purchase:"+events.ReasonClosed)
	tokens, shoppers, _ := m.s.Sizes()
	t.Logf("%d batches; the state holds %d tokens and %d shoppers; head %+v", len(m.batches), tokens, shoppers, m.s.Head)
	m.checkSnapshots(m.tokenSaleRequests)
}

// TestSnapshotLoadEqualsReplayWithQueue: the same for a sale with a waiting
// room: pre-queue joins, the shuffle, later joins, admissions, claims,
// leaves, idle and unclaimed turns, purchases, the queue's end.
func TestSnapshotLoadEqualsReplayWithQueue(t *testing.T) {
	sale := Sale{ID: "snapq", Stock: 5, Quota: 6, QuotaBuffer: 1.2, PerUserLimit: 1, TokenTTL: 2 * time.Minute, OpensAt: t0,
		Queue: &events.Queue{PreQueueOpensAt: t0.Add(-5 * time.Minute), AdmissionRate: 2,
			ClaimWindow: events.Duration(20 * time.Second), IdleTimeout: events.Duration(time.Minute)}}
	m := newSnapSim(t, sale, t0.Add(-6*time.Minute))
	for i := range 300 {
		reqs := m.queueSaleRequests()
		switch i {
		case 100, 104:
			reqs = append(reqs, m.req("operator", &events.SaleUpdateRequested{Action: events.ActionClose}))
		case 102, 110:
			reqs = append(reqs, m.req("operator", &events.SaleUpdateRequested{Action: events.ActionOpen}))
		}
		m.batch(reqs)
		step := time.Duration(200+m.rnd.IntN(5000)) * time.Millisecond
		if m.rnd.IntN(15) == 0 {
			step = 70 * time.Second // turns go unclaimed, waiting shoppers idle
		}
		m.now = m.now.Add(step)
	}
	m.mustHaveSeen(string(events.TypeQueueShuffled), "pre-queue", string(events.TypeQueueJoined), string(events.TypeQueueAdmitted),
		string(events.TypeQueueClaimed), string(events.TypeQueueSeen), string(events.TypePurchaseAccepted), string(events.TypeTokenExpired),
		"left:"+events.LeftByShopper, "left:"+events.LeftIdle, "left:"+events.LeftUnclaimed, "token:"+ReasonQueueRequired,
		"closed:"+events.ReasonClosed, "closed:"+events.ReasonSoldOut, string(events.TypeSaleUpdated))
	t.Logf("%d batches; %d tickets; met %v", len(m.batches), len(m.s.q.tickets), m.seen)
	m.checkSnapshots(m.queueSaleRequests)
}

// FuzzSnapshotBody: whatever a snapshot's body holds (with a good checksum),
// decoding it fails or gives a state, and never panics.
func FuzzSnapshotBody(f *testing.F) {
	sale := Sale{ID: "f", Stock: 3, Quota: 4, QuotaBuffer: 1.2, PerUserLimit: 1, TokenTTL: time.Minute, OpensAt: t0,
		Queue: &events.Queue{PreQueueOpensAt: t0.Add(-time.Minute), AdmissionRate: 1, ClaimWindow: events.Duration(time.Second), IdleTimeout: events.Duration(time.Minute)}}
	s := NewState(sale)
	s.SetSeed(func() uint64 { return 1 })
	var reqs []events.Event
	for i := range 6 {
		reqs = append(reqs, events.Event{ID: events.DerivedID(t0, fmt.Sprint(i)), Type: events.TypeQueueJoinRequested, Version: events.SchemaVersion,
			Sale: "f", Time: t0, Shopper: fmt.Sprint("s", i%4), Data: &events.QueueJoinRequested{}})
	}
	s.Decide(t0.Add(-30*time.Second), reqs)
	out := s.Decide(t0.Add(2*time.Second), nil)
	for _, e := range out {
		if d, ok := e.Data.(*events.QueueAdmitted); ok {
			s.Decide(t0.Add(3*time.Second), []events.Event{{ID: events.DerivedID(t0, "buy"), Type: events.TypePurchaseRequested,
				Version: events.SchemaVersion, Sale: "f", Time: t0, Shopper: e.Shopper, Data: &events.PurchaseRequested{TokenID: d.TokenID}}})
			break
		}
	}
	r, err := openSnapshot(copySnapshot(s, "f", 9, t0.Add(3*time.Second), []byte("batch")).encode())
	if err != nil {
		f.Fatal(err)
	}
	if _, err := r.restore(sale); err != nil {
		f.Fatal(err)
	}
	f.Add(r.d.b)
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := openSnapshot(sealSnapshot(bytes.Clone(body)))
		if err != nil {
			return
		}
		_, _ = r.restore(sale)
	})
}

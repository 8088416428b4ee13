package handlers

import (
	"crypto/rand"
	"encoding/binary"
	"math"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/queue"
)

// The waiting room's decisions. With a queue, tokens are handed out only by
// admission: the writer lets the next shoppers in, in the queue's order,
// while quota and stock are left and at most at the admission rate. Each
// admission is a TokenIssued and a QueueAdmitted answering the shopper's
// join request.

// ReasonQueueRequired denies a direct token request to a sale with a queue.
const ReasonQueueRequired = "queue_required"

// MaxAdmissionsPerBatch caps the admissions (and the idle tickets passed
// over) of one batch, and the unclaimed turns one batch reclaims; the rest
// follow in the next. With the token expiries and a full batch of joins
// they keep a decision batch under a standard 1 MiB NATS payload (test).
// Part of the decision code.
const MaxAdmissionsPerBatch = 256

// queueState is the writer's side of the waiting room.
type queueState struct {
	cfg    events.Queue
	room   *queue.Room
	claims []*queue.Ticket // admitted and not claimed yet, by ClaimBy (admission order)
	// The rate cap as GCRA in integer nanoseconds: an admission is allowed
	// at now >= tat - tolerance; each admission moves tat to
	// max(tat, now) + interval. Only admissions change it, so a rebuild and
	// a re-run that see only the committed batches agree with the writer.
	interval  int64 // 1e9 / rate
	tolerance int64 // (burst - 1) x interval, burst = max(1, rate) (one second's worth)
	tat       int64 // theoretical arrival time of the next admission (unix nanos)
	// Every ticket in the order it joined (the room does not list them):
	// a snapshot copies the room from it. The first preJoins joined the
	// pre-queue.
	tickets  []*queue.Ticket
	preJoins int
}

// joined notes the ticket a QueueJoined (not Already) just placed in the room.
func (q *queueState) joined(d *events.QueueJoined) {
	t, ok := q.room.Ticket(d.Ticket)
	if !ok {
		return
	}
	q.tickets = append(q.tickets, t)
	if d.Place < 0 {
		q.preJoins++
	}
}

// SetSeed sets where the shuffle's seed comes from; the default is
// crypto/rand. The auditor sets the recorded seed to re-run a batch.
func (s *State) SetSeed(f func() uint64) { s.seed = f }

// Room is the sale's waiting room (nil without a queue).
func (s *State) Room() *queue.Room {
	if s.q == nil {
		return nil
	}
	return s.q.room
}

func randomSeed() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:])
}

func (s *State) initQueue() {
	if s.Sale.Queue != nil {
		q := &queueState{cfg: *s.Sale.Queue, room: queue.NewRoom()}
		rate := q.cfg.AdmissionRate
		q.interval = max(1, int64(1e9/rate))
		q.tolerance = int64(max(1, math.Floor(rate))-1) * q.interval
		s.q = q
	}
}

// allowedAt is the earliest time the rate allows the next admission.
func (q *queueState) allowedAt() int64 { return q.tat - q.tolerance }

// admitted moves the rate's clock by one admission at now.
func (q *queueState) admitted(now int64) { q.tat = max(q.tat, now) + q.interval }

// queueBefore runs before a batch's requests: the shuffle at the opening,
// unclaimed admissions, and the queue's end.
func (s *State) queueBefore(now time.Time, out []events.Event) []events.Event {
	q := s.q
	out = s.shuffleIfDue(now, out)
	// Settled admissions leave the list freely; the cap counts decisions.
	for n := 0; len(q.claims) > 0 && !now.Before(q.claims[0].ClaimBy); {
		t := q.claims[0]
		if t.Status != queue.Admitted {
			q.claims = q.claims[1:] // claimed, or left
			continue
		}
		if n == MaxAdmissionsPerBatch {
			break
		}
		n++
		q.claims = q.claims[1:]
		if tok := s.tokens[t.TokenID]; tok != nil && tok.orderID == "" {
			out = s.reclaimEarly(now, tok, out)
		}
		out = s.applyQueue(s.writerEvent(now, "unclaimed:"+t.ID, t.Shopper, events.TypeQueueLeft,
			&events.QueueLeft{Ticket: t.ID, Reason: events.LeftUnclaimed}), now, out)
	}
	return s.queueEnd(now, out)
}

// shuffleIfDue draws the pre-queue's order once the sale is open.
func (s *State) shuffleIfDue(now time.Time, out []events.Event) []events.Event {
	if shuffled, _ := s.q.room.Shuffled(); shuffled || now.Before(s.Sale.OpensAt) {
		return out
	}
	seed := s.seed
	if seed == nil {
		seed = randomSeed
	}
	e := s.writerEvent(now, "shuffle", "", events.TypeQueueShuffled, &events.QueueShuffled{Seed: seed(), PreQueue: int64(s.q.room.PreQueue())})
	return s.applyQueue(e, now, out)
}

// queueEnd closes the queue once nothing can be had any more.
func (s *State) queueEnd(now time.Time, out []events.Event) []events.Event {
	if s.q.room.Closed() != "" {
		return out
	}
	reason := ""
	switch {
	case !s.Sale.ClosesAt.IsZero() && !now.Before(s.Sale.ClosesAt):
		reason = events.ReasonClosed
	case s.Head.StockLeft() <= 0:
		reason = events.ReasonSoldOut
	default:
		return out
	}
	return s.applyQueue(s.writerEvent(now, "close", "", events.TypeQueueClosed, &events.QueueClosed{Reason: reason}), now, out)
}

// admit lets the next shoppers in.
func (s *State) admit(now time.Time, out []events.Event) []events.Event {
	q := s.q
	if q.room.Closed() != "" || s.open(now) != "" {
		return s.queueEnd(now, out)
	}
	idle := int64(q.cfg.IdleTimeout)
	for n := 0; n < MaxAdmissionsPerBatch; n++ {
		if now.UnixNano() < q.allowedAt() || s.Head.StockLeft() <= 0 || s.Head.QuotaLeft() <= 0 {
			break
		}
		t, ok := q.room.Next()
		if !ok {
			break
		}
		sh := s.settle(now, t.Shopper, &out)
		switch {
		case now.UnixNano()-t.Seen > idle:
			out = s.applyQueue(s.writerEvent(now, "idle:"+t.ID, t.Shopper, events.TypeQueueLeft,
				&events.QueueLeft{Ticket: t.ID, Reason: events.LeftIdle}), now, out)
			continue
		case sh != nil && (sh.token != nil || sh.bought >= s.Sale.PerUserLimit):
			// Holds a token or bought all a shopper may: the turn goes on.
			out = s.applyQueue(s.writerEvent(now, "limit:"+t.ID, t.Shopper, events.TypeQueueLeft,
				&events.QueueLeft{Ticket: t.ID, Reason: events.ReasonLimitReached}), now, out)
			continue
		}
		tok := s.issue(t.ID, t.Shopper, now, s.TokenExpiry(now))
		q.admitted(now.UnixNano())
		out = s.applyQueue(events.Event{ID: events.DerivedIDOf(now, "admit-token:", t.ID), Type: events.TypeTokenIssued, Version: events.SchemaVersion,
			Sale: s.Sale.ID, Time: now, Shopper: t.Shopper, Request: t.ID,
			Data: &events.TokenIssued{TokenID: tok.id, IssuedAt: now, ExpiresAt: tok.expiresAt}}, now, out)
		e := events.Event{ID: events.DerivedIDOf(now, "admit:", t.ID), Type: events.TypeQueueAdmitted, Version: events.SchemaVersion,
			Sale: s.Sale.ID, Time: now, Shopper: t.Shopper, Request: t.ID,
			Data: &events.QueueAdmitted{Ticket: t.ID, Place: t.Place, TokenID: tok.id, ClaimBy: now.Add(time.Duration(q.cfg.ClaimWindow))}}
		out = s.applyQueue(e, now, out)
		q.claims = append(q.claims, t)
	}
	return s.queueEnd(now, out)
}

// writerEvent is a queue decision the writer makes on its own (or, with
// request, answering it).
func (s *State) writerEvent(now time.Time, key, shopper string, typ events.Type, data any) events.Event {
	return events.Event{ID: events.DerivedID(now, "queue:"+s.Sale.ID+":"+key), Type: typ, Version: events.SchemaVersion,
		Sale: s.Sale.ID, Time: now, Shopper: shopper, Data: data}
}

// applyQueue folds a queue decision into the room and appends it.
func (s *State) applyQueue(e events.Event, now time.Time, out []events.Event) []events.Event {
	_ = s.q.room.Apply(e, now) // the writer's own decisions always fit
	return append(out, e)
}

// decideJoin gives the shopper a ticket, or the one they have.
func (s *State) decideJoin(now time.Time, r events.Event) events.Event {
	q := s.q
	deny := func(reason string) events.Event {
		return decision(now, r, events.TypeQueueJoinDenied, &events.QueueJoinDenied{Reason: reason})
	}
	if t, ok := q.room.Active(r.Shopper); ok {
		e := decision(now, r, events.TypeQueueJoined, &events.QueueJoined{Ticket: t.ID, Place: t.Place, PreIndex: t.PreIndex, Already: true})
		_ = q.room.Apply(e, now) // a sign of life, folded as a rebuild folds it
		return e
	}
	joinsFrom := s.Sale.OpensAt
	if !q.cfg.PreQueueOpensAt.IsZero() && q.cfg.PreQueueOpensAt.Before(joinsFrom) {
		joinsFrom = q.cfg.PreQueueOpensAt // an operator may open the sale before the pre-queue's time
	}
	switch {
	case q.room.Closed() != "":
		return deny(q.room.Closed())
	case !s.Sale.ClosesAt.IsZero() && !now.Before(s.Sale.ClosesAt):
		return deny(events.ReasonClosed)
	case now.Before(joinsFrom):
		return deny(events.ReasonNotOpen)
	case s.Head.StockLeft() <= 0:
		return deny(events.ReasonSoldOut)
	}
	if sh := s.shoppers[r.Shopper]; sh != nil && sh.bought >= s.Sale.PerUserLimit {
		return deny(events.ReasonLimitReached)
	}
	d := &events.QueueJoined{Ticket: r.ID, Place: -1}
	if shuffled, _ := q.room.Shuffled(); shuffled {
		d.Place = int64(q.room.Len())
	} else {
		d.PreIndex = int64(q.room.PreQueue())
	}
	e := decision(now, r, events.TypeQueueJoined, d)
	if q.room.Apply(e, now) == nil {
		q.joined(d)
	}
	return e
}

// decideLeave takes the shopper's ticket out of the queue; an admitted
// shopper who leaves gives the token back.
func (s *State) decideLeave(now time.Time, r events.Event, d *events.QueueLeaveRequested, out *[]events.Event) events.Event {
	t, ok := s.q.room.Ticket(d.Ticket)
	reason := events.LeftByShopper
	if active, isActive := s.q.room.Active(r.Shopper); !ok || t.Shopper != r.Shopper || !isActive || active != t {
		reason = events.LeftNothing // nothing to leave: recorded, changes nothing
	}
	if reason == events.LeftByShopper && (t.Status == queue.Admitted || t.Status == queue.Claimed) {
		// Leaving with the turn's token unused gives it back.
		if tok := s.tokens[t.TokenID]; tok != nil && tok.orderID == "" {
			*out = s.reclaimEarly(now, tok, *out)
		}
	}
	e := decision(now, r, events.TypeQueueLeft, &events.QueueLeft{Ticket: d.Ticket, Reason: reason})
	if reason == events.LeftByShopper {
		_ = s.q.room.Apply(e, now)
	}
	return e
}

// decideSeen notes the waiting tickets a front saw.
func (s *State) decideSeen(now time.Time, r events.Event, d *events.QueueSeenRequested) (events.Event, bool) {
	var seen []string
	for _, id := range d.Tickets {
		if t, ok := s.q.room.Ticket(id); ok && (t.Status == queue.Waiting || t.Status == queue.Admitted) {
			seen = append(seen, id)
		}
	}
	if len(seen) == 0 {
		return events.Event{}, false
	}
	e := decision(now, r, events.TypeQueueSeen, &events.QueueSeen{Tickets: seen})
	_ = s.q.room.Apply(e, now)
	return e, true
}

// decideClaim marks the shopper's admission as taken.
func (s *State) decideClaim(now time.Time, r events.Event, d *events.QueueClaimRequested) (events.Event, bool) {
	t, ok := s.q.room.Ticket(d.Ticket)
	if !ok || t.Shopper != r.Shopper || t.Status != queue.Admitted {
		return events.Event{}, false
	}
	e := decision(now, r, events.TypeQueueClaimed, &events.QueueClaimed{Ticket: t.ID})
	_ = s.q.room.Apply(e, now)
	return e, true
}

// nextQueueWake is when the queue next needs a batch without a request: the
// opening (the shuffle), the earliest claim deadline, the next admission the
// rate allows.
func (s *State) nextQueueWake(now time.Time) (time.Time, bool) {
	q := s.q
	var at time.Time
	pick := func(t time.Time) {
		if at.IsZero() || t.Before(at) {
			at = t
		}
	}
	closed := q.room.Closed() != ""
	if shuffled, _ := q.room.Shuffled(); !shuffled && !closed {
		pick(s.Sale.OpensAt)
	}
	// The first claim deadline still pending (settled ones are passed over).
	for _, t := range q.claims {
		if t.Status == queue.Admitted {
			pick(t.ClaimBy)
			break
		}
	}
	if !closed && !s.Sale.ClosesAt.IsZero() {
		pick(s.Sale.ClosesAt) // the queue ends: everyone waiting is told
	}
	if !closed && s.open(now) == "" && s.Head.StockLeft() > 0 && s.Head.QuotaLeft() > 0 && q.room.Waiting() > 0 {
		pick(time.Unix(0, max(q.allowedAt(), now.UnixNano())))
	}
	return at, !at.IsZero()
}

// applyQueueBatch rebuilds the writer's side of the queue from a committed
// batch (see Apply).
func (s *State) applyQueueBatch(db events.DecisionBatch) error {
	q := s.q
	for _, e := range db.Events {
		if err := q.room.Apply(e, db.DecidedAt); err != nil {
			return err
		}
		if d, ok := e.Data.(*events.QueueJoined); ok && !d.Already {
			q.joined(d)
		}
		if d, ok := e.Data.(*events.QueueAdmitted); ok {
			t, _ := q.room.Ticket(d.Ticket)
			q.claims = append(q.claims, t)
			q.admitted(db.DecidedAt.UnixNano())
		}
	}
	// Drop claims that are settled from the front of the list.
	for len(q.claims) > 0 && q.claims[0].Status != queue.Admitted && !db.DecidedAt.Before(q.claims[0].ClaimBy) {
		q.claims = q.claims[1:]
	}
	return nil
}

package queue

import (
	"fmt"
	"time"

	"github.com/flashgate/flashgate/events"
)

// Ticket states.
const (
	Waiting  = "waiting"
	Admitted = "admitted" // the token is handed over, not claimed yet
	Claimed  = "claimed"
	Left     = "left"
	Expired  = "expired" // idle when the turn came, or admitted and never claimed
	SoldOut  = "sold_out"
	Closed   = "closed"
)

// Ticket is one shopper's place in a sale's waiting room.
type Ticket struct {
	ID       string // the id of the join request
	Shopper  string
	Place    int64 // place in the admission order; -1 until the pre-queue is shuffled
	PreIndex int64 // rank among the pre-queue joins
	Status   string
	Reason   string    // why it left (events.LeftByShopper, LeftIdle, LeftUnclaimed)
	TokenID  string    // once admitted
	ClaimBy  time.Time // once admitted
	// The admission's purchase token, as its TokenIssued says.
	TokenIssuedAt, TokenExpiresAt time.Time
	Seen                          int64 // last sign of life (unix nanos): the join, a poll, a stream
}

// Room is a sale's waiting room as the decisions built it: tickets, the
// admission order and who still waits. The writer, the front and the audit
// fold the same decision events into it (Apply), so they agree on every
// place. It is not safe for concurrent use.
type Room struct {
	tickets   map[string]*Ticket
	byShopper map[string]*Ticket // the shopper's ticket while waiting, admitted, or claimed with its token unused
	pre       []*Ticket          // pre-queue joins, in join order
	places    []*Ticket          // by place
	line      Line
	shuffled  bool
	seed      uint64
	closed    string // events.ReasonSoldOut or ReasonClosed once the queue ended
	admitted  int64
	preWait   int // pre-queue tickets waiting (before the shuffle)
}

// NewRoom returns an empty room.
func NewRoom() *Room {
	return &Room{tickets: map[string]*Ticket{}, byShopper: map[string]*Ticket{}}
}

// Ticket returns a ticket by id.
func (r *Room) Ticket(id string) (*Ticket, bool) {
	t, ok := r.tickets[id]
	return t, ok
}

// Active returns the shopper's ticket that is still in play: waiting,
// admitted, or claimed while its token is neither used nor expired (joining
// again then answers it, so a reload never loses the token).
func (r *Room) Active(shopper string) (*Ticket, bool) {
	t, ok := r.byShopper[shopper]
	return t, ok
}

// Shuffled reports whether the pre-queue has its order (the sale opened),
// and the seed it was drawn from.
func (r *Room) Shuffled() (bool, uint64) { return r.shuffled, r.seed }

// Closed is why the queue ended ("" while it runs).
func (r *Room) Closed() string { return r.closed }

// Waiting is the number of tickets waiting.
func (r *Room) Waiting() int { return r.line.Waiting() + r.preWait }

// Admitted is the number of tickets admitted so far.
func (r *Room) Admitted() int64 { return r.admitted }

// PreQueue is the number of pre-queue joins.
func (r *Room) PreQueue() int { return len(r.pre) }

// Len is the number of tickets ever placed in the order.
func (r *Room) Len() int { return len(r.places) }

// Ahead is how many waiting tickets are before t in the order; -1 while
// its place is not drawn yet.
func (r *Room) Ahead(t *Ticket) int {
	if t.Place < 0 {
		return -1
	}
	return r.line.Ahead(int(t.Place))
}

// StatusOf is t's state, the queue's end included: a ticket still waiting
// when the queue ended is sold_out or closed.
func (r *Room) StatusOf(t *Ticket) string {
	if t.Status == Waiting && r.closed != "" {
		if r.closed == events.ReasonSoldOut {
			return SoldOut
		}
		return Closed
	}
	return t.Status
}

// Next is the first waiting ticket in the order.
func (r *Room) Next() (*Ticket, bool) {
	if !r.shuffled || r.closed != "" {
		return nil, false
	}
	p, ok := r.line.Next(0)
	if !ok {
		return nil, false
	}
	return r.places[p], true
}

// Apply folds one decision event into the room; events of other types are
// ignored. at is the decision time. It fails on an event that does not fit
// the room (a replay that went wrong).
func (r *Room) Apply(e events.Event, at time.Time) error {
	switch d := e.Data.(type) {
	case *events.QueueJoined:
		if d.Already {
			// Joining again is a sign of life.
			if t := r.tickets[d.Ticket]; t != nil && (t.Status == Waiting || t.Status == Admitted) {
				t.Seen = at.UnixNano()
			}
			return nil
		}
		if _, dup := r.tickets[d.Ticket]; dup {
			return fmt.Errorf("queue: ticket %s joined twice", d.Ticket)
		}
		t := &Ticket{ID: d.Ticket, Shopper: e.Shopper, Place: d.Place, PreIndex: d.PreIndex, Status: Waiting, Seen: at.UnixNano()}
		switch {
		case d.Place < 0:
			if r.shuffled || d.PreIndex != int64(len(r.pre)) {
				return fmt.Errorf("queue: pre-queue join %s at index %d (pre-queue %d, shuffled %v)", d.Ticket, d.PreIndex, len(r.pre), r.shuffled)
			}
			r.pre = append(r.pre, t)
			r.preWait++
		default:
			if !r.shuffled || d.Place != int64(r.line.Len()) {
				return fmt.Errorf("queue: join %s at place %d, the order has %d", d.Ticket, d.Place, r.line.Len())
			}
			r.line.Add()
			r.places = append(r.places, t)
		}
		r.tickets[t.ID] = t
		r.byShopper[t.Shopper] = t
	case *events.QueueShuffled:
		if r.shuffled || d.PreQueue != int64(len(r.pre)) || r.line.Len() != 0 {
			return fmt.Errorf("queue: shuffle of %d pre-queue joins (have %d, shuffled %v)", d.PreQueue, len(r.pre), r.shuffled)
		}
		r.shuffled, r.seed = true, d.Seed
		order := Permutation(SeedOf(d.Seed), len(r.pre))
		r.places = make([]*Ticket, len(r.pre), max(len(r.pre), 16))
		r.line.Grow(len(r.pre))
		for i, t := range r.pre {
			t.Place = int64(order[i])
			r.places[t.Place] = t
		}
		for _, t := range r.pre {
			if t.Status != Waiting {
				r.line.Remove(int(t.Place))
			}
		}
		r.pre, r.preWait = nil, 0 // the places hold them now
	case *events.QueueSeen:
		for _, id := range d.Tickets {
			if t := r.tickets[id]; t != nil {
				t.Seen = at.UnixNano()
			}
		}
	case *events.QueueAdmitted:
		t := r.tickets[d.Ticket]
		if t == nil || t.Status != Waiting || t.Place != d.Place {
			return fmt.Errorf("queue: admission of ticket %s that is not waiting at place %d", d.Ticket, d.Place)
		}
		t.Status, t.TokenID, t.ClaimBy = Admitted, d.TokenID, d.ClaimBy
		r.line.Remove(int(t.Place))
		r.admitted++
	case *events.QueueClaimed:
		t := r.tickets[d.Ticket]
		if t == nil || t.Status != Admitted {
			return fmt.Errorf("queue: claim of ticket %s that is not admitted", d.Ticket)
		}
		t.Status = Claimed
	case *events.QueueLeft:
		t := r.tickets[d.Ticket]
		if t == nil || d.Reason == events.LeftNothing || (t.Status != Waiting && t.Status != Admitted && t.Status != Claimed) {
			return nil // a refused leave, or leaving twice, changes nothing
		}
		if t.Status == Waiting && t.Place >= 0 {
			r.line.Remove(int(t.Place))
		}
		if t.Status == Waiting && t.Place < 0 {
			r.preWait--
		}
		t.Status, t.Reason = Left, d.Reason
		if d.Reason == events.LeftIdle || d.Reason == events.LeftUnclaimed {
			t.Status = Expired
		}
		if r.byShopper[t.Shopper] == t {
			delete(r.byShopper, t.Shopper)
		}
	case *events.QueueClosed:
		r.closed = d.Reason
	case *events.SaleUpdated:
		// Reopening a closed sale reopens its queue: the tickets still
		// waiting are back in line. (Sold out is final.)
		if r.closed == events.ReasonClosed && (d.ClosesAt.IsZero() || d.ClosesAt.After(at)) {
			r.closed = ""
		}
	case *events.TokenIssued:
		if t := r.tickets[d.TokenID]; t != nil && !d.AlreadyIssued {
			t.TokenIssuedAt, t.TokenExpiresAt = d.IssuedAt, d.ExpiresAt
		}
	case *events.PurchaseAccepted:
		// Buying with the admission's token is taking it; the turn is done.
		if t := r.tickets[d.TokenID]; t != nil && (t.Status == Admitted || t.Status == Claimed) {
			t.Status = Claimed
			if r.byShopper[t.Shopper] == t {
				delete(r.byShopper, t.Shopper)
			}
		}
	case *events.TokenExpired:
		// A claimed turn whose token ran out unused is done.
		if t := r.tickets[d.TokenID]; t != nil && t.Status == Claimed && r.byShopper[t.Shopper] == t {
			delete(r.byShopper, t.Shopper)
		}
	}
	return nil
}

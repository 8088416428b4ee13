// Package handlers turns a sale's requests into decisions. The decision code
// (State.Decide) is pure: it reads the state, the requests and the decision
// time and nothing else, so the auditor re-runs it over the recorded requests
// and must get the recorded decisions back. The commit loop around it
// (Writer) owns all I/O.
package handlers

import (
	"container/heap"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/flashgate/flashgate/events"
)

// Sentinel errors for the outcomes a shopper can meet. ReasonError maps a
// decision's reason to one of them.
var (
	ErrNotOpen        = errors.New("sale is not open yet")
	ErrClosed         = errors.New("sale is closed")
	ErrSoldOut        = errors.New("sold out")
	ErrQuotaExhausted = errors.New("no purchase tokens left for now")
	ErrLimitReached   = errors.New("per-shopper limit reached")
	ErrTokenInvalid   = errors.New("purchase token is not valid for this sale")
	ErrTokenExpired   = errors.New("purchase token expired")
	ErrTokenUsed      = errors.New("purchase token already used")
	ErrTokenNotYours  = errors.New("purchase token belongs to another shopper")
	// ErrNotOwner means the writer lost the sale: another writer committed.
	ErrNotOwner = errors.New("not the owner of the sale")
)

// ReasonError returns the sentinel error for a TokenDenied or PurchaseRefused reason.
func ReasonError(reason string) error {
	switch reason {
	case events.ReasonNotOpen:
		return ErrNotOpen
	case events.ReasonClosed:
		return ErrClosed
	case events.ReasonSoldOut:
		return ErrSoldOut
	case events.ReasonQuotaExhausted:
		return ErrQuotaExhausted
	case events.ReasonLimitReached:
		return ErrLimitReached
	case events.ReasonTokenUnknown:
		return ErrTokenInvalid
	case events.ReasonTokenExpired:
		return ErrTokenExpired
	case events.ReasonTokenUsed:
		return ErrTokenUsed
	case events.ReasonTokenNotYours:
		return ErrTokenNotYours
	}
	return fmt.Errorf("unknown decision reason %q", reason)
}

// Sale is a sale's configuration as the decision code uses it.
type Sale struct {
	ID           string
	Stock        int64
	Quota        int64
	QuotaBuffer  float64
	PerUserLimit int64
	TokenTTL     time.Duration
	OpensAt      time.Time
	ClosesAt     time.Time // zero: never closes
	// The front's checks (the writer decides nothing by them).
	Challenge      *events.Challenge // human check before token requests; nil: none
	SignedRequests bool              // token and purchase requests carry an app's signature
	// Queue, if set, is the sale's waiting room: tokens only by admission.
	Queue *events.Queue
}

// Quota is ceil(stock x buffer), never below the stock. The buffer counts
// to six decimal places, in integers, so that 100 x 1.1 is 110 and not the
// 111 that floating point would give.
func Quota(stock int64, buffer float64) int64 {
	const scale = 1_000_000
	b := int64(math.Round(buffer * scale))
	q := (stock*b + scale - 1) / scale
	return max(q, stock)
}

// SaleFromEvent reads a SaleCreated event.
func SaleFromEvent(e events.Event) (Sale, error) {
	d, ok := e.Data.(*events.SaleCreated)
	if !ok {
		return Sale{}, fmt.Errorf("sale %s: event %s is a %s, not SaleCreated", e.Sale, e.ID, e.Type)
	}
	return Sale{ID: e.Sale, Stock: d.Stock, Quota: d.Quota, QuotaBuffer: d.QuotaBuffer, PerUserLimit: d.PerUserLimit,
		TokenTTL: time.Duration(d.TokenTTL), OpensAt: d.OpensAt, ClosesAt: d.ClosesAt,
		Challenge: d.Challenge, SignedRequests: d.SignedRequests, Queue: d.Queue}, nil
}

// Status is what a sale looks like to a shopper at a moment.
type Status string

// Sale states.
const (
	StatusScheduled Status = "scheduled"
	StatusOpen      Status = "open"
	StatusSoldOut   Status = "sold_out"
	StatusClosed    Status = "closed"
)

// StatusAt is the sale's state at now, given its head.
func (s Sale) StatusAt(now time.Time, h events.Head) Status {
	switch {
	case !s.ClosesAt.IsZero() && !now.Before(s.ClosesAt):
		return StatusClosed
	case h.StockLeft() <= 0:
		return StatusSoldOut
	case now.Before(s.OpensAt):
		return StatusScheduled
	}
	return StatusOpen
}

type token struct {
	id        string
	shopper   string
	issuedAt  time.Time
	expiresAt time.Time
	orderID   string // set once redeemed
	heapIdx   int    // position in the expiry heap; -1 once out of it
}

type shopperState struct {
	bought int64
	token  *token // the outstanding token, if any
}

// State is one sale's decision state: its head and who holds what. Its
// memory is bounded by the tokens outstanding plus the units sold: expired
// tokens and shoppers with nothing left are dropped.
type State struct {
	Sale     Sale
	Head     events.Head
	tokens   map[string]*token        // outstanding and redeemed tokens
	shoppers map[string]*shopperState // shoppers holding a token or having bought
	expiry   expiryHeap               // outstanding tokens, soonest first
	redeemed []*token                 // redeemed tokens in the order of their purchase (append only: a snapshot shares it)
	q        *queueState              // the waiting room; nil without one
	seed     func() uint64            // the shuffle's seed source; nil: crypto/rand
}

// NewState returns the state of a sale before any decision.
func NewState(s Sale) *State {
	st := &State{
		Sale:     s,
		Head:     events.Head{Stock: s.Stock, Quota: s.Quota, OpensAtNs: s.OpensAt.UnixNano(), ClosesAtNs: unixNano(s.ClosesAt)},
		tokens:   make(map[string]*token),
		shoppers: make(map[string]*shopperState),
	}
	st.initQueue()
	return st
}

// NextWake is when the sale next needs a batch with no request: a token's
// expiry, or the waiting room's next step (the opening, a claim deadline,
// the next admission).
func (s *State) NextWake(now time.Time) (time.Time, bool) {
	at, ok := s.NextExpiry()
	if s.q != nil {
		if w, qok := s.nextQueueWake(now); qok && (!ok || w.Before(at)) {
			at, ok = w, true
		}
	}
	return at, ok
}

// NextExpiry is when the soonest outstanding token expires.
func (s *State) NextExpiry() (time.Time, bool) {
	if len(s.expiry) == 0 {
		return time.Time{}, false
	}
	return s.expiry[0].expiresAt, true
}

// TokenExpiry returns the expiry of a token that was issued at now with the
// sale's TTL: rounded up to the whole second, since JWT times are seconds.
func (s *State) TokenExpiry(now time.Time) time.Time {
	t := now.Add(s.Sale.TokenTTL)
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second)
	}
	return t
}

// Decide decides one batch at the decision time now: first it reclaims every
// outstanding token expired by now, then it decides each request in order.
// It returns the decision events and updates the state, Head included (the
// caller sets Head.Version and Head.Cursor). Events for another sale and
// non-request events are skipped, as RequestsOf would have dropped them.
func (s *State) Decide(now time.Time, reqs []events.Event) []events.Event {
	out := s.expire(now, make([]events.Event, 0, len(reqs)))
	if s.q != nil {
		out = s.queueBefore(now, out)
	}
	for _, r := range reqs {
		if r.Sale != s.Sale.ID {
			continue
		}
		switch d := r.Data.(type) {
		case *events.TokenRequested:
			if s.q != nil {
				out = append(out, decision(now, r, events.TypeTokenDenied, &events.TokenDenied{Reason: ReasonQueueRequired}))
				continue
			}
			e := s.decideToken(now, r, &out)
			out = append(out, e)
		case *events.PurchaseRequested:
			e := s.decidePurchase(now, r, d)
			if s.q != nil {
				_ = s.q.room.Apply(e, now)
			}
			out = append(out, e)
		case *events.SaleUpdateRequested:
			e := s.decideUpdate(now, r, d)
			out = append(out, e)
			if s.q != nil {
				_ = s.q.room.Apply(e, now)     // a reopening reopens a closed queue
				out = s.shuffleIfDue(now, out) // opened now: the joins after it are in arrival order
			}
		case *events.QueueJoinRequested:
			if s.q == nil {
				out = append(out, decision(now, r, events.TypeQueueJoinDenied, &events.QueueJoinDenied{Reason: "no_queue"}))
				continue
			}
			out = append(out, s.decideJoin(now, r))
		case *events.QueueLeaveRequested:
			if s.q == nil {
				out = append(out, decision(now, r, events.TypeQueueLeft, &events.QueueLeft{Ticket: d.Ticket, Reason: events.LeftNothing}))
				continue
			}
			e := s.decideLeave(now, r, d, &out)
			out = append(out, e)
		case *events.QueueSeenRequested:
			if s.q != nil {
				if e, ok := s.decideSeen(now, r, d); ok {
					out = append(out, e)
				}
			}
		case *events.QueueClaimRequested:
			if s.q != nil {
				if e, ok := s.decideClaim(now, r, d); ok {
					out = append(out, e)
				}
			}
		}
	}
	if s.q != nil {
		out = s.admit(now, out)
	}
	return out
}

// MaxExpiriesPerBatch caps the tokens one batch reclaims, so that a batch
// stays small however many tokens run out at the same second; the rest are
// reclaimed by the batches that follow at once. It is part of the decision
// code: changing it changes what a re-run reproduces.
const MaxExpiriesPerBatch = 512

func (s *State) expire(now time.Time, out []events.Event) []events.Event {
	for n := 0; n < MaxExpiriesPerBatch && len(s.expiry) > 0 && !now.Before(s.expiry[0].expiresAt); n++ {
		out = s.reclaim(now, heap.Pop(&s.expiry).(*token), out)
	}
	return out
}

// reclaim takes back an expired token (already out of the expiry heap) and
// records it.
func (s *State) reclaim(now time.Time, t *token, out []events.Event) []events.Event {
	s.drop(t)
	e := events.Event{
		ID: events.DerivedIDOf(now, "expire:", t.id), Type: events.TypeTokenExpired, Version: events.SchemaVersion,
		Sale: s.Sale.ID, Time: now, Shopper: t.shopper,
		Data: &events.TokenExpired{TokenID: t.id, ExpiresAt: t.expiresAt},
	}
	if s.q != nil {
		_ = s.q.room.Apply(e, now) // a claimed turn's token ran out: the turn is done
	}
	return append(out, e)
}

func decision(now time.Time, r events.Event, typ events.Type, data any) events.Event {
	return events.Event{
		ID: events.DerivedIDOf(now, "decide:", r.ID), Type: typ, Version: events.SchemaVersion,
		Sale: r.Sale, Time: now, Shopper: r.Shopper, Request: r.ID, Data: data,
	}
}

// open returns the reason the sale takes no request at now, or "".
// drop forgets an expired token (already out of the expiry heap): its quota
// comes back, and a shopper who holds nothing and bought nothing is dropped.
func (s *State) drop(t *token) {
	delete(s.tokens, t.id)
	if sh := s.shoppers[t.shopper]; sh != nil {
		sh.token = nil
		if sh.bought == 0 {
			delete(s.shoppers, t.shopper)
		}
	}
	s.Head.Expired++
}

func (s *State) open(now time.Time) string {
	switch { // closed first, as StatusAt: a sale closed before it opened is closed
	case !s.Sale.ClosesAt.IsZero() && !now.Before(s.Sale.ClosesAt):
		return events.ReasonClosed
	case now.Before(s.Sale.OpensAt):
		return events.ReasonNotOpen
	}
	return ""
}

func (s *State) decideToken(now time.Time, r events.Event, out *[]events.Event) events.Event {
	deny := func(reason string) events.Event {
		return decision(now, r, events.TypeTokenDenied, &events.TokenDenied{Reason: reason})
	}
	if reason := s.open(now); reason != "" {
		return deny(reason)
	}
	sh := s.settle(now, r.Shopper, out)
	if sh != nil && sh.token != nil {
		t := sh.token
		return decision(now, r, events.TypeTokenIssued, &events.TokenIssued{
			TokenID: t.id, IssuedAt: t.issuedAt, ExpiresAt: t.expiresAt, AlreadyIssued: true})
	}
	switch {
	case sh != nil && sh.bought >= s.Sale.PerUserLimit:
		return deny(events.ReasonLimitReached)
	case s.Head.StockLeft() <= 0:
		return deny(events.ReasonSoldOut)
	case s.Head.QuotaLeft() <= 0:
		return deny(events.ReasonQuotaExhausted)
	}
	t := s.issueTo(sh, r.ID, r.Shopper, now, s.TokenExpiry(now))
	return decision(now, r, events.TypeTokenIssued, &events.TokenIssued{TokenID: t.id, IssuedAt: now, ExpiresAt: t.expiresAt})
}

// issue records a new outstanding token for Decide (a token request, an
// admission) and Apply alike, through issueTo: the one place a token comes
// to be.
func (s *State) issue(id, shopper string, issuedAt, expiresAt time.Time) *token {
	return s.issueTo(s.shoppers[shopper], id, shopper, issuedAt, expiresAt)
}

// issueTo is issue for a shopper already looked up: sh is their state, nil
// if they have none (a lookup fewer in the flood's path).
func (s *State) issueTo(sh *shopperState, id, shopper string, issuedAt, expiresAt time.Time) *token {
	t := &token{id: id, shopper: shopper, issuedAt: issuedAt, expiresAt: expiresAt}
	if sh == nil {
		sh = &shopperState{}
		s.shoppers[shopper] = sh
	}
	sh.token = t
	s.tokens[t.id] = t
	heap.Push(&s.expiry, t)
	s.Head.Issued++
	return t
}

// reclaimEarly takes back an outstanding token before the expiry heap
// reaches it (a leave, an unclaimed turn, an expiry past the batch cap).
func (s *State) reclaimEarly(now time.Time, t *token, out []events.Event) []events.Event {
	heap.Remove(&s.expiry, t.heapIdx)
	return s.reclaim(now, t, out)
}

// settle returns the shopper, first reclaiming their token if it expired
// but was not reclaimed yet (the per-batch cap), so that nobody is handed,
// or kept from a turn by, an expired token.
func (s *State) settle(now time.Time, shopper string, out *[]events.Event) *shopperState {
	sh := s.shoppers[shopper]
	if sh != nil && sh.token != nil && !now.Before(sh.token.expiresAt) {
		*out = s.reclaimEarly(now, sh.token, *out)
		sh = s.shoppers[shopper]
	}
	return sh
}

func (s *State) decidePurchase(now time.Time, r events.Event, d *events.PurchaseRequested) events.Event {
	refuse := func(reason, orderID string) events.Event {
		return decision(now, r, events.TypePurchaseRefused,
			&events.PurchaseRefused{TokenID: d.TokenID, Reason: reason, OrderID: orderID})
	}
	// The token is looked at first, so that a retried purchase (a double
	// click, a lost reply) always learns the order its token bought, even
	// after the sale sold out or closed.
	t := s.tokens[d.TokenID]
	switch {
	case t == nil:
		// The front has checked the signature, so the token was issued by
		// this sale's writer: not being held any more, it expired and was
		// reclaimed (redeemed tokens stay known).
		if reason := s.open(now); reason != "" {
			return refuse(reason, "")
		}
		return refuse(events.ReasonTokenExpired, "")
	case t.shopper != r.Shopper:
		return refuse(events.ReasonTokenNotYours, "")
	case t.orderID != "":
		return refuse(events.ReasonTokenUsed, t.orderID)
	}
	if reason := s.open(now); reason != "" {
		return refuse(reason, "")
	}
	switch {
	case !now.Before(t.expiresAt):
		return refuse(events.ReasonTokenExpired, "") // expired, not reclaimed yet (the per-batch cap)
	case s.Head.StockLeft() <= 0:
		return refuse(events.ReasonSoldOut, "")
	}
	s.redeem(t, r.ID)
	return decision(now, r, events.TypePurchaseAccepted, &events.PurchaseAccepted{TokenID: t.id, OrderID: r.ID, Units: 1})
}

// redeem records the purchase of an outstanding token: the one place a
// token is used, for Decide and Apply alike. A shopper's purchases are
// exactly their redeemed tokens (a snapshot rebuilds the shoppers from the
// tokens).
func (s *State) redeem(t *token, orderID string) {
	t.orderID = orderID
	heap.Remove(&s.expiry, t.heapIdx)
	sh := s.shoppers[t.shopper]
	sh.token = nil
	sh.bought++
	s.Head.Redeemed++
	s.redeemed = append(s.redeemed, t)
}

// decideUpdate opens or closes the sale at now. Opening moves a later
// opening to now and reopens a closed sale; closing sets the close to now.
// An unknown action changes nothing (the answer still records the schedule).
func (s *State) decideUpdate(now time.Time, r events.Event, d *events.SaleUpdateRequested) events.Event {
	switch d.Action {
	case events.ActionOpen:
		if now.Before(s.Sale.OpensAt) {
			s.Sale.OpensAt = now
		}
		if !s.Sale.ClosesAt.IsZero() && !now.Before(s.Sale.ClosesAt) {
			s.Sale.ClosesAt = time.Time{}
		}
	case events.ActionClose:
		if s.Sale.ClosesAt.IsZero() || now.Before(s.Sale.ClosesAt) {
			s.Sale.ClosesAt = now
		}
	}
	s.setSchedule(s.Sale.OpensAt, s.Sale.ClosesAt)
	return decision(now, r, events.TypeSaleUpdated, &events.SaleUpdated{OpensAt: s.Sale.OpensAt, ClosesAt: s.Sale.ClosesAt})
}

func (s *State) setSchedule(opens, closes time.Time) {
	s.Sale.OpensAt, s.Sale.ClosesAt = opens, closes
	s.Head.OpensAtNs, s.Head.ClosesAtNs = opens.UnixNano(), unixNano(closes)
}

// unixNano is t in Unix nanoseconds, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// Schedule returns the opening and closing times a head records (zero
// closing: never), or ok=false for a head written before it recorded them.
func Schedule(h events.Head) (opens, closes time.Time, ok bool) {
	if h.OpensAtNs == 0 {
		return time.Time{}, time.Time{}, false
	}
	opens = time.Unix(0, h.OpensAtNs).UTC()
	if h.ClosesAtNs != 0 {
		closes = time.Unix(0, h.ClosesAtNs).UTC()
	}
	return opens, closes, true
}

// Apply folds a committed decision batch into the state without deciding:
// this is how a writer rebuilds a sale from its decision history. It checks
// that the batch's head matches the counters the decisions imply.
func (s *State) Apply(db events.DecisionBatch) error {
	for _, e := range db.Events {
		switch d := e.Data.(type) {
		case *events.TokenIssued:
			if d.AlreadyIssued {
				continue
			}
			s.issue(d.TokenID, e.Shopper, d.IssuedAt, d.ExpiresAt)
		case *events.TokenExpired:
			t := s.tokens[d.TokenID]
			if t == nil || t.orderID != "" {
				return fmt.Errorf("sale %s batch %d: expiry of token %s that is not outstanding", s.Sale.ID, db.Head.Version, d.TokenID)
			}
			heap.Remove(&s.expiry, t.heapIdx)
			s.drop(t)
		case *events.SaleUpdated:
			s.setSchedule(d.OpensAt, d.ClosesAt)
		case *events.PurchaseAccepted:
			t := s.tokens[d.TokenID]
			if t == nil || t.orderID != "" {
				return fmt.Errorf("sale %s batch %d: purchase with token %s that is not outstanding", s.Sale.ID, db.Head.Version, d.TokenID)
			}
			s.redeem(t, d.OrderID)
		}
	}
	if s.q != nil {
		if err := s.applyQueueBatch(db); err != nil {
			return fmt.Errorf("sale %s batch %d: %w", s.Sale.ID, db.Head.Version, err)
		}
	}
	got := s.Head
	got.Version, got.Cursor = db.Head.Version, db.Head.Cursor
	if !got.Same(db.Head) {
		return fmt.Errorf("sale %s batch %d: head %+v does not match its decisions (%+v)", s.Sale.ID, db.Head.Version, db.Head, got)
	}
	s.Head = got // keeps the schedule even where an older head did not record it
	return nil
}

// Sizes reports how many tokens and shoppers the state holds (for tests and metrics).
func (s *State) Sizes() (tokens, shoppers, expiring int) {
	return len(s.tokens), len(s.shoppers), len(s.expiry)
}

// RequestsOf decodes a request message of a sale's request subject and keeps
// the requests that belong to sale. A message that does not decode holds no
// request: the writer and the auditor skip it alike. A message written by a
// newer flashgate (an event version or type this build does not know) is an
// error instead: skipping it would leave its requests undecided forever, so
// this build must stop and leave the sale to a newer one.
func RequestsOf(sale string, data []byte) ([]events.Event, error) {
	rb, err := events.DecodeRequests(data)
	if events.TooNew(err) {
		return nil, fmt.Errorf("sale %s: requests written by a newer flashgate: %w", sale, err)
	}
	if err != nil {
		return nil, nil
	}
	out := rb.Requests[:0]
	for _, r := range rb.Requests {
		if r.Sale == sale {
			out = append(out, r)
		}
	}
	return out, nil
}

// expiryHeap orders outstanding tokens by expiry, then id, so that the order
// of reclaims is deterministic.
type expiryHeap []*token

func (h expiryHeap) Len() int { return len(h) }
func (h expiryHeap) Less(i, j int) bool {
	if !h[i].expiresAt.Equal(h[j].expiresAt) {
		return h[i].expiresAt.Before(h[j].expiresAt)
	}
	return h[i].id < h[j].id
}
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *expiryHeap) Push(x any) {
	t := x.(*token)
	t.heapIdx = len(*h)
	*h = append(*h, t)
}
func (h *expiryHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.heapIdx = -1
	return t
}

// Package fulfil hands accepted purchases to the fulfilment provider and
// records what became of them.
//
// Every PurchaseAccepted decision becomes an order message on the orders
// work queue (Intake, a durable consumer of the decisions shared by all
// processes). The Worker, a durable consumer of that queue shared by all
// processes, sends each order to the provider with the broker's shared
// token, the order id as idempotency key, and retries with backoff and
// jitter. Outcomes are events on the order's own subject
// (events.OrderSubject), appended with the expected last sequence of that
// subject: an order is confirmed at most once however many processes, retries
// and crashes touch it. An order that fails MaxAttempts times or outlives
// its deadline goes to the dead-letter stream, from where an operator sends
// it back (Requeue).
package fulfil

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// workVersion is the version of Work and Dead on the wire.
const workVersion = 1

// Work is an order waiting for the provider: the message on
// events.WorkSubject(sale).
type Work struct {
	V          int       `json:"v"`
	Order      string    `json:"order"` // the order id: the purchase request's id, the provider's idempotency key
	Sale       string    `json:"sale"`
	Shopper    string    `json:"shopper"`
	TokenID    string    `json:"tokenId"`
	Units      int64     `json:"units"`
	AcceptedAt time.Time `json:"acceptedAt"`
	Deadline   time.Time `json:"deadline"`          // not confirmed by then: given up
	Requeue    int       `json:"requeue,omitempty"` // times an operator sent it back
	From       uint64    `json:"from,omitempty"`    // the dead-letter entry it was sent back from
}

// newerError says a message was written by a newer build.
type newerError struct{ v int }

func (e *newerError) Error() string {
	return fmt.Sprintf("order message version %d, this build knows 1..%d", e.v, workVersion)
}

func (w *Work) check() error {
	switch {
	case w.V > workVersion:
		return &newerError{w.V}
	case w.V != workVersion:
		return fmt.Errorf("order message version %d, this build knows %d", w.V, workVersion)
	case !events.ValidOrderID(w.Order) || !events.ValidSaleID(w.Sale) || w.Shopper == "" || w.Units < 1 || w.Deadline.IsZero():
		return fmt.Errorf("malformed order message for order %q of sale %q", w.Order, w.Sale)
	}
	return nil
}

// msgID is the Nats-Msg-Id of the work message: the intake's retries (and
// every process's intake, if a batch were delivered twice) put one message
// on the queue, not several; so do the retries of one requeue.
func (w *Work) msgID() string {
	if w.Requeue == 0 {
		return "order:" + w.Order
	}
	return fmt.Sprintf("order:%s:requeue:%d", w.Order, w.From)
}

// Dead is an order given up: the message on events.DLQSubject(sale, order).
type Dead struct {
	V        int       `json:"v"`
	Work     Work      `json:"work"`
	Reason   string    `json:"reason"` // events.OrderFailed*
	Attempts int       `json:"attempts"`
	Error    string    `json:"error,omitempty"`
	FailedAt time.Time `json:"failedAt"`
}

// Status is where an order stands, from its last outcome event.
type Status string

// The statuses. Delayed is not stored: it is an order not yet final while
// the provider bans us.
const (
	StatusAccepted  Status = "accepted"  // no outcome yet
	StatusRetrying  Status = "retrying"  // a call failed; it is tried again
	StatusConfirmed Status = "confirmed" // the provider has it: final
	StatusFailed    Status = "failed"    // given up; in the dead-letter stream
	StatusPending   Status = "pending"   // requeued by an operator
	StatusDelayed   Status = "delayed"   // waiting for the provider's ban to end
)

// State is an order's fulfilment state.
type State struct {
	Status    Status    `json:"status"`
	Attempts  int       `json:"attempts"`            // failed calls since acceptance or requeue
	Reference string    `json:"reference,omitempty"` // the provider's id, once confirmed
	Error     string    `json:"error,omitempty"`     // the last failure
	RetryAt   time.Time `json:"retryAt,omitzero"`    // the next try, while retrying
	Reason    string    `json:"reason,omitempty"`    // why it failed
	Seq       uint64    `json:"-"`                   // stream sequence of the last outcome event; 0: none
	Last      events.Event
}

// Final reports whether nothing more will happen without an operator.
func (s State) Final() bool { return s.Status == StatusConfirmed || s.Status == StatusFailed }

// StateOf folds an order's last outcome event (seq 0: none) into its state.
func StateOf(e *events.Event, seq uint64) State {
	if e == nil {
		return State{Status: StatusAccepted}
	}
	s := State{Seq: seq, Last: *e}
	switch d := e.Data.(type) {
	case *events.OrderAttemptFailed:
		s.Status, s.Attempts, s.Error, s.RetryAt = StatusRetrying, d.Attempt, d.Error, d.RetryAt
	case *events.OrderConfirmed:
		s.Status, s.Reference = StatusConfirmed, d.Reference
	case *events.OrderFailed:
		s.Status, s.Attempts, s.Error, s.Reason = StatusFailed, d.Attempts, d.Error, d.Reason
	case *events.OrderRequeued:
		s.Status = StatusPending
	default:
		s.Status = StatusAccepted
	}
	return s
}

// ReadState reads an order's state from its last outcome event.
func ReadState(ctx context.Context, st jetstream.Stream, sale, order string) (State, error) {
	m, err := st.GetLastMsgForSubject(ctx, events.OrderSubject(sale, order))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return StateOf(nil, 0), nil
	}
	if err != nil {
		return State{}, fmt.Errorf("read order %s: %w", order, err)
	}
	e, err := events.DecodeEvent(m.Data)
	if err != nil {
		return State{}, fmt.Errorf("read order %s at %d: %w", order, m.Sequence, err)
	}
	if !e.Type.IsOrder() || e.Request != order || e.Sale != sale {
		return State{}, fmt.Errorf("read order %s at %d: %w: a %s for %s", order, m.Sequence, events.ErrMalformed, e.Type, e.Request)
	}
	return StateOf(&e, m.Sequence), nil
}

// errMoved says the order's subject changed since it was read.
var errMoved = errors.New("the order's state moved on")

// appendOutcome appends e to the order's subject if its last event is still
// the one at seq. If the stream refuses, it reads the subject again: the
// event may be there already (a retried publish whose first try landed).
func appendOutcome(ctx context.Context, js jetstream.JetStream, st jetstream.Stream, e events.Event, seq uint64) (uint64, error) {
	b, err := events.EncodeEvent(e)
	if err != nil {
		return 0, err
	}
	subj := events.OrderSubject(e.Sale, e.Request)
	ack, err := js.Publish(ctx, subj, b, jetstream.WithExpectLastSequencePerSubject(seq), jetstream.WithMsgID(e.ID))
	if err == nil {
		return ack.Sequence, nil
	}
	if !stream.IsWrongLastSequence(err) {
		return 0, fmt.Errorf("append %s for order %s: %w", e.Type, e.Request, err)
	}
	now, rerr := ReadState(ctx, st, e.Sale, e.Request)
	if rerr != nil {
		return 0, rerr
	}
	if now.Last.ID == e.ID {
		return now.Seq, nil
	}
	return 0, errMoved
}

func decodeWork(b []byte) (Work, error) {
	var w Work
	if err := json.Unmarshal(b, &w); err != nil {
		return Work{}, fmt.Errorf("order message: %w", err)
	}
	return w, w.check()
}

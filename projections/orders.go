package projections

import (
	"database/sql"
	"errors"
	"fmt"

	"github.com/flashgate/flashgate/events"
)

// orderState is the part of an order its fulfilment events change.
type orderState struct {
	status                         string
	attempts                       int
	reference, lastErr, failReason string
}

// open reports whether the order may still be tried: accepted, retrying or
// requeued.
func (o orderState) open() bool {
	return o.status == StatusAccepted || o.status == StatusRetrying || o.status == StatusPending
}

// step is the order after fulfilment event e. A transition the worker
// cannot make (anything after the confirmation, a requeue of an order that
// has not failed, ...) is refused: wrong is why, and the order is left as
// it was. odd is what is wrong with an event that is still folded (an
// attempt number out of sequence).
//
// attempts are the failed calls since the order was accepted or last
// requeued, as the events report them: an OrderAttemptFailed's Attempt, or
// an OrderFailed's Attempts, or an OrderConfirmed's Attempts less the call
// that succeeded, whichever is more; a requeue starts them again.
func (o orderState) step(e events.Event) (next orderState, wrong, odd string) {
	next = o
	switch x := e.Data.(type) {
	case *events.OrderAttemptFailed:
		if !o.open() {
			break
		}
		if x.Attempt != o.attempts+1 {
			odd = fmt.Sprintf("OrderAttemptFailed %s of order %s is attempt %d, after %d failed", e.ID, e.Request, x.Attempt, o.attempts)
		}
		next.status, next.attempts, next.lastErr = StatusRetrying, x.Attempt, x.Error
		return next, "", odd
	case *events.OrderConfirmed:
		if o.status == StatusConfirmed {
			return o, fmt.Sprintf("OrderConfirmed %s confirms order %s again", e.ID, e.Request), ""
		}
		if !o.open() {
			break
		}
		next.status, next.reference, next.attempts = StatusConfirmed, x.Reference, max(o.attempts, x.Attempts-1)
		return next, "", ""
	case *events.OrderFailed:
		if !o.open() {
			break
		}
		next.status, next.failReason, next.attempts = StatusFailed, x.Reason, max(o.attempts, x.Attempts)
		if x.Error != "" {
			next.lastErr = x.Error
		}
		return next, "", ""
	case *events.OrderRequeued:
		if o.status != StatusFailed {
			break
		}
		next.status, next.attempts, next.failReason = StatusPending, 0, ""
		return next, "", ""
	default:
		return o, fmt.Sprintf("%s %s is no order event", e.Type, e.ID), ""
	}
	if o.status == StatusConfirmed {
		return o, fmt.Sprintf("%s %s for order %s after its OrderConfirmed", e.Type, e.ID, e.Request), ""
	}
	return o, fmt.Sprintf("%s %s for order %s, which is %s", e.Type, e.ID, e.Request, o.status), ""
}

// ordInfo is an order as folding its fulfilment events needs it.
type ordInfo struct {
	orderState
	sale, shopper string
	found         bool // whether the order exists
	row           int  // its row in the orders buffer, -1 if written
}

// order looks up an order, found false if the views do not hold it.
func (a *applier) order(id string) (o *ordInfo, found bool, err error) {
	if o, ok := a.ords[id]; ok {
		return o, o.found, nil
	}
	var sale, shopper, status, ref, lastErr, reason sql.NullString
	var attempts sql.NullInt64
	err = a.st.orderOf.QueryRowContext(a.ctx, id).Scan(&sale, &shopper, &status, &attempts, &ref, &lastErr, &reason)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		o = &ordInfo{row: -1}
	case err != nil:
		return nil, false, err
	default:
		o = &ordInfo{orderState: orderState{status: status.String, attempts: int(attempts.Int64), reference: ref.String,
			lastErr: lastErr.String, failReason: reason.String}, sale: sale.String, shopper: shopper.String, found: true, row: -1}
	}
	a.ords[id] = o
	return o, o.found, nil
}

// setOrder writes order o's new state, whose last event has time at (as
// stored).
func (a *applier) setOrder(id string, o *ordInfo, next orderState, at string) error {
	o.orderState = next
	ref, lastErr, reason := nullStr(next.reference), nullStr(next.lastErr), nullStr(next.failReason)
	if o.row >= 0 { // not written yet: write it as it is now
		v := a.bufs[ordersTable].vals[o.row*tables[ordersTable].cols:]
		v[6], v[8], v[9], v[10], v[11], v[12] = next.status, ref, next.attempts, lastErr, reason, at
		return nil
	}
	_, err := a.st.updOrder.ExecContext(a.ctx, next.status, ref, next.attempts, lastErr, reason, at, id)
	return err
}

// orderEvent folds a message on an order's subject fg.ord.<sale>.<order>:
// one fulfilment event of the order. An event that does not fit the
// order (an order never accepted, of another sale or shopper, a transition
// the worker cannot make) is recorded and changes nothing.
func (a *applier) orderEvent(m Msg, subjSale, subjOrder string) error {
	e, err := events.DecodeEvent(m.Data)
	if err != nil {
		return a.anomaly(subjSale, "undecodable order message on %s: %v", m.Subject, err)
	}
	at := fmtTime(e.Time)
	if err := a.trail(0, e, at); err != nil {
		return err
	}
	if !e.Type.IsOrder() {
		return a.anomaly(subjSale, "event %s on %s is a %s, not an order event", e.ID, m.Subject, e.Type)
	}
	if e.Sale != subjSale || e.Request != subjOrder {
		return a.anomaly(subjSale, "%s %s on %s names order %s of sale %s", e.Type, e.ID, m.Subject, e.Request, e.Sale)
	}
	o, found, err := a.order(e.Request)
	switch {
	case err != nil:
		return err
	case !found:
		return a.anomaly(e.Sale, "%s %s for order %s, which was never accepted", e.Type, e.ID, e.Request)
	case o.sale != e.Sale:
		return a.anomaly(e.Sale, "%s %s names sale %s, order %s is of sale %s", e.Type, e.ID, e.Sale, e.Request, o.sale)
	case o.shopper != e.Shopper:
		return a.anomaly(e.Sale, "%s %s names shopper %q, order %s is %q's", e.Type, e.ID, e.Shopper, e.Request, o.shopper)
	}
	next, wrong, odd := o.step(e)
	if wrong != "" {
		return a.anomaly(e.Sale, "%s", wrong)
	}
	if odd != "" {
		if err := a.anomaly(e.Sale, "%s", odd); err != nil {
			return err
		}
	}
	return a.setOrder(e.Request, o, next, at)
}

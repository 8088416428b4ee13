package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/fulfil"
	"github.com/flashgate/flashgate/projections"
)

// Orders is the fulfilment side of the order routes: where an order stands
// at the provider, and the dead-letter stream.
type Orders interface {
	// State reads an order's fulfilment state from the stream.
	State(ctx context.Context, sale, order string) (fulfil.State, error)
	// Watch follows an order (see fulfil.Hub.Watch).
	Watch(ctx context.Context, sale, order string) (fulfil.State, <-chan fulfil.State, func(), error)
	// BannedUntil is when the provider's ban ends (zero: no ban).
	BannedUntil() time.Time
	ListDead(ctx context.Context, sale string, limit int) ([]fulfil.DeadOrder, int, error)
	Requeue(ctx context.Context, order, by string) (fulfil.Work, error)
}

// Bounds of the order streams.
const (
	MaxOrderStreamsPerShopper = 4
	orderStreamMax            = 30 * time.Minute // then the client reconnects (EventSource does)
	orderBanCheck             = time.Second
)

// orderJSON is an order as shoppers and operators see it.
type orderJSON struct {
	OrderID      string    `json:"orderId"`
	Sale         string    `json:"sale"`
	Status       string    `json:"status"` // accepted, retrying, delayed, confirmed, failed, pending
	TokenID      string    `json:"tokenId,omitempty"`
	Units        int64     `json:"units"`
	CreatedAt    time.Time `json:"createdAt,omitzero"`
	Reference    string    `json:"reference,omitempty"`
	Attempts     int       `json:"attempts"`
	Error        string    `json:"error,omitempty"`
	RetryAt      time.Time `json:"retryAt,omitzero"`
	DelayedUntil time.Time `json:"delayedUntil,omitzero"`
	FailedReason string    `json:"failedReason,omitempty"`
}

// orderBase finds an order of shopper: from the front's recent decisions,
// else from the orders view. ok is false for an order that is not the
// shopper's or not known (yet).
func (a *api) orderBase(ctx context.Context, id, shopper string) (orderJSON, bool, error) {
	if d, ok := a.Front.Recent(id); ok {
		pa, isOrder := d.Data.(*events.PurchaseAccepted)
		if !isOrder || d.Shopper != shopper {
			return orderJSON{}, false, nil
		}
		return orderJSON{OrderID: id, Sale: d.Sale, TokenID: pa.TokenID, Units: pa.Units, CreatedAt: d.Time, Status: string(fulfil.StatusAccepted)}, true, nil
	}
	o, err := a.Store.Order(ctx, id)
	if errors.Is(err, projections.ErrNotFound) || (err == nil && o.Shopper != shopper) {
		return orderJSON{}, false, nil
	}
	if err != nil {
		return orderJSON{}, false, err
	}
	return orderJSON{OrderID: o.ID, Sale: o.Sale, TokenID: o.TokenID, Units: o.Units, CreatedAt: o.CreatedAt, Status: o.Status,
		Reference: o.Reference, Attempts: o.Attempts, Error: o.LastError, FailedReason: o.FailedReason}, true, nil
}

// withState sets the order's fulfilment fields from s, and "delayed" while
// the provider bans us.
func (a *api) withState(o orderJSON, s fulfil.State) orderJSON {
	o.Status, o.Reference, o.Attempts, o.Error, o.RetryAt, o.FailedReason = string(s.Status), s.Reference, s.Attempts, s.Error, s.RetryAt, s.Reason
	o.DelayedUntil = time.Time{}
	if a.Orders != nil && !s.Final() {
		if until := a.Orders.BannedUntil(); until.After(time.Now()) { // the provider's time: the wall clock
			o.Status, o.DelayedUntil = string(fulfil.StatusDelayed), until.UTC()
		}
	}
	return o
}

var errNoOrder = newError(http.StatusNotFound, "order_not_found", "no such order (yet)")

// order answers GET /api/v1/orders/{id}: the order and where it stands at
// the provider.
func (a *api) order(w http.ResponseWriter, r *http.Request, shopper string) error {
	o, ok, err := a.orderBase(r.Context(), r.PathValue("id"), shopper)
	if err != nil {
		return err
	}
	if !ok {
		return errNoOrder
	}
	if a.Orders != nil {
		s, err := a.Orders.State(r.Context(), o.Sale, o.OrderID)
		if err != nil {
			return err
		}
		o = a.withState(o, s)
	}
	writeJSON(w, http.StatusOK, o)
	return nil
}

// orderEvents answers GET /api/v1/orders/{id}/events: Server-Sent Events
// named "order" carrying the order's JSON, at once and at every change
// (confirmed, retrying, delayed by a ban, failed, requeued). A confirmed
// order ends the stream.
func (a *api) orderEvents(w http.ResponseWriter, r *http.Request, shopper string) error {
	if a.Orders == nil {
		return newError(http.StatusNotFound, "not_found", "order streams are not served here")
	}
	o, ok, err := a.orderBase(r.Context(), r.PathValue("id"), shopper)
	if err != nil {
		return err
	}
	if !ok {
		return errNoOrder
	}
	if !a.orderStreamsPer.take(shopper) {
		return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
			Message: fmt.Sprintf("at most %d order streams per shopper; close one, or retry", MaxOrderStreamsPerShopper), RetryAfter: 5}
	}
	defer a.orderStreamsPer.give(shopper)
	now, changes, stop, err := a.Orders.Watch(r.Context(), o.Sale, o.OrderID)
	if errors.Is(err, fulfil.ErrTooManyWatches) {
		return &Error{Status: http.StatusServiceUnavailable, Code: "too_many_streams",
			Message: "too many order streams open on this server; poll GET /api/v1/orders/{id} instead, or retry", RetryAfter: 5}
	}
	if err != nil {
		return err
	}
	defer stop()
	s := &sse{w: w, rc: http.NewResponseController(w)}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	keep := time.NewTicker(queueKeepAlive)
	defer keep.Stop()
	ban := time.NewTicker(orderBanCheck)
	defer ban.Stop()
	end := time.NewTimer(orderStreamMax)
	defer end.Stop()
	var last string
	send := func(st fulfil.State) bool {
		view := a.withState(o, st)
		key := view.Status + "|" + strconv.FormatUint(st.Seq, 10)
		if key == last {
			return true
		}
		last = key
		return s.event("order", st.Seq, view)
	}
	cur := now
	if !send(cur) {
		return nil
	}
	for cur.Status != fulfil.StatusConfirmed {
		select {
		case st := <-changes:
			if st.Seq <= cur.Seq {
				continue
			}
			cur = st
			if !send(cur) {
				return nil
			}
		case <-ban.C:
			if !send(cur) { // delayed begins or ends
				return nil
			}
		case <-keep.C:
			if !s.comment("keep-alive") {
				return nil
			}
		case <-end.C:
			return nil
		case <-a.stopping():
			return nil
		case <-r.Context().Done():
			return nil
		}
	}
	return nil
}

// stopping is closed when the server shuts down.
func (a *api) stopping() <-chan struct{} {
	if a.Stopping == nil {
		return nil
	}
	return a.Stopping
}

// deadOrders answers GET /api/v1/admin/orders/dlq[?sale=S&limit=N].
func (a *api) deadOrders(w http.ResponseWriter, r *http.Request) error {
	if a.Orders == nil {
		return newError(http.StatusNotFound, "not_found", "fulfilment is not served here")
	}
	sale := r.URL.Query().Get("sale")
	if sale != "" && !events.ValidSaleID(sale) {
		return invalid("sale", "not a sale id")
	}
	limit := 1000
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return invalid("limit", "must be 1 to 10000")
		}
		limit = n
	}
	dead, total, err := a.Orders.ListDead(r.Context(), sale, limit)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(dead))
	for _, d := range dead {
		out = append(out, map[string]any{"orderId": d.Work.Order, "sale": d.Work.Sale, "shopper": d.Work.Shopper, "units": d.Work.Units,
			"reason": d.Reason, "attempts": d.Attempts, "error": d.Error, "failedAt": d.FailedAt, "acceptedAt": d.Work.AcceptedAt,
			"requeued": d.Work.Requeue, "status": d.State.Status})
	}
	writeJSON(w, http.StatusOK, map[string]any{"total": total, "orders": out})
	return nil
}

// requeueOrder answers POST /api/v1/admin/orders/dlq/{order}/retry.
func (a *api) requeueOrder(w http.ResponseWriter, r *http.Request) error {
	if a.Orders == nil {
		return newError(http.StatusNotFound, "not_found", "fulfilment is not served here")
	}
	work, err := a.Orders.Requeue(r.Context(), r.PathValue("order"), "operator")
	switch {
	case errors.Is(err, fulfil.ErrBadOrder):
		return invalid("order", "not an order id")
	case errors.Is(err, fulfil.ErrNotDead):
		return newError(http.StatusNotFound, "order_not_dead", "the order is not in the dead-letter stream")
	case errors.Is(err, fulfil.ErrNotFailed):
		return newError(http.StatusConflict, "not_requeued", err.Error())
	case err != nil:
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"orderId": work.Order, "sale": work.Sale, "requeued": work.Requeue, "deadline": work.Deadline})
	return nil
}

package audit

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/projections"
	"github.com/nats-io/nats.go/jetstream"
)

// order checks one message on an order's subject fg.ord.<sale>.<order>
// and folds it into the order. The fulfilment worker appends an order's
// events with the expected last sequence of its subject, so on an honest
// stream an order's subject holds: zero or more OrderAttemptFailed
// (numbered 1, 2, ... since the acceptance or the last requeue), then an
// OrderConfirmed, which ends it, or an OrderFailed, after which only an
// OrderRequeued may come, and the cycle again. An event that breaks this is
// a violation and, but for an attempt numbered out of sequence, changes
// nothing (as in the projections, whose view is compared at the end).
func (v *verifier) order(m *jetstream.RawStreamMsg) {
	r, o := v.rep, &v.rep.Orders
	o.Events++
	subjSale, subjOrder, _ := strings.Cut(strings.TrimPrefix(m.Subject, events.SubjectOrdPfx), ".")
	e, err := events.DecodeEvent(m.Data)
	switch {
	case err != nil:
		r.orderViolate(&o.Unmatched, "order %s: message at %d does not decode: %v", subjOrder, m.Sequence, err)
		return
	case !e.Type.IsOrder():
		r.orderViolate(&o.Unmatched, "order %s: message at %d is a %s, not an order event", subjOrder, m.Sequence, e.Type)
		return
	case e.Sale != subjSale || e.Request != subjOrder:
		r.orderViolate(&o.Unmatched, "order %s: %s %s at %d on %s names order %s of sale %s", subjOrder, e.Type, e.ID, m.Sequence, m.Subject, e.Request, e.Sale)
		return
	}
	ord := v.orders[e.Request]
	switch {
	case ord == nil:
		r.orderViolate(&o.Unmatched, "order %s: %s at %d, but no such order was accepted in sale %s (before it)", e.Request, e.Type, m.Sequence, e.Sale)
		return
	case e.Shopper != ord.shopper:
		r.orderViolate(&o.Unmatched, "order %s: %s at %d names shopper %q, the order was accepted for %q", e.Request, e.Type, m.Sequence, e.Shopper, ord.shopper)
		return
	case ord.status == projections.StatusConfirmed:
		if e.Type == events.TypeOrderConfirmed {
			r.orderViolate(&o.BadTransitions, "order %s: confirmed again at %d (first at %d)", e.Request, m.Sequence, ord.confirmedAt)
		} else {
			r.orderViolate(&o.BadTransitions, "order %s: %s at %d after its OrderConfirmed at %d", e.Request, e.Type, m.Sequence, ord.confirmedAt)
		}
		return
	}
	tried := ord.status == projections.StatusAccepted || ord.status == projections.StatusRetrying || ord.status == projections.StatusPending
	switch d := e.Data.(type) {
	case *events.OrderAttemptFailed:
		if !tried {
			break
		}
		if d.Attempt != ord.attempts+1 {
			r.orderViolate(&o.BadTransitions, "order %s: attempt %d failed at %d, but %d had failed before it (attempts count up from 1 after acceptance or requeue)",
				e.Request, d.Attempt, m.Sequence, ord.attempts)
		}
		ord.status, ord.attempts, ord.lastError = projections.StatusRetrying, d.Attempt, d.Error
		o.AttemptsFailed++
		ord.updated = e.Time
		return
	case *events.OrderConfirmed:
		if !tried {
			break
		}
		// Calls less the one that succeeded: failures, as the event counts them.
		ord.status, ord.reference, ord.attempts, ord.confirmedAt = projections.StatusConfirmed, d.Reference, max(ord.attempts, d.Attempts-1), m.Sequence
		ord.updated = e.Time
		return
	case *events.OrderFailed:
		if !tried {
			break
		}
		ord.status, ord.failedFor, ord.attempts = projections.StatusFailed, d.Reason, max(ord.attempts, d.Attempts)
		if d.Error != "" {
			ord.lastError = d.Error
		}
		o.GivenUp++
		ord.updated = e.Time
		return
	case *events.OrderRequeued:
		if ord.status != projections.StatusFailed {
			r.orderViolate(&o.BadTransitions, "order %s: requeued at %d, but it is %s (only a failed order is requeued)", e.Request, m.Sequence, ord.status)
			return
		}
		ord.status, ord.attempts, ord.failedFor = projections.StatusPending, 0, ""
		o.Requeued++
		ord.updated = e.Time
		return
	}
	r.orderViolate(&o.BadTransitions, "order %s: %s at %d, but it is failed (only an OrderRequeued may follow an OrderFailed)", e.Request, e.Type, m.Sequence)
}

// orderFigures counts the sale's orders by their state at the end.
func (v *verifier) orderFigures() {
	o := &v.rep.Orders
	o.Confirmed, o.Failed, o.InFlight, o.Pending = 0, 0, 0, 0
	for _, ord := range v.orders {
		switch ord.status {
		case projections.StatusConfirmed:
			o.Confirmed++
		case projections.StatusFailed:
			o.Failed++
		case projections.StatusPending:
			o.Pending++
			o.InFlight++
		default:
			o.InFlight++
		}
	}
}

// checkOrderViews compares the replayed orders view, built by the
// projections, with the orders as the audit followed them: every order, its
// status and fulfilment columns, and the counts by status.
func (v *verifier) checkOrderViews(ctx context.Context, store *projections.Store) error {
	r, o := v.rep, &v.rep.Orders
	id := r.Sale.ID
	rows, err := store.DB().QueryContext(ctx, `SELECT id, COALESCE(status, ''), attempts, COALESCE(reference, ''), COALESCE(last_error, ''),
		COALESCE(failed_reason, ''), COALESCE(updated_at, '') FROM orders WHERE sale = ? ORDER BY id`, id)
	if err != nil {
		return fmt.Errorf("audit: orders view of %s: %w", id, err)
	}
	defer rows.Close()
	seen := make(map[string]bool, len(v.orders))
	for rows.Next() {
		var (
			order, status, ref, lastErr, reason, updated string
			attempts                                     sql.NullInt64
		)
		if err := rows.Scan(&order, &status, &attempts, &ref, &lastErr, &reason, &updated); err != nil {
			return fmt.Errorf("audit: orders view of %s: %w", id, err)
		}
		seen[order] = true
		ord := v.orders[order]
		if ord == nil {
			r.orderViolate(&o.ViewsDiffer, "orders view: order %s is %s, but the stream accepted no such order in sale %s", order, status, id)
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, updated)
		if updated == "" {
			at, err = time.Time{}, nil
		}
		if err != nil || status != ord.status || int(attempts.Int64) != ord.attempts || ref != ord.reference ||
			lastErr != ord.lastError || reason != ord.failedFor || !at.Equal(ord.updated) {
			r.orderViolate(&o.ViewsDiffer, "orders view: order %s is %s (attempts %d, reference %q, error %q, failed for %q, updated %s), its events make it %s (%d, %q, %q, %q, %s)",
				order, status, attempts.Int64, ref, lastErr, reason, updated,
				ord.status, ord.attempts, ord.reference, ord.lastError, ord.failedFor, stamp(ord.updated))
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("audit: orders view of %s: %w", id, err)
	}
	var missing []string
	for order := range v.orders {
		if !seen[order] {
			missing = append(missing, order)
		}
	}
	sort.Strings(missing)
	for _, order := range missing {
		r.orderViolate(&o.ViewsDiffer, "orders view: order %s, accepted in the stream, is missing", order)
	}
	c, err := store.OrderCounts(ctx, id)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if c.Confirmed != o.Confirmed || c.Failed != o.Failed || c.InFlight() != o.InFlight || c.Pending != o.Pending {
		r.orderViolate(&o.ViewsDiffer, "orders view: %d confirmed, %d failed, %d in flight (%d requeued), the events %d, %d, %d (%d)",
			c.Confirmed, c.Failed, c.InFlight(), c.Pending, o.Confirmed, o.Failed, o.InFlight, o.Pending)
	}
	return nil
}

// stamp is t as the report shows it, "-" for none.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

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

// DeadOrder is an entry of the dead-letter stream with the order's state
// now (failed, or pending when a requeue was interrupted).
type DeadOrder struct {
	Dead
	Seq   uint64 `json:"seq"`
	State State  `json:"state"`
}

// Errors of Requeue.
var (
	ErrNotDead   = errors.New("order is not in the dead-letter stream")
	ErrBadOrder  = errors.New("not an order id")
	ErrNotFailed = errors.New("order is not failed")
)

// ListDead returns the dead-lettered orders of sale ("" = every sale),
// oldest first, at most limit of them (0: 1000), and how many there are.
func ListDead(ctx context.Context, js jetstream.JetStream, sale string, limit int) ([]DeadOrder, int, error) {
	if limit <= 0 {
		limit = 1000
	}
	dlq, err := js.Stream(ctx, events.DLQStream)
	if err != nil {
		return nil, 0, fmt.Errorf("dead-letter stream: %w", err)
	}
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, 0, fmt.Errorf("stream: %w", err)
	}
	filter := events.SubjectDLQPfx + ">"
	if sale != "" {
		filter = events.SubjectDLQPfx + sale + ".*"
	}
	info, err := dlq.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, 0, fmt.Errorf("dead-letter stream: %w", err)
	}
	total := len(info.State.Subjects)
	if total == 0 {
		return nil, 0, nil
	}
	// Read up to the filter's own last entry: the stream's last sequence may
	// be another sale's entry, or one deleted by a requeue.
	last, err := dlq.GetLastMsgForSubject(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("dead-letter stream: %w", err)
	}
	var out []DeadOrder
	errEnough := errors.New("enough")
	err = stream.Read(ctx, dlq, filter, info.State.FirstSeq, last.Sequence, func(m *jetstream.RawStreamMsg) error {
		var d Dead
		if err := json.Unmarshal(m.Data, &d); err != nil {
			return fmt.Errorf("dead-letter entry %d: %w", m.Sequence, err)
		}
		s, err := ReadState(ctx, st, d.Work.Sale, d.Work.Order)
		if err != nil {
			return err
		}
		out = append(out, DeadOrder{Dead: d, Seq: m.Sequence, State: s})
		if len(out) == limit {
			return errEnough
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return nil, 0, err
	}
	return out, total, nil
}

// Requeue sends a dead-lettered order back to the worker with a new
// deadline: it records OrderRequeued, queues the order again and removes the
// entry, in that order. A requeue interrupted half-way (the order pending,
// its entry still there) is finished by calling Requeue again.
func Requeue(ctx context.Context, js jetstream.JetStream, order, by string, deadline time.Duration, now time.Time) (Work, error) {
	if !events.ValidOrderID(order) {
		return Work{}, fmt.Errorf("%w: %q", ErrBadOrder, order)
	}
	if deadline <= 0 {
		deadline = DefaultDeadline
	}
	dlq, err := js.Stream(ctx, events.DLQStream)
	if err != nil {
		return Work{}, fmt.Errorf("dead-letter stream: %w", err)
	}
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return Work{}, fmt.Errorf("stream: %w", err)
	}
	m, err := dlq.GetLastMsgForSubject(ctx, events.SubjectDLQPfx+"*."+order)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Work{}, ErrNotDead
	}
	if err != nil {
		return Work{}, fmt.Errorf("dead-letter stream: %w", err)
	}
	var d Dead
	if err := json.Unmarshal(m.Data, &d); err != nil {
		return Work{}, fmt.Errorf("dead-letter entry %d: %w", m.Sequence, err)
	}
	w := d.Work
	w.Requeue++
	w.From = m.Sequence
	w.Deadline = now.Add(deadline)
	state, err := ReadState(ctx, st, w.Sale, w.Order)
	if err != nil {
		return Work{}, err
	}
	switch state.Status {
	case StatusFailed:
		e := events.Event{ID: events.DerivedID(now, fmt.Sprintf("requeue:%s:%d", w.Order, w.Requeue)), Type: events.TypeOrderRequeued,
			Version: events.SchemaVersion, Sale: w.Sale, Time: now.UTC(), Shopper: w.Shopper, Request: w.Order, Data: &events.OrderRequeued{By: by}}
		if _, err := appendOutcome(ctx, js, st, e, state.Seq); err != nil {
			if errors.Is(err, errMoved) {
				return Work{}, fmt.Errorf("%w: requeue order %s: its state changed meanwhile; try again", ErrNotFailed, order)
			}
			return Work{}, err
		}
	case StatusPending:
		// An earlier requeue stopped after recording it: finish it (the
		// deadline counts from now).
	default:
		return Work{}, fmt.Errorf("%w: order %s is %s: not requeued", ErrNotFailed, order, state.Status)
	}
	b, err := json.Marshal(w)
	if err != nil {
		return Work{}, err
	}
	if _, err := js.Publish(ctx, events.WorkSubject(w.Sale), b, jetstream.WithMsgID(w.msgID())); err != nil {
		return Work{}, fmt.Errorf("requeue order %s: %w", order, err)
	}
	if err := dlq.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return Work{}, fmt.Errorf("requeue order %s: remove its dead-letter entry: %w", order, err)
	}
	return w, nil
}

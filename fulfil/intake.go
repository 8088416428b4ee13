package fulfil

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/wait"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// IntakeConsumer is the durable consumer of the decisions that turns
// accepted purchases into orders. Every process binds to it; each decision
// batch goes to one of them.
const IntakeConsumer = "fulfil-intake"

// DefaultDeadline is how long an order may take to be confirmed before it
// is given up.
const DefaultDeadline = time.Hour

// IntakeConfig tunes the intake.
type IntakeConfig struct {
	// Deadline: an order not confirmed this long after it is queued is given
	// up (default DefaultDeadline).
	Deadline time.Duration
	Now      func() time.Time
	Log      *slog.Logger
}

// RunIntake queues an order for every PurchaseAccepted decision, from the
// first decision on (orders accepted before fulfilment was configured are
// fulfilled too; orders already confirmed are skipped by the worker). It
// returns when ctx ends, or on an error binding the consumer.
func RunIntake(ctx context.Context, js jetstream.JetStream, c IntakeConfig) error {
	if c.Deadline <= 0 {
		c.Deadline = DefaultDeadline
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
		Durable:       IntakeConsumer,
		Description:   "flashgate: accepted purchases to the fulfilment queue",
		FilterSubject: events.SubjectDecAll,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 256,
	})
	if err != nil {
		return fmt.Errorf("fulfilment intake consumer: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(64), jetstream.PullHeartbeat(stream.ReadHeartbeat))
	if err != nil {
		return fmt.Errorf("fulfilment intake: %w", err)
	}
	defer stream.Stop(it)
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, jetstream.ErrConsumerDeleted) {
			return fmt.Errorf("fulfilment intake: %w", err) // bound again by the caller
		}
		if err != nil {
			c.Log.Warn("fulfilment intake", "err", err)
			if err := wait.Sleep(ctx, time.Second); err != nil {
				return err
			}
			continue
		}
		if err := intake(ctx, js, m.Data(), c); err != nil {
			c.Log.Warn("fulfilment intake: batch not queued, retried", "subject", m.Subject(), "err", err)
			_ = m.NakWithDelay(time.Second)
			continue
		}
		_ = m.Ack()
	}
}

// intakeAckWait bounds the wait for the queue's acknowledgements of one
// batch's orders.
const intakeAckWait = 10 * time.Second

var purchaseAccepted = []byte(`"` + events.TypePurchaseAccepted + `"`)

// intake queues the orders of one decision batch.
func intake(ctx context.Context, js jetstream.JetStream, data []byte, c IntakeConfig) error {
	if !bytes.Contains(data, purchaseAccepted) {
		return nil // most batches: no sale in them
	}
	db, err := events.DecodeDecisions(data)
	if err != nil {
		if events.TooNew(err) {
			return err // a newer build wrote it: wait for this process to be upgraded
		}
		c.Log.Error("fulfilment intake: undecodable decision batch skipped (the audit reports it)", "err", err)
		return nil
	}
	var acks []jetstream.PubAckFuture
	for _, e := range db.Events {
		pa, ok := e.Data.(*events.PurchaseAccepted)
		if !ok || e.Type != events.TypePurchaseAccepted {
			continue
		}
		w := Work{V: workVersion, Order: pa.OrderID, Sale: db.Sale, Shopper: e.Shopper, TokenID: pa.TokenID, Units: pa.Units,
			AcceptedAt: e.Time, Deadline: maxTime(e.Time, c.Now()).Add(c.Deadline)}
		if err := w.check(); err != nil {
			c.Log.Error("fulfilment intake: order skipped", "err", err)
			continue
		}
		b, err := json.Marshal(w)
		if err != nil {
			return err
		}
		f, err := js.PublishAsync(events.WorkSubject(w.Sale), b, jetstream.WithMsgID(w.msgID()))
		if err != nil {
			return err
		}
		acks = append(acks, f)
	}
	wait := time.NewTimer(intakeAckWait)
	defer wait.Stop()
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-wait.C:
			return errors.New("no acknowledgement for the queued orders") // the batch is retried; duplicates are dropped
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

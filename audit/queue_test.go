package audit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/handlers"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// queueRun creates a sale whose pre-queue is open and which opens in a
// moment, appends n pre-queue joins, and runs the writer until all of them
// are admitted.
func queueRun(t *testing.T, e *fgtest.Env, n int) {
	t.Helper()
	now := time.Now().UTC()
	ev := events.Event{ID: events.NewIDs().New(now), Type: events.TypeSaleCreated, Version: events.SchemaVersion, Sale: "q", Time: now,
		Data: &events.SaleCreated{Stock: 100, QuotaBuffer: 1.2, Quota: 120, PerUserLimit: 1, TokenTTL: events.Duration(time.Hour),
			OpensAt: now.Add(1500 * time.Millisecond),
			Queue: &events.Queue{PreQueueOpensAt: now.Add(-time.Minute), AdmissionRate: 1000,
				ClaimWindow: events.Duration(time.Hour), IdleTimeout: events.Duration(time.Hour)}}}
	if _, err := stream.CreateSale(context.Background(), e.JS, ev); err != nil {
		t.Fatal(err)
	}
	ids := events.NewIDs()
	rb := events.RequestBatch{}
	for i := 0; i < n; i++ {
		rb.Requests = append(rb.Requests, events.Event{ID: ids.New(now), Type: events.TypeQueueJoinRequested, Version: events.SchemaVersion,
			Sale: "q", Time: now, Shopper: "s" + string(rune('A'+i%26)) + string(rune('a'+i/26)), Data: &events.QueueJoinRequested{}})
	}
	data, err := events.EncodeRequests(rb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.JS.Publish(context.Background(), events.RequestSubject("q"), data); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- handlers.NewWriter(e.JS, e.Stream, "q", handlers.WriterConfig{ID: "w", Log: quiet}).Run(ctx)
	}()
	fgtest.WaitFor(t, 30*time.Second, func() error {
		db, _, ok, err := stream.LastDecision(context.Background(), e.Stream, "q")
		if err == nil && (!ok || db.Head.Issued < int64(n)) {
			err = context.DeadlineExceeded
		}
		return err
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestAuditProvesTheQueueOrder: the audit recomputes the pre-queue's order
// from the recorded seed and finds every admission in it; the same history
// with the seed changed in the shuffle's event fails.
func TestAuditProvesTheQueueOrder(t *testing.T) {
	e := fgtest.New(t)
	queueRun(t, e, 60)
	rep, out := run(t, e)
	if !rep.OK() {
		t.Fatalf("honest queue:\n%s", out)
	}
	for _, want := range []string{"60 joined (60 before opening), 60 admitted", "ok   fair order: the 60 pre-queue joins", "ok   admissions in order: 60 of 60"} {
		if !strings.Contains(out, want) {
			t.Fatalf("report lacks %q:\n%s", want, out)
		}
	}

	// The same history, but the seed in the shuffle's event changed: as if
	// someone rewrote the record to make another order look right.
	forged := fgtest.New(t)
	info, err := e.Stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tampered := false
	err = stream.Read(context.Background(), e.Stream, events.SubjectAll, 1, info.State.LastSeq, func(m *jetstream.RawStreamMsg) error {
		data := m.Data
		if strings.HasPrefix(m.Subject, events.SubjectDecPfx) {
			db, err := events.DecodeDecisions(m.Data)
			if err != nil {
				return err
			}
			for i := range db.Events {
				if d, ok := db.Events[i].Data.(*events.QueueShuffled); ok {
					d.Seed ^= 1
					tampered = true
				}
			}
			if data, err = events.EncodeDecisions(db); err != nil {
				return err
			}
		}
		msg := nats.NewMsg(m.Subject)
		msg.Data = data
		_, err := forged.JS.PublishMsg(context.Background(), msg)
		return err
	})
	if err != nil || !tampered {
		t.Fatalf("copy: %v (tampered %v)", err, tampered)
	}
	rep, out = run(t, forged)
	if rep.OK() {
		t.Fatalf("the audit passed a history whose seed was changed:\n%s", out)
	}
	for _, want := range []string{"out of order", "FAIL admissions in order"} {
		if !strings.Contains(out, want) {
			t.Fatalf("report lacks %q:\n%s", want, out)
		}
	}
}

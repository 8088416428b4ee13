package audit_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/audit"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/handlers"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// decided runs a writer until every appended request of sale is decided.
func decided(t *testing.T, e *fgtest.Env, sale string) {
	t.Helper()
	info, err := e.Stream.Info(context.Background(), jetstream.WithSubjectFilter(events.RequestSubject(sale)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- handlers.NewWriter(e.JS, e.Stream, sale, handlers.WriterConfig{ID: "w", Log: quiet}).Run(ctx)
	}()
	fgtest.WaitFor(t, 30*time.Second, func() error {
		db, _, ok, err := stream.LastDecision(context.Background(), e.Stream, sale)
		if err == nil && (!ok || db.Head.Cursor < info.State.LastSeq) {
			err = context.DeadlineExceeded
		}
		return err
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, e *fgtest.Env) (*audit.Report, string) {
	t.Helper()
	rep, err := audit.Run(context.Background(), e.JS, filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	rep.Write(&b)
	return rep, b.String()
}

func TestAuditPassesAnHonestSale(t *testing.T) {
	e := fgtest.New(t)
	now := time.Now().UTC()
	e.CreateSale(t, "s", 50, time.Hour, now.Add(-time.Minute))
	e.AppendTokenRequests(t, "s", "a", 20, 5, now)
	decided(t, e, "s")
	rep, out := run(t, e)
	if !rep.OK() || rep.Sales[0].Issued != 60 || rep.Sales[0].Reproduced != 100 {
		t.Fatalf("honest sale:\n%s", out)
	}
}

// TestAuditCatchesAForgedBatch: a batch that lands with the right expected
// sequence but decisions the decision code would not make is caught.
func TestAuditCatchesAForgedBatch(t *testing.T) {
	e := fgtest.New(t)
	now := time.Now().UTC()
	e.CreateSale(t, "s", 2, time.Hour, now.Add(-time.Minute))
	ids := e.AppendTokenRequests(t, "s", "a", 1, 3, now)
	decided(t, e, "s") // quota 3: all three get tokens
	last, seq, _, err := stream.LastDecision(context.Background(), e.Stream, "s")
	if err != nil {
		t.Fatal(err)
	}
	// The forger "sells" three units of a stock of two, bypassing the code.
	forged := last
	forged.Writer, forged.FromSeq = "forger", 0
	forged.Head.Version++
	forged.Head.Redeemed = 3
	forged.Events = nil
	for i, id := range ids {
		forged.Events = append(forged.Events, events.Event{ID: events.DerivedID(now, "f"+id), Type: events.TypePurchaseAccepted, Version: events.SchemaVersion,
			Sale: "s", Time: forged.DecidedAt, Shopper: "a-0-" + string(rune('0'+i)), Request: id,
			Data: &events.PurchaseAccepted{TokenID: id, OrderID: id, Units: 1}})
	}
	data, err := events.EncodeDecisions(forged)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(events.DecisionSubject("s"))
	msg.Data = data
	if _, err := e.JS.PublishMsg(context.Background(), msg, jetstream.WithExpectLastSequencePerSubject(seq)); err != nil {
		t.Fatal(err)
	}
	rep, out := run(t, e)
	if rep.OK() {
		t.Fatalf("audit passed a forged batch:\n%s", out)
	}
	for _, want := range []string{"oversold", "re-run gives 0 decisions, 3 recorded"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// TestAuditCatchesADeletedRequest: removing a decided request from the
// stream is caught.
func TestAuditCatchesADeletedRequest(t *testing.T) {
	e := fgtest.New(t)
	now := time.Now().UTC()
	e.CreateSale(t, "s", 10, time.Hour, now.Add(-time.Minute))
	e.AppendTokenRequests(t, "s", "a", 3, 2, now)
	decided(t, e, "s")
	m, err := e.Stream.GetLastMsgForSubject(context.Background(), events.RequestSubject("s"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Stream.DeleteMsg(context.Background(), m.Sequence); err != nil {
		t.Fatal(err)
	}
	if rep, out := run(t, e); rep.OK() {
		t.Fatalf("audit passed a stream with a decided request removed:\n%s", out)
	}
}

// TestAuditOfARunningInstallation: batches committed while the audit
// replays are no violation.
func TestAuditOfARunningInstallation(t *testing.T) {
	e := fgtest.New(t)
	now := time.Now().UTC()
	e.CreateSale(t, "s", 100000, time.Hour, now.Add(-time.Minute))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- handlers.NewWriter(e.JS, e.Stream, "s", handlers.WriterConfig{ID: "w", Log: quiet}).Run(ctx)
	}()
	stop := make(chan struct{})
	appended := make(chan struct{})
	go func() {
		defer close(appended)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 2000; i++ { // bounded: the stream stays small
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			e.AppendTokenRequests(t, "s", fmt.Sprintf("r%d", i), 1, 10, time.Now().UTC())
		}
	}()
	for i := 0; i < 3; i++ {
		time.Sleep(50 * time.Millisecond)
		if rep, out := run(t, e); !rep.OK() {
			t.Fatalf("audit of a running installation, round %d:\n%s", i, out)
		}
	}
	close(stop)
	<-appended
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestAuditWhenABatchLandsMidAudit: a batch committed between the audit's
// reading of the live heads and of the stream's end is no violation.
func TestAuditWhenABatchLandsMidAudit(t *testing.T) {
	e := fgtest.New(t)
	now := time.Now().UTC()
	e.CreateSale(t, "s", 100, time.Hour, now.Add(-time.Minute))
	e.AppendTokenRequests(t, "s", "a", 2, 5, now)
	decided(t, e, "s")
	audit.SetHookAfterLiveHeads(func() {
		e.AppendTokenRequests(t, "s", "b", 2, 5, now)
		decided(t, e, "s")
	})
	defer audit.SetHookAfterLiveHeads(nil)
	if rep, out := run(t, e); !rep.OK() {
		t.Fatalf("a batch landing mid-audit is reported:\n%s", out)
	}
}

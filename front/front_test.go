package front

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/flashgate/flashgate/embed"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type fixture struct {
	ns *embed.Server
	js jetstream.JetStream
	f  *Front
}

// newFixture runs a front against a listening embedded server (so that the
// server can be taken away) with one open sale "s" and no writer.
func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	ns, err := embed.Start(embed.Options{Dir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := stream.Ensure(ctx, js, stream.Config{}); err != nil {
		t.Fatal(err)
	}
	st, _ := js.Stream(ctx, events.StreamName)
	now := time.Now().UTC()
	ev := events.Event{ID: events.NewIDs().New(now), Type: events.TypeSaleCreated, Version: events.SchemaVersion, Sale: "s", Time: now,
		Data: &events.SaleCreated{Stock: 10, QuotaBuffer: 1.2, Quota: 12, PerUserLimit: 1, TokenTTL: events.Duration(time.Minute), OpensAt: now}}
	if _, err := stream.CreateSale(ctx, js, ev); err != nil {
		t.Fatal(err)
	}
	cfg.Log = quiet
	f := New(js, st, cfg)
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = f.Run(fctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	<-f.Ready()
	return &fixture{ns: ns, js: js, f: f}
}

func tokenRequest(shopper string) events.Event {
	now := time.Now().UTC()
	return events.Event{ID: events.NewIDs().New(now), Type: events.TypeTokenRequested, Version: events.SchemaVersion, Sale: "s", Time: now,
		Shopper: shopper, Data: &events.TokenRequested{}}
}

// TestUnavailableIsNotPending: when the stream cannot take a request, the
// caller hears so (503 upstream), never "pending" for a request that was not
// stored.
func TestUnavailableIsNotPending(t *testing.T) {
	fx := newFixture(t, Config{AppendTimeout: 300 * time.Millisecond})
	fx.ns.Shutdown()
	p, err := fx.f.Submit(tokenRequest("x"))
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("submit: %v", err)
		}
		return
	}
	_, ok, err := p.Wait(context.Background(), 2*time.Second)
	if ok || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Wait with NATS down: ok=%v err=%v, want ErrUnavailable", ok, err)
	}
}

// TestStoredButUndecidedIsPending: with no writer, a stored request waits
// the decision time and then reads as pending (ok=false, no error).
func TestStoredButUndecidedIsPending(t *testing.T) {
	fx := newFixture(t, Config{})
	p, err := fx.f.Submit(tokenRequest("x"))
	if err != nil {
		t.Fatal(err)
	}
	_, ok, err := p.Wait(context.Background(), 100*time.Millisecond)
	if ok || err != nil {
		t.Fatalf("ok=%v err=%v, want pending", ok, err)
	}
	if n := fx.f.waiters.n.Load(); n != 0 {
		t.Fatalf("%d waiters left behind", n)
	}
}

// TestBounds: a full waiter table answers ErrOverloaded at once.
func TestBounds(t *testing.T) {
	fx := newFixture(t, Config{MaxInFlight: 3})
	for i := 0; i < 3; i++ {
		if _, err := fx.f.Submit(tokenRequest("x")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fx.f.Submit(tokenRequest("y")); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("4th in flight: %v, want ErrOverloaded", err)
	}
}

func TestRecentIsBounded(t *testing.T) {
	r := newRecent(3)
	for _, id := range []string{"a", "b", "c", "d"} {
		r.put(id, events.Event{Request: id})
	}
	if _, ok := r.get("a"); ok {
		t.Error("oldest decision kept past the bound")
	}
	if e, ok := r.get("d"); !ok || e.Request != "d" {
		t.Error("newest decision lost")
	}
}

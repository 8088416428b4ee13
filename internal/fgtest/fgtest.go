// Package fgtest holds test fixtures shared by flashgate's packages: a real
// embedded JetStream with flashgate's layout, and helpers to put sales and
// requests on it.
package fgtest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashgate/flashgate/embed"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// Env is a running embedded server with flashgate's stream and buckets.
type Env struct {
	Server *embed.Server
	JS     jetstream.JetStream
	Stream jetstream.Stream
}

// New starts an embedded server in tb.TempDir(); it stops with the test.
func New(tb testing.TB) *Env { return NewWith(tb, embed.Options{}) }

// NewWith is New with server options (Dir is set to a temporary directory).
func NewWith(tb testing.TB, o embed.Options) *Env {
	tb.Helper()
	o.Dir = tb.TempDir()
	ns, err := embed.Start(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(ns.Shutdown)
	nc, err := ns.Connect()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	if err := stream.Ensure(ctx, js, stream.Config{}); err != nil {
		tb.Fatal(err)
	}
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		tb.Fatal(err)
	}
	return &Env{Server: ns, JS: js, Stream: st}
}

// CreateSale creates a sale open since at, with quota = stock x 1.2 rounded up.
func (e *Env) CreateSale(tb testing.TB, id string, stock int64, ttl time.Duration, at time.Time) {
	tb.Helper()
	quota := (stock*12 + 9) / 10
	ev := events.Event{ID: events.NewIDs().New(at), Type: events.TypeSaleCreated, Version: events.SchemaVersion, Sale: id, Time: at,
		Data: &events.SaleCreated{Stock: stock, QuotaBuffer: 1.2, Quota: quota, PerUserLimit: 1,
			TokenTTL: events.Duration(ttl), OpensAt: at}}
	if _, err := stream.CreateSale(context.Background(), e.JS, ev); err != nil {
		tb.Fatal(err)
	}
}

// AppendTokenRequests appends msgs messages of per token requests each, from
// distinct shoppers named prefix-m-i, and returns the request ids in order.
func (e *Env) AppendTokenRequests(tb testing.TB, sale, prefix string, msgs, per int, at time.Time) []string {
	tb.Helper()
	ids := events.NewIDs()
	var all []string
	for m := 0; m < msgs; m++ {
		rb := events.RequestBatch{}
		for i := 0; i < per; i++ {
			id := ids.New(at)
			all = append(all, id)
			rb.Requests = append(rb.Requests, events.Event{ID: id, Type: events.TypeTokenRequested, Version: events.SchemaVersion, Sale: sale,
				Time: at, Shopper: fmt.Sprintf("%s-%d-%d", prefix, m, i), Data: &events.TokenRequested{}})
		}
		data, err := events.EncodeRequests(rb)
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := e.JS.PublishAsync(events.RequestSubject(sale), data); err != nil {
			tb.Fatal(err)
		}
	}
	select {
	case <-e.JS.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		tb.Fatal("appends not acknowledged")
	}
	return all
}

// WaitFor polls fn until it returns nil, failing the test after timeout.
func WaitFor(tb testing.TB, timeout time.Duration, fn func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package app

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/flashgate/flashgate/broker"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/fulfil"
	"github.com/flashgate/flashgate/provider"
	"github.com/flashgate/flashgate/provider/fake"
	"github.com/nats-io/nats.go/jetstream"
)

// Values of Config.ProviderURL besides a URL.
const (
	ProviderFake = "fake" // an in-process fake provider (the default with embedded NATS)
	ProviderOff  = "off"  // no fulfilment: accepted orders stay accepted
)

// Defaults of the fulfilment settings.
const (
	DefaultProviderClientID = "flashgate"
	DefaultProviderBudget   = 1.0
	DefaultOrderAttempts    = 8
	DefaultFulfilWorkers    = 16
	DefaultFulfilFloodRate  = 100.0
	DefaultMaxOrderStreams  = 10000
)

// FloodInFlight is how many requests waiting for decisions in a process make
// a flood (front.Config.FloodWaiting; see Front.Flooded), during which the
// views yield and fulfilment keeps to Config.FulfilFloodRate.
const FloodInFlight = 8

// fulfilment is the running fulfilment: the shared token, the worker, the
// intake and the hub that feeds the shoppers' order streams.
type fulfilment struct {
	Provider string         // what the orders go to: a URL, "fake (URL)", or "off"
	Broker   *broker.Broker // nil: no provider
	Hub      *fulfil.Hub
	stopFake func() error
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// providerURL resolves Config.ProviderURL: "" is the fake with the embedded
// NATS server and off with an external one (processes of a cluster must
// agree on one real provider).
func providerURL(c Config) string {
	if c.ProviderURL != "" {
		return c.ProviderURL
	}
	if c.NATSURL == "" {
		return ProviderFake
	}
	return ProviderOff
}

// startFulfil starts the fulfilment parts under their own context. They
// keep the wall clock, not Config.Now: tokens, bans and deadlines are the
// provider's time.
func (a *App) startFulfil(ctx context.Context, c Config, node string, st jetstream.Stream) (*fulfilment, error) {
	f := &fulfilment{Provider: ProviderOff}
	rctx, cancel := context.WithCancel(context.Background())
	f.ctx, f.cancel = rctx, cancel
	f.Hub = fulfil.NewHub(a.JS, st, c.MaxOrderStreams, a.log)
	f.run(a, "order watch", func() error { return f.Hub.Run(rctx) })

	pc := provider.Config{URL: providerURL(c), TokenURL: c.ProviderTokenURL, ClientID: c.ProviderClientID, Scopes: c.ProviderScopes}
	switch pc.URL {
	case ProviderOff:
		a.log.Info("fulfilment is off: accepted orders are not sent to any provider")
		return f, nil
	case ProviderFake:
		secret := rand.Text()
		p, err := fake.New(fake.Config{ClientID: pc.ClientID, ClientSecret: secret, Scopes: pc.Scopes, Log: a.log})
		if err != nil {
			f.stop()
			return nil, fmt.Errorf("fake provider: %w", err)
		}
		u, stop, err := fake.Listen(rctx, "127.0.0.1:0", p)
		if err != nil {
			f.stop()
			return nil, fmt.Errorf("fake provider: %w", err)
		}
		f.stopFake, pc.URL, pc.TokenURL, pc.ClientSecret = stop, u, "", secret
		f.Provider = "fake, in-process (" + u + ")"
	default:
		secret, err := providerSecret(c)
		if err != nil {
			f.stop()
			return nil, err
		}
		pc.ClientSecret = secret
		f.Provider = pc.URL
	}
	client, err := provider.New(pc)
	if err != nil {
		f.stop()
		return nil, err
	}
	kv, err := a.JS.KeyValue(ctx, events.ProviderBucket)
	if err != nil {
		f.stop()
		return nil, fmt.Errorf("provider bucket: %w", err)
	}
	orderOutcome, tokenOutcome := a.Metrics.Fulfil(func() float64 {
		if f.Broker == nil {
			return 0
		}
		return max(0, time.Until(f.Broker.State().BannedUntil).Seconds())
	}, f.Hub.Watches)
	f.Broker = broker.New(kv, client, broker.Config{Node: node, Budget: c.ProviderBudget, Penalty: c.ProviderPenalty,
		Connected: a.nc.IsConnected, OnRequest: tokenOutcome, Log: a.log})
	// A sale's decisions come first: during a flood the orders wait in
	// their queue and go out at FulfilFloodRate; after it, at full speed.
	pace := &fulfil.FloodPace{Rate: c.FulfilFloodRate, Flooded: func() bool {
		fr := a.liveFront.Load()
		return fr != nil && fr.Flooded(floodLinger)
	}}
	worker := fulfil.NewWorker(a.JS, st, f.Broker, client, fulfil.Config{Concurrency: c.FulfilWorkers, MaxAttempts: c.OrderAttempts,
		OnOutcome: orderOutcome, Pace: pace.Wait, Log: a.log})
	f.run(a, "provider token", func() error { return f.Broker.Run(rctx) })
	f.run(a, "fulfilment worker", func() error { return worker.Run(rctx) })
	f.run(a, "fulfilment intake", func() error {
		return fulfil.RunIntake(rctx, a.JS, fulfil.IntakeConfig{Deadline: c.OrderDeadline, Log: a.log})
	})
	return f, nil
}

// run runs fn until the fulfilment stops, starting it again after an error.
func (f *fulfilment) run(a *App, what string, fn func() error) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for backoff := 250 * time.Millisecond; ; backoff = min(2*backoff, 10*time.Second) {
			err := fn()
			if f.ctx.Err() != nil {
				return
			}
			a.log.Error(what+" stopped, restarting", "err", err, "in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-f.ctx.Done():
				t.Stop()
				return
			}
		}
	}()
}

// stop ends every part and waits for them.
func (f *fulfilment) stop() {
	if f == nil {
		return
	}
	f.cancel()
	f.wg.Wait()
	if f.stopFake != nil {
		_ = f.stopFake()
	}
}

// providerSecret reads the client secret from ProviderSecretFile or
// FLASHGATE_PROVIDER_CLIENT_SECRET.
func providerSecret(c Config) (string, error) {
	secret := os.Getenv("FLASHGATE_PROVIDER_CLIENT_SECRET")
	if c.ProviderSecretFile != "" {
		b, err := os.ReadFile(c.ProviderSecretFile)
		if err != nil {
			return "", fmt.Errorf("--provider-client-secret-file: %w", err)
		}
		secret = strings.TrimSpace(string(b))
	}
	if secret == "" {
		return "", errors.New("the provider's client secret is missing: set --provider-client-secret-file or FLASHGATE_PROVIDER_CLIENT_SECRET")
	}
	return secret, nil
}

// ordersAPI is what the HTTP API asks the fulfilment.
type ordersAPI struct {
	f        *fulfilment
	js       jetstream.JetStream
	st       jetstream.Stream
	deadline time.Duration
	now      func() time.Time
}

func (o ordersAPI) State(ctx context.Context, sale, order string) (fulfil.State, error) {
	return fulfil.ReadState(ctx, o.st, sale, order)
}

func (o ordersAPI) Watch(ctx context.Context, sale, order string) (fulfil.State, <-chan fulfil.State, func(), error) {
	return o.f.Hub.Watch(ctx, sale, order)
}

func (o ordersAPI) BannedUntil() time.Time {
	if o.f.Broker == nil {
		return time.Time{}
	}
	return o.f.Broker.State().BannedUntil
}

func (o ordersAPI) ListDead(ctx context.Context, sale string, limit int) ([]fulfil.DeadOrder, int, error) {
	return fulfil.ListDead(ctx, o.js, sale, limit)
}

func (o ordersAPI) Requeue(ctx context.Context, order, by string) (fulfil.Work, error) {
	return fulfil.Requeue(ctx, o.js, order, by, o.deadline, o.now())
}

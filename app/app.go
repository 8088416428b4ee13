// Package app wires flashgate's parts into a running service: NATS
// (embedded or external), the stream layout, the writers, the front, the
// projections and the HTTP API, and takes them down again in order.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashgate/flashgate/api"
	"github.com/flashgate/flashgate/embed"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/front"
	"github.com/flashgate/flashgate/fulfil"
	"github.com/flashgate/flashgate/handlers"
	"github.com/flashgate/flashgate/identity"
	"github.com/flashgate/flashgate/internal/natsurl"
	"github.com/flashgate/flashgate/metrics"
	"github.com/flashgate/flashgate/projections"
	"github.com/flashgate/flashgate/stream"
	"github.com/flashgate/flashgate/tokens"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Config is the service's configuration; cmd/flashgate fills it from flags
// and FLASHGATE_* variables.
type Config struct {
	Data       string // data directory
	HTTP       string // listen address
	AdminToken string // "" = generated and kept in the data directory
	NATSURL    string // "" = embedded server
	NATSCreds  string // credentials file for NATSURL
	Demo       bool   // create the demo sale
	SyncAlways bool   // embedded JetStream fsyncs every write
	Replicas   int    // stream and bucket replicas
	LeaseTTL   time.Duration

	DecisionWait time.Duration
	MaxBody      int64
	SessionRate  float64
	SessionTTL   time.Duration
	MaxInFlight  int
	MaxBatch     int
	// WriterIdle is how long a sale's writer stays with nothing to do
	// before it drops the sale's state (kept: the lease); a request or the
	// sale's next expiry starts a new one. 0: never.
	WriterIdle time.Duration
	// MaxQueueStreams bounds the waiting-room event streams open at once
	// (default api.DefaultMaxQueueStreams).
	MaxQueueStreams int

	PurchaseKeyFile string // "" = keys in the data directory
	SessionKeyFile  string

	IdentityKey      string // PEM public key of the shop's identity provider: external identity mode
	IdentityIssuer   string
	IdentityAudience string

	MetricsAddr string // "" = /metrics on the main listener; else its own listener
	DebugAddr   string // "" = no pprof; else pprof on its own listener
	NATSListen  string // "" = embedded NATS in-process only; else also on TCP with generated credentials
	ReadyLag    uint64 // projections further behind than this many messages: not ready (default 10000)
	// ProjectionShare is the share of one core's time the SQLite views may
	// take while shoppers wait for decisions in this process (0 < x <= 1;
	// default 0.1; 1: no limit). The views then lag and catch up after the
	// flood, but never by more than FloodLag messages.
	ProjectionShare float64
	// FloodLag is how many stream messages the views may fall behind while
	// they yield to a flood (default 50000). Readiness allows FloodLag +
	// ReadyLag while the flood lasts and until they have caught up to
	// ReadyLag again, as long as they make progress.
	FloodLag uint64

	// Rate limits: RateLimit is on (default when empty), shadow, shopper or off;
	// TrustedProxies are the networks whose X-Forwarded-For names the
	// client; RateLimitMaxKeys bounds the keys remembered (default 2^20).
	RateLimit        string
	TrustedProxies   []string
	RateLimitMaxKeys int

	// Human checks and app signatures (see the README). CaptchaProvider ""
	// means no CAPTCHA; its secret comes from CaptchaSecretFile or
	// FLASHGATE_CAPTCHA_SECRET.
	CaptchaProvider   string
	CaptchaSecretFile string
	CaptchaSiteKey    string
	CaptchaVerifyURL  string
	CaptchaHostname   string
	SigningKeysFile   string
	// DemoDifficulty is the proof-of-work difficulty of the demo sale's
	// human check; 0: the demo sale has none.
	DemoDifficulty int

	// Fulfilment: where accepted orders are sent (see the README).
	// ProviderURL "" is an in-process fake provider with the embedded NATS
	// server and "off" with --nats-url; ProviderFake and ProviderOff force
	// either. The client secret comes from ProviderSecretFile or
	// FLASHGATE_PROVIDER_CLIENT_SECRET.
	ProviderURL        string
	ProviderTokenURL   string // "" = ProviderURL + /oauth/token
	ProviderClientID   string
	ProviderSecretFile string
	ProviderScopes     []string
	ProviderBudget     float64       // token requests per second, all processes together (default 1)
	ProviderPenalty    time.Duration // a ban without Retry-After lasts this (default 10m)
	OrderAttempts      int           // failed calls before an order goes to the dead-letter stream (default 8)
	OrderDeadline      time.Duration // an order not confirmed this long after acceptance goes there too (default 1h)
	FulfilWorkers      int           // orders sent at once by this process (default 16)
	// FulfilFloodRate is the most orders a second this process sends while
	// it serves a flood (FloodInFlight requests or more waiting for
	// decisions): 0 is the default (100), negative no limit.
	FulfilFloodRate float64
	MaxOrderStreams int // order event streams (SSE) open at once (default 10000)

	// Pages serves the web pages; nil: a text page at / (cmd wires web.Handler()).
	Pages http.Handler

	Now func() time.Time
	Log *slog.Logger
}

// Defaults fills zero fields with the documented defaults.
func (c *Config) Defaults() {
	if c.Data == "" {
		c.Data = "data"
	}
	if c.HTTP == "" {
		c.HTTP = "127.0.0.1:8080"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = stream.DefaultLeaseTTL
	}
	if c.ReadyLag == 0 {
		c.ReadyLag = DefaultReadyLag
	}
	if c.FloodLag == 0 {
		c.FloodLag = DefaultFloodLag
	}
	if c.ProviderClientID == "" {
		c.ProviderClientID = DefaultProviderClientID
	}
	if c.ProviderBudget <= 0 {
		c.ProviderBudget = DefaultProviderBudget
	}
	if c.OrderAttempts <= 0 {
		c.OrderAttempts = DefaultOrderAttempts
	}
	if c.OrderDeadline <= 0 {
		c.OrderDeadline = fulfil.DefaultDeadline
	}
	if c.FulfilWorkers <= 0 {
		c.FulfilWorkers = DefaultFulfilWorkers
	}
	if c.FulfilFloodRate == 0 {
		c.FulfilFloodRate = DefaultFulfilFloodRate
	}
	if c.MaxOrderStreams <= 0 {
		c.MaxOrderStreams = DefaultMaxOrderStreams
	}
	if c.ProjectionShare <= 0 || c.ProjectionShare > 1 {
		c.ProjectionShare = DefaultProjectionShare
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// App is a running service.
type App struct {
	URL        string // base URL of the HTTP API
	AdminToken string
	DataDir    string
	NATS       string // "embedded" or the URL
	NATSPublic string // nats:// URL of the embedded server's TCP listener (with --nats-listen), credentials included
	MetricsURL string // where /metrics is served
	DebugURL   string // where pprof is served, if anywhere
	Metrics    *metrics.Metrics
	Front      *front.Front
	Store      *projections.Store
	JS         jetstream.JetStream
	Provider   string // where orders are sent: a URL, the in-process fake, or off

	cfg        Config
	log        *slog.Logger
	unlock     func()
	ns         *embed.Server
	nc         *nats.Conn
	srv        *http.Server
	manager    *handlers.Manager
	ops        opsState
	ready      readyCache
	side       []*http.Server     // metrics and debug listeners
	cancelW    context.CancelFunc // writers
	cancelF    context.CancelFunc // front
	cancelP    context.CancelFunc // projections
	cancelG    context.CancelFunc // the guard's background parts
	guard      *guard
	ful        *fulfilment
	reconnects reconnects // closed at each reconnect to NATS: the watches start again
	bg         sync.WaitGroup
	served     chan error
	stopping   chan struct{} // closed when shutdown begins: streams end
	draining   atomic.Bool
	lastReq    atomic.Int64                     // unix nanos of the last request that arrived
	liveFront  atomic.Pointer[front.Front]      // Front, for the views' pacing (they start before it)
	httpURL    atomic.Pointer[string]           // URL, for the heartbeat (it starts before the listener)
	liveMgr    atomic.Pointer[handlers.Manager] // manager, for the heartbeat (it starts before the writers)
	stopOnce   sync.Once
	stopErr    error
}

// Start brings the service up and returns once it serves HTTP.
func Start(ctx context.Context, c Config) (a *App, err error) {
	c.Defaults()
	a = &App{cfg: c, log: c.Log, DataDir: c.Data, served: make(chan error, 1), stopping: make(chan struct{})}
	started := a // the error returns below set a to nil
	defer func() {
		if err != nil {
			started.teardown()
		}
	}()
	dir := DataDir(c.Data)
	if a.unlock, err = dir.Lock(); err != nil {
		return nil, err
	}
	node, err := dir.NodeIDValue()
	if err != nil {
		return nil, fmt.Errorf("node id: %w", err)
	}
	if a.AdminToken = c.AdminToken; a.AdminToken == "" {
		if a.AdminToken, err = dir.AdminTokenValue(); err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
	}
	purchaseKeys, err := loadKeys(c.PurchaseKeyFile, dir.PurchaseKeys())
	if err != nil {
		return nil, err
	}
	var verifier identity.Verifier
	var sessions *identity.Sessions
	if c.IdentityKey != "" {
		if verifier, err = identity.LoadExternal(c.IdentityKey, c.IdentityIssuer, c.IdentityAudience, c.Now); err != nil {
			return nil, fmt.Errorf("external identity: %w", err)
		}
	} else {
		sessionKeys, err := loadKeys(c.SessionKeyFile, dir.SessionKeys())
		if err != nil {
			return nil, err
		}
		sessions = identity.NewSessions(sessionKeys, c.SessionTTL, c.Now)
		verifier = sessions
	}

	if a.nc, err = a.connect(c, dir); err != nil {
		return nil, err
	}
	a.JS, err = jetstream.New(a.nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if err := a.ensure(ctx, c); err != nil {
		return nil, err
	}
	st, err := a.JS.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	leases, err := a.JS.KeyValue(ctx, events.LeaseBucket)
	if err != nil {
		return nil, fmt.Errorf("lease bucket: %w", err)
	}
	if a.guard, err = a.newGuard(ctx, c, node, purchaseKeys); err != nil {
		return nil, err
	}
	gctx, cancelG := context.WithCancel(context.Background())
	a.cancelG = cancelG
	a.startGuard(gctx, c, a.guard)
	a.ops.progressAt.Store(time.Now().UnixNano()) // the views' stall clock starts now
	if a.Store, err = projections.Open(dir.Projections()); err != nil {
		return nil, fmt.Errorf("projections: %w", err)
	}

	// Background parts, each with its own context so shutdown goes in order.
	pctx, cancelP := context.WithCancel(context.Background())
	a.cancelP = cancelP
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		// Run returns on a database or stream error; start it again (it
		// resumes from the last applied sequence) until shutdown.
		for backoff := 100 * time.Millisecond; pctx.Err() == nil; backoff = min(2*backoff, 5*time.Second) {
			err := projections.Run(pctx, a.JS, a.Store, projections.RunOptions{MaxBatch: servingProjectionBatch, OnApplied: a.ops.setApplied, Pace: a.paceProjections})
			if pctx.Err() != nil {
				return
			}
			a.log.Error("projections stopped, restarting", "err", err, "in", backoff)
			select {
			case <-pctx.Done():
			case <-time.After(backoff):
			}
		}
	}()
	if last, err := a.Store.LastSeq(ctx); err == nil {
		a.ops.setApplied(last)
	}
	a.Metrics = metrics.New()
	onCommit := func(db *events.DecisionBatch, requests int, took time.Duration) {
		a.Metrics.Commit(db, requests, took)
		a.Front.NoteCommit(db.Sale, took) // set before any writer starts: writers start from the front's OnSale
	}
	// The front is created below, before any writer starts (writers start
	// from the front's OnSale).
	deliver := func(db *events.DecisionBatch, prev, seq uint64) { a.Front.Committed(db, prev, seq) }
	a.manager = handlers.NewManager(a.JS, st, leases, node, c.LeaseTTL, handlers.WriterConfig{MaxBatch: c.MaxBatch, Now: c.Now, Log: a.log,
		OnCommit: onCommit, Deliver: deliver, IdleAfter: c.WriterIdle})
	a.manager.SpreadOver(func() []string {
		// The other processes heard within the last 3 s: a dead one's
		// heartbeat is older by the time its leases run out, and a new sale
		// is not held back for it.
		var live []string
		for _, m := range a.guard.presence.Members() {
			if m.Node != node && c.Now().Sub(m.Beat) < 3*time.Second {
				live = append(live, m.Node)
			}
		}
		return live
	})
	a.liveMgr.Store(a.manager)
	wctx, cancelW := context.WithCancel(context.Background())
	a.cancelW = cancelW
	a.manager.Start(wctx)
	a.Front = front.New(a.JS, st, front.Config{MaxInFlight: c.MaxInFlight, FloodWaiting: FloodInFlight, OnSale: a.manager.Add, Now: c.Now, Log: a.log})
	a.liveFront.Store(a.Front)
	fctx, cancelF := context.WithCancel(context.Background())
	a.cancelF = cancelF
	frontDone := make(chan error, 1)
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		frontDone <- a.Front.Run(fctx)
	}()
	select {
	case <-a.Front.Ready():
	case err := <-frontDone:
		return nil, fmt.Errorf("front: %w", err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if c.Demo {
		if err := a.createDemo(ctx); err != nil {
			return nil, err
		}
	}

	a.Metrics.Gauges(a.saleFigures, func() (float64, bool) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		lag, err := a.projectionLag(ctx)
		return float64(lag), err == nil
	}, func() bool { return a.nc.IsConnected() }, a.Front.InFlight)
	a.Metrics.Limiter(a.guard.limiter.Len, a.guard.limiter.Share, a.guard.degraded)
	if a.ful, err = a.startFulfil(ctx, c, node, st); err != nil {
		return nil, err
	}
	a.Provider = a.ful.Provider
	handler := api.New(api.Config{
		Front: a.Front, Store: a.Store, Identity: verifier, Sessions: sessions,
		Purchase: tokens.NewPurchase(purchaseKeys, c.Now), IDs: events.NewIDs(), Admin: a.AdminToken,
		Now: c.Now, Log: a.log, DecisionWait: c.DecisionWait, MaxBody: c.MaxBody, SessionRate: c.SessionRate,
		Metrics: a.Metrics, MetricsHere: c.MetricsAddr == "", Ready: a.ReadyCached, Stopping: a.stopping, Pages: c.Pages,
		Limiter: a.guard.limiter, Proxies: a.guard.proxies, Limits: a.guard.limits, LimitMode: a.guard.mode, MaxQueueStreams: c.MaxQueueStreams,
		PoW: a.guard.pow, Captcha: a.guard.captcha, Signatures: a.guard.signatures,
		Orders:  ordersAPI{f: a.ful, js: a.JS, st: st, deadline: c.OrderDeadline, now: time.Now},
		Cluster: func(ctx context.Context) (any, error) { return a.Cluster(ctx) },
	})
	if c.MetricsAddr != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", a.Metrics.Handler())
		u, err := a.startSide("metrics", c.MetricsAddr, mux)
		if err != nil {
			return nil, err
		}
		a.MetricsURL = u + "/metrics"
	}
	if c.DebugAddr != "" {
		u, err := a.startSide("debug", c.DebugAddr, debugHandler())
		if err != nil {
			return nil, err
		}
		a.DebugURL = u + "/debug/pprof/"
	}
	ln, err := net.Listen("tcp", c.HTTP)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", c.HTTP, err)
	}
	a.URL = "http://" + ln.Addr().String()
	a.httpURL.Store(&a.URL)
	if a.MetricsURL == "" {
		a.MetricsURL = a.URL + "/metrics"
	}
	a.srv = &http.Server{Handler: a.drain(handler), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	go func() {
		err := a.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		a.served <- err
	}()
	return a, nil
}

// ensureFor bounds how long Start waits for the stream layout: a cluster
// just started may need a while to place replicated streams.
const ensureFor = time.Minute

// ensure creates or checks the stream layout, trying again on a timeout or
// while the cluster cannot place replicated streams yet (a peer not seen
// online: seen once in CI, right after a three-node cluster elected its
// meta leader).
func (a *App) ensure(ctx context.Context, c Config) error {
	deadline := time.Now().Add(ensureFor)
	for backoff := 250 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		err := stream.Ensure(ctx, a.JS, stream.Config{Replicas: c.Replicas, LeaseTTL: c.LeaseTTL})
		if err == nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
			errors.Is(err, jetstream.ErrJetStreamNotEnabled) || stream.IsClusterNotReady(err)) || time.Now().After(deadline) {
			return err
		}
		a.log.Warn("stream layout not ready, trying again", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
	}
}

func loadKeys(given, inData string) (*tokens.KeySet, error) {
	if given != "" {
		k, err := tokens.LoadKeyFile(given)
		if err != nil {
			return nil, fmt.Errorf("key file: %w", err)
		}
		return k, nil
	}
	k, err := tokens.LoadOrCreateKeyFile(inData)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	return k, nil
}

func (a *App) connect(c Config, dir DataDir) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name("flashgate"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) {
			a.log.Warn("reconnected to NATS")
			a.reconnects.fire()
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: a clean close
				a.log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			a.log.Warn("NATS error", "subject", subject, "err", err)
		})}
	if c.NATSURL != "" {
		a.NATS = natsurl.Redact(c.NATSURL)
		if c.NATSCreds != "" {
			opts = append(opts, nats.UserCredentials(c.NATSCreds))
		}
		nc, err := nats.Connect(c.NATSURL, opts...)
		if err != nil {
			return nil, fmt.Errorf("connect to NATS at %s: %w", a.NATS, err)
		}
		return nc, nil
	}
	a.NATS = "embedded"
	eo := embed.Options{Dir: dir.NATS(), SyncAlways: c.SyncAlways}
	if c.NATSListen != "" {
		pass, err := dir.NATSPasswordValue()
		if err != nil {
			return nil, fmt.Errorf("nats password: %w", err)
		}
		eo.Listen, eo.User, eo.Password = c.NATSListen, NATSUser, pass
		if host, _, _ := net.SplitHostPort(c.NATSListen); !isLoopback(host) {
			a.log.Warn("the embedded NATS server listens beyond this machine, over plain TCP, and its user may change or delete the event stream: keep the password secret, prefer a loopback address",
				"nats_listen", c.NATSListen)
		}
		opts = append(opts, nats.UserInfo(NATSUser, pass))
	}
	ns, err := embed.Start(eo)
	if err != nil {
		return nil, err
	}
	a.ns = ns
	if c.NATSListen != "" {
		u, err := url.Parse(ns.ClientURL())
		if err != nil {
			return nil, err
		}
		u.User = url.UserPassword(NATSUser, eo.Password)
		a.NATSPublic = u.String()
	}
	return ns.Connect(opts...)
}

// DemoSale is the id of the sale --demo creates.
const DemoSale = "demo"

func (a *App) createDemo(ctx context.Context) error {
	if _, ok := a.Front.Sale(DemoSale); ok {
		return nil
	}
	now := a.cfg.Now()
	sr := api.SaleRequest{ID: DemoSale, Stock: 100}
	if a.cfg.DemoDifficulty > 0 {
		sr.Challenge = &events.Challenge{Kind: events.ChallengePoW, Difficulty: a.cfg.DemoDifficulty}
	}
	s, err := sr.Validate(now)
	if err != nil {
		return err
	}
	err = a.Front.CreateSale(ctx, api.SaleCreatedEvent(events.NewIDs(), s, now))
	if err != nil && !errors.Is(err, stream.ErrSaleExists) {
		return fmt.Errorf("demo sale: %w", err)
	}
	return nil
}

// Wait blocks until the HTTP server fails or ctx ends, then shuts down.
func (a *App) Wait(ctx context.Context) error {
	var err error
	select {
	case <-ctx.Done():
	case err = <-a.served:
	}
	if serr := a.Shutdown(); err == nil {
		err = serr
	}
	return err
}

// Shutdown stops the service in order: stop taking HTTP requests and let
// the ones in flight get their answer (the writers still decide), then stop
// the front, the writers (releasing their leases), the projections, and
// NATS. It is safe to call more than once.
func (a *App) Shutdown() error {
	a.stopOnce.Do(func() {
		close(a.stopping)
		if a.srv != nil {
			a.drainArrivals()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			if err := a.srv.Shutdown(ctx); err != nil {
				a.stopErr = fmt.Errorf("http shutdown: %w", err)
				_ = a.srv.Close() // what did not finish in time is cut
			}
			cancel()
		}
		a.teardown()
	})
	return a.stopErr
}

func (a *App) teardown() {
	for _, srv := range a.side {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
	}
	if a.cancelF != nil {
		a.cancelF()
	}
	if a.cancelW != nil {
		a.cancelW()
		a.manager.Wait()
	}
	a.ful.stop()
	if a.cancelP != nil {
		a.cancelP()
	}
	if a.cancelG != nil {
		a.cancelG()
	}
	a.bg.Wait()
	if a.Store != nil {
		_ = a.Store.Close()
	}
	if a.nc != nil {
		_ = a.nc.Drain()
		a.nc.Close()
	}
	if a.ns != nil {
		if err := a.ns.Stop(); err != nil {
			a.log.Error("stopping the embedded NATS server", "err", err)
		}
	}
	if a.unlock != nil {
		a.unlock()
	}
}

// Abs returns the absolute form of a path for messages, or the path itself.
func Abs(p string) string {
	if ap, err := filepath.Abs(p); err == nil {
		return ap
	}
	return p
}

// Draining bounds: how long arrivals must pause before the listener
// closes, and how long draining may last at most.
const (
	drainQuiet = 150 * time.Millisecond
	drainMax   = 3 * time.Second
)

// drain answers requests that arrive once shutdown has begun with 503 and
// Connection: close, instead of leaving them in the listener's backlog to be
// reset when it closes.
func (a *App) drain(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.lastReq.Store(time.Now().UnixNano())
		if a.draining.Load() {
			w.Header().Set("Connection", "close")
			w.Header().Set("Retry-After", "1")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"error":"shutting_down","message":"this server is stopping, retry shortly"}` + "\n"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// drainArrivals switches to draining and waits until no request has arrived
// for drainQuiet (at most drainMax).
func (a *App) drainArrivals() {
	a.draining.Store(true)
	a.srv.SetKeepAlivesEnabled(false)
	deadline := time.Now().Add(drainMax)
	for time.Now().Before(deadline) {
		if time.Since(time.Unix(0, a.lastReq.Load())) >= drainQuiet {
			return
		}
		time.Sleep(drainQuiet / 3)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

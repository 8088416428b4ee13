// Package loadgen is flashgate's load generator (flashgate bench): many
// virtual shoppers, each with a session of its own, drive a server through a
// scenario (tokens, purchase, queue, mixed) under a closed model (a number of
// virtual users, each iterating back to back) or an open model (iterations
// started at a fixed rate whatever the answers), and the run is reported
// with HDR-histogram latencies per request kind, every status code, a
// per-second time series, a correctness verdict from the server's own
// figures, and what the generator itself cost (see Report).
//
// Bench is the benchmark; Run is the older race the app's tests use.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The scenarios.
const (
	// ScenarioTokens: each iteration is one fresh shopper's token request.
	ScenarioTokens = "tokens"
	// ScenarioPurchase: a fresh shopper's token request, then a purchase
	// with the token.
	ScenarioPurchase = "purchase"
	// ScenarioQueue: a fresh shopper joins the sale's waiting room, waits
	// for admission on the ticket's event stream, then buys.
	ScenarioQueue = "queue"
	// ScenarioMixed: honest shoppers as in ScenarioPurchase, and a share
	// (Options.Abusive) of abusive iterations: no session, forged purchase
	// tokens, and one session asking for tokens as fast as it can.
	ScenarioMixed = "mixed"
)

// Scenarios lists the scenarios.
var Scenarios = []string{ScenarioTokens, ScenarioPurchase, ScenarioQueue, ScenarioMixed}

// Defaults of Options.
const (
	DefaultVUs            = 64
	DefaultMaxInFlight    = 10000
	DefaultDuration       = 10 * time.Second
	DefaultClosedShoppers = 200000
	// QueueAdmissionRate is the admission rate of a sale Bench creates for
	// the queue scenario: the highest a sale may have, so the run measures
	// the waiting room's own speed rather than a configured trickle.
	QueueAdmissionRate = 100000
)

// Options describes a run. A zero field takes the default its comment
// names; a zero Warmup is no warm-up.
type Options struct {
	URL        string // base URL of the server under test
	AdminToken string // to create the sale and read its figures (not needed with Sale and SkipVerdict)
	Scenario   string // ScenarioTokens (default), ...

	VUs         int     // closed model: virtual users (default 64); used when Rate is 0
	Rate        float64 // open model: iterations started per second
	MaxInFlight int     // open model: iterations in flight at most (default 10000); starts beyond are dropped and counted

	Duration time.Duration // measured phase (default 10s), unless Requests
	Requests int64         // measured iterations instead of a duration
	Warmup   time.Duration // load before the measured phase, not measured

	Shoppers int     // sessions made before the run (default: derived, see Report.Shoppers)
	Sale     string  // an existing sale; "": create bench-<unix nanos>
	Stock    int64   // stock of a created sale (default: one unit per shopper, so every honest request can succeed)
	Abusive  float64 // mixed: share of abusive iterations, 0 to <1

	SkipVerdict bool  // do not read the server's figures (a server without the admin API)
	Embedded    bool  // the server runs in this process: its CPU counts as the generator's
	ServerPIDs  []int // local processes of the server under test: their CPU over the measured phase is reported (Linux)

	Progress      io.Writer     // live progress; nil: none
	ProgressEvery time.Duration // default 1s
	ProgressLive  bool          // Progress is a terminal: rewrite one line

	Client *http.Client // default: one transport sized for the run

	now func() time.Time // tests
}

// ErrIncorrect is returned by callers when the verdict is not empty.
var ErrIncorrect = errors.New("the server's figures break an invariant")

// Phases of a run.
const (
	phaseWarmup int32 = iota
	phaseMeasured
	phaseDone
)

// plan is what Bench derives from Options before it starts.
type plan struct {
	open           bool
	shoppers       int // honest sessions
	warmupShoppers int // closed model: the warm-up ends when it has used this many
	stock          int64
	concurrency    int // requests in flight at most (for the transport)
}

// ceil is x rounded up, forgiving the float error in a product like
// 1000 * 12 * 1.1.
func ceil(x float64) int { return int(math.Ceil(x - 1e-9)) }

// planFor derives the plan of o (defaults applied).
func planFor(o Options) plan {
	p := plan{open: o.Rate > 0}
	honest := 1.0
	if o.Scenario == ScenarioMixed {
		honest = 1 - o.Abusive
	}
	warm, dur := o.Warmup.Seconds(), o.Duration.Seconds()
	switch {
	case p.open && o.Requests > 0:
		p.warmupShoppers = ceil(o.Rate * warm * 1.1 * honest)
		p.shoppers = p.warmupShoppers + ceil(float64(o.Requests)*honest) + 1
	case p.open:
		p.warmupShoppers = ceil(o.Rate * warm * 1.1 * honest)
		p.shoppers = ceil(o.Rate*(warm+dur)*1.1*honest) + 1
	case o.Requests > 0:
		measured := ceil(float64(o.Requests)*honest) + 1
		if honest < 1 {
			// The honest share of the measured iterations is exact only
			// over a run of iterations that starts where the measured
			// phase does; the virtual users that straddle the end of the
			// warm-up shift it by up to one iteration each.
			measured += o.VUs
		}
		if o.Warmup > 0 {
			p.warmupShoppers = max(measured/4, o.VUs)
		}
		p.shoppers = p.warmupShoppers + measured
	default:
		p.shoppers = ceil(DefaultClosedShoppers * honest)
		p.warmupShoppers = int(float64(p.shoppers) * warm / (warm + dur))
	}
	if o.Shoppers > 0 {
		switch {
		case o.Requests > 0:
			p.warmupShoppers = max(0, min(p.warmupShoppers, o.Shoppers-ceil(float64(o.Requests)*honest)))
		case p.shoppers > 0:
			p.warmupShoppers = int(float64(o.Shoppers) * float64(p.warmupShoppers) / float64(p.shoppers))
		}
		p.shoppers = o.Shoppers
	}
	p.stock = o.Stock
	if p.stock <= 0 {
		p.stock = int64(max(p.shoppers, 1))
	}
	p.concurrency = o.VUs
	if p.open {
		p.concurrency = o.MaxInFlight
	}
	return p
}

// withDefaults fills the zero fields of o.
func (o Options) withDefaults() (Options, error) {
	if o.Scenario == "" {
		o.Scenario = ScenarioTokens
	}
	known := false
	for _, s := range Scenarios {
		known = known || s == o.Scenario
	}
	if !known {
		return o, fmt.Errorf("scenario %q: want one of %s", o.Scenario, strings.Join(Scenarios, ", "))
	}
	if o.VUs <= 0 {
		o.VUs = DefaultVUs
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.Duration <= 0 && o.Requests <= 0 {
		o.Duration = DefaultDuration
	}
	if o.Rate < 0 || math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0) {
		return o, fmt.Errorf("rate %v: want iterations per second > 0 (open model), or 0 (closed model)", o.Rate)
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	}
	if o.Scenario != ScenarioMixed {
		o.Abusive = 0
	}
	if o.Abusive < 0 || o.Abusive >= 1 || math.IsNaN(o.Abusive) {
		return o, fmt.Errorf("abusive %v: want a share from 0 to below 1", o.Abusive)
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = time.Second
	}
	if o.now == nil {
		o.now = time.Now
	}
	o.URL = strings.TrimRight(o.URL, "/")
	if o.URL == "" {
		return o, errors.New("no server URL")
	}
	if o.AdminToken == "" && (o.Sale == "" || !o.SkipVerdict) {
		return o, errors.New("no admin token: it creates the sale and reads its figures for the verdict (give a sale and skip the verdict to run without one)")
	}
	return o, nil
}

// newClient is the run's HTTP client: one transport whose idle pool holds
// a connection for every request in flight.
func newClient(concurrency int) *http.Client {
	conns := max(concurrency+16, 100)
	return &http.Client{Transport: &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}}
}

// runner is one run in progress.
type runner struct {
	o     Options
	plan  plan
	main  kind
	hc    *http.Client
	sale  string
	pool  *pool
	ctx   context.Context // requests; cancelled when the run is interrupted
	urls  urls
	ser   series
	start time.Time // the measured phase's start (written before phase becomes measured)

	phase      atomic.Int32
	iter       atomic.Int64 // iterations claimed (closed model)
	measuredN  atomic.Int64 // measured iterations claimed (closed model, Requests)
	inFlight   atomic.Int64 // open model
	phaseMu    sync.Mutex
	stopTimer  *time.Timer
	end        time.Time
	cpu0, cpu1 cpuSample // at start and end
	notesMu    sync.Mutex
	notes      []string
	exhaustedN atomic.Bool

	recMu sync.Mutex
	recs  []*recorder

	// open model
	work    chan job
	workers sync.WaitGroup
	nextID  atomic.Int64
	shards  []*recorder
	sched   schedStats
}

// schedStats is what the open model's dispatcher counted in the measured
// phase.
type schedStats struct {
	started, dropped int64
}

// job is one iteration.
type job struct {
	intended time.Time // open model: when it was due; zero in the closed model
	measured bool
	class    class
	shopper  int // index into the pool; -1 for abusive iterations without one
	n        int64
}

// note adds a plain statement to the report.
func (r *runner) note(format string, args ...any) {
	r.notesMu.Lock()
	defer r.notesMu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// Bench runs a benchmark against the server at o.URL and reports it. The
// error is for a run that could not be made (no server, no sale, no
// sessions); a run that found the server wrong returns a Report whose
// Verdict says so.
func Bench(ctx context.Context, o Options) (*Report, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &runner{o: o, plan: planFor(o), main: mainKind(o.Scenario)}
	r.hc = o.Client
	if r.hc == nil {
		r.hc = newClient(r.plan.concurrency)
		defer r.hc.CloseIdleConnections()
	}
	var cancel context.CancelFunc
	r.ctx, cancel = context.WithCancel(ctx)
	defer cancel()

	r.sale = o.Sale
	if r.sale == "" {
		r.sale = fmt.Sprintf("bench-%d", o.now().UnixNano())
		if err := r.createSale(ctx); err != nil {
			return nil, err
		}
	}
	r.urls = makeURLs(o.URL, r.sale)
	setup := o.now()
	abusive := 0
	if o.Abusive > 0 {
		abusive = abusiveSessions
	}
	r.pool, err = makeSessions(ctx, r.hc, r.urls.session, r.plan.shoppers, abusive, r.progressWriter())
	if err != nil {
		return nil, err
	}
	setupTime := o.now().Sub(setup)

	stop := r.startProgress()
	if r.plan.open {
		r.runOpen(ctx)
	} else {
		r.runClosed(ctx)
	}
	stop()
	if ctx.Err() != nil {
		r.note("interrupted: the figures cover the run until then")
	}
	rep := r.report(setupTime)
	if !o.SkipVerdict && ctx.Err() == nil {
		if err := r.verdict(context.WithoutCancel(ctx), rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// beginMeasured starts the measured phase now (once).
func (r *runner) beginMeasured() { r.beginMeasuredAt(true) }

// beginMeasuredAt starts the measured phase now (once); timed arms the
// closed model's duration. A run that ended in its warm-up gets an empty
// measured phase.
func (r *runner) beginMeasuredAt(timed bool) {
	r.phaseMu.Lock()
	defer r.phaseMu.Unlock()
	if !r.start.IsZero() {
		return
	}
	r.cpu0 = sampleCPU(r.o.now(), r.o.ServerPIDs)
	r.start = r.cpu0.at
	if timed && !r.plan.open && r.o.Requests <= 0 {
		r.stopTimer = time.AfterFunc(r.o.Duration, r.finish)
	}
	r.phase.CompareAndSwap(phaseWarmup, phaseMeasured)
}

// finish ends the run: no iteration starts after it.
func (r *runner) finish() { r.phase.Store(phaseDone) }

// exhausted ends the run because the pool of shoppers ran out.
func (r *runner) exhausted() {
	if r.exhaustedN.CompareAndSwap(false, true) {
		phase := "the measured phase"
		if r.phase.Load() == phaseWarmup {
			phase = "the warm-up"
		}
		r.note("the pool of %d shoppers ran out during %s, so the run ended there: give --shoppers more", r.plan.shoppers, phase)
	}
	r.finish()
}

// register keeps rec for the report.
func (r *runner) register(rec *recorder) {
	r.recMu.Lock()
	defer r.recMu.Unlock()
	r.recs = append(r.recs, rec)
}

// runClosed runs the closed model: VUs virtual users, each running
// iterations back to back until the run ends.
func (r *runner) runClosed(ctx context.Context) {
	if r.o.Warmup > 0 {
		t := time.AfterFunc(r.o.Warmup, r.beginMeasured)
		defer t.Stop()
	} else {
		r.beginMeasured()
	}
	stopOnCancel := context.AfterFunc(ctx, r.finish)
	defer stopOnCancel()
	var wg sync.WaitGroup
	for range r.o.VUs {
		rec := newRecorder(false)
		r.register(rec)
		w := r.newWorker(rec, false)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				j, ok := r.claim()
				if !ok {
					return
				}
				rec.busy.Add(1)
				w.iterate(j)
				rec.busy.Add(-1)
			}
		}()
	}
	wg.Wait()
	r.phaseMu.Lock()
	if r.stopTimer != nil {
		r.stopTimer.Stop()
	}
	r.phaseMu.Unlock()
	r.endMeasured()
}

// endMeasured ends the measured phase (an empty one for a run that ended
// in its warm-up), reading the CPU figures at its end.
func (r *runner) endMeasured() {
	r.beginMeasuredAt(false)
	r.cpu1 = sampleCPU(r.o.now(), r.o.ServerPIDs)
	r.end = r.cpu1.at
}

// claim hands a virtual user its next iteration; false: the run is over.
func (r *runner) claim() (job, bool) {
	ph := r.phase.Load()
	if ph == phaseDone {
		return job{}, false
	}
	counted := false
	if ph == phaseMeasured && r.o.Requests > 0 {
		if r.measuredN.Add(1) > r.o.Requests {
			r.finish()
			return job{}, false
		}
		counted = true
	}
	i := r.iter.Add(1) - 1
	j := job{class: r.classOf(i), shopper: -1, n: i}
	if j.class == classHonest {
		idx, ok := r.pool.take()
		if !ok {
			r.exhausted()
			return job{}, false
		}
		j.shopper = idx
		if ph == phaseWarmup && idx >= r.plan.warmupShoppers {
			r.beginMeasured() // the warm-up's share of the pool is used up
			ph = phaseMeasured
		}
	}
	if ph == phaseMeasured && !counted && r.o.Requests > 0 && r.measuredN.Add(1) > r.o.Requests {
		r.finish()
		return job{}, false
	}
	j.measured = ph == phaseMeasured
	return j, true
}

// classOf is the class of iteration i: in the mixed scenario, exactly the
// share Abusive of every run of iterations is abusive, spread evenly, and
// the abusive ones take the abusive classes in turn.
func (r *runner) classOf(i int64) class {
	a := r.o.Abusive
	if a <= 0 {
		return classHonest
	}
	k := r.abusiveIndex(i)
	if k == r.abusiveIndex(i-1) {
		return classHonest
	}
	return abusiveClasses[(k-1)%int64(len(abusiveClasses))]
}

// abusiveIndex is how many of the iterations up to i are abusive.
func (r *runner) abusiveIndex(i int64) int64 { return int64(float64(i+1) * r.o.Abusive) }

// abusiveTurn is, for an abusive iteration i, how many iterations of its
// class came before it.
func (r *runner) abusiveTurn(i int64) int64 {
	return (r.abusiveIndex(i) - 1) / int64(len(abusiveClasses))
}

// badToken is what the bad-token client sends in iteration i: a session
// and a forged token, each taken in turn by the client's own count, so that
// every one is used as often as the others whatever the share Abusive.
func (r *runner) badToken(i int64) (auth, token string) {
	turn := r.abusiveTurn(i)
	return r.pool.auth[r.pool.badTokenSession(turn)], forgedTokens[turn%int64(len(forgedTokens))]
}

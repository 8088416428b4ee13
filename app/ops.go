package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/metrics"
	"github.com/nats-io/nats.go"
)

// DefaultReadyLag is how many messages the projections may lag before the
// process reports not ready.
const DefaultReadyLag = 10000

// NATSUser is the user of the embedded server's TCP listener.
const NATSUser = "flashgate"

// NATSPassword is where the embedded TCP listener's password is kept.
func (d DataDir) NATSPassword() string { return filepath.Join(string(d), "nats-password") }

// NATSPasswordValue returns the listener's password, generated on first use.
func (d DataDir) NATSPasswordValue() (string, error) {
	return readOrCreate(d.NATSPassword(), func() string {
		b := make([]byte, 18)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	})
}

// opsState is what readiness and the gauges read.
type opsState struct {
	applied atomic.Uint64 // last stream sequence the projections applied
	// behind is set while the views are behind because they yielded to a
	// flood, until they are within ReadyLag again.
	behind     atomic.Bool
	progressAt atomic.Int64 // unix nanos when applied last rose
	checkedAt  atomic.Int64 // unix nanos of caughtUp's last look at the lag
}

// setApplied raises the applied sequence, never lowers it.
func (o *opsState) setApplied(seq uint64) {
	for {
		cur := o.applied.Load()
		if seq <= cur {
			return
		}
		if o.applied.CompareAndSwap(cur, seq) {
			o.progressAt.Store(time.Now().UnixNano())
			return
		}
	}
}

// saleFigures feeds the per-sale gauges from the front's cached heads.
func (a *App) saleFigures() []metrics.SaleFigures {
	vs := a.Front.Sales()
	out := make([]metrics.SaleFigures, 0, len(vs))
	for _, v := range vs {
		h := v.Head
		out = append(out, metrics.SaleFigures{Sale: v.Sale.ID, Stock: h.Stock, StockLeft: h.StockLeft(), Quota: h.Quota,
			QuotaLeft: h.QuotaLeft(), Issued: h.Issued, Expired: h.Expired, Redeemed: h.Redeemed,
			Outstanding: h.Outstanding(), BatchVersion: h.Version,
			Queue: v.Sale.Queue != nil, QueueWaiting: int64(v.QueueWaiting), QueueAdmitted: v.QueueAdmitted})
	}
	return out
}

// DefaultProjectionShare is Config.ProjectionShare's default.
const DefaultProjectionShare = 0.1

// floodLinger is how long a flood is taken to last after its last request
// (its lulls are short).
const floodLinger = time.Second

// DefaultFloodLag is Config.FloodLag's default: at 10,000 token requests a
// second the stream grows by about 1,100 messages a second, so the views
// may yield to about 45 s of such a flood.
const DefaultFloodLag = 50000

// servingProjectionBatch is the most stream messages a serving process's
// views apply in one transaction: a transaction holds a core for its whole
// length, and 512 messages of a flood (tens of thousands of rows) made the
// shoppers' p99 latency worse for a few per cent of the views' speed
// (measured: p99 22-23 ms against 24-30 ms at 10,000 token requests/s).
// Smaller is not better: 16 cost more per request and did not help the
// p99 (two interleaved pairs of served floods: 122 and 109 µs of server CPU
// a request against 100 and 104, p99 32 and 27 ms against 25 and 25).
const servingProjectionBatch = 64

// paceProjections is the views' Pace (see projectionPause). It pauses in
// slices, looking at the lag again after each: a flood can grow it quickly.
func (a *App) paceProjections(ctx context.Context, took time.Duration) {
	const slice = 50 * time.Millisecond
	f := a.liveFront.Load()
	for left := time.Duration(-1); ; {
		if a.cfg.ProjectionShare >= 1 || f == nil || !f.Flooded(floodLinger) {
			a.caughtUp(ctx)
			return // no flood here: full speed
		}
		lag, err := a.projectionLag(ctx)
		if err != nil {
			return
		}
		if left < 0 {
			left = projectionPause(a.cfg.ProjectionShare, took, lag, a.cfg.FloodLag)
		} else if projectionPause(a.cfg.ProjectionShare, took, lag, a.cfg.FloodLag) == 0 {
			return // fallen too far behind while pausing: catch up
		}
		if lag > a.cfg.ReadyLag {
			a.ops.behind.Store(true)
		}
		if left <= 0 {
			return
		}
		d := min(left, slice)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		left -= d
	}
}

// caughtUp ends the views' flood allowance once they are within ReadyLag.
// It looks at most every 100 ms (a look asks the stream).
func (a *App) caughtUp(ctx context.Context) {
	if !a.ops.behind.Load() {
		return
	}
	now := time.Now().UnixNano()
	if last := a.ops.checkedAt.Load(); now-last < int64(100*time.Millisecond) || !a.ops.checkedAt.CompareAndSwap(last, now) {
		return
	}
	if lag, err := a.projectionLag(ctx); err == nil && lag <= a.cfg.ReadyLag {
		a.ops.behind.Store(false)
	}
}

// projectionPause is how long the views wait after a transaction that took
// took, while requests wait for decisions in this process: took*(1-share)/
// share (at most a second), so that they take about share of a core and
// the shoppers the rest; none when they are more than floodLag behind.
func projectionPause(share float64, took time.Duration, lag, floodLag uint64) time.Duration {
	if share >= 1 || share <= 0 || lag > floodLag {
		return 0
	}
	return min(time.Duration(float64(took)*(1-share)/share), time.Second)
}

// lagBound is how far behind the views may be for the process to be ready:
// readyLag, or floodLag + readyLag while this process serves a flood or its
// views catch up after yielding to one (the views yield up to floodLag, and
// may overshoot it a little before they take full speed again).
func lagBound(readyLag, floodLag uint64, flood bool) uint64 {
	if flood {
		return floodLag + readyLag
	}
	return readyLag
}

// stalledAfter is how long views behind for a flood may make no progress
// before the process reads as not ready.
const stalledAfter = 10 * time.Second

// projectionLag is the stream's last sequence minus the last applied one.
func (a *App) projectionLag(ctx context.Context) (uint64, error) {
	st, err := a.JS.Stream(ctx, events.StreamName)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	applied := a.ops.applied.Load()
	if applied >= info.State.LastSeq {
		return 0, nil
	}
	return info.State.LastSeq - applied, nil
}

// readyCache keeps the last readiness answer for a second, so that a flood
// of /readyz calls costs NATS one set of checks a second.
type readyCache struct {
	mu     sync.Mutex
	at     time.Time
	ok     bool
	checks map[string]string
}

// ReadyCached is Ready, answered from a cache at most a second old.
func (a *App) ReadyCached(ctx context.Context) (bool, map[string]string) {
	a.ready.mu.Lock()
	defer a.ready.mu.Unlock() // one check at a time: the rest wait for its answer
	if time.Since(a.ready.at) < time.Second {
		return a.ready.ok, a.ready.checks
	}
	a.ready.ok, a.ready.checks = a.Ready(ctx)
	a.ready.at = time.Now()
	return a.ready.ok, a.ready.checks
}

// Ready checks, each bounded by ctx: NATS connected, the stream and the
// lease bucket answer, the front has loaded the sales, the projections are
// within the lag threshold, and no writer of this process is failing.
func (a *App) Ready(ctx context.Context) (bool, map[string]string) {
	checks := map[string]string{}
	ok := true
	fail := func(name, why string) { checks[name], ok = why, false }
	if st := a.nc.Status(); st != nats.CONNECTED {
		fail("nats", "not connected: "+st.String())
	} else {
		checks["nats"] = "ok"
	}
	if st, err := a.JS.Stream(ctx, events.StreamName); err != nil {
		fail("stream", err.Error())
	} else if _, err := st.Info(ctx); err != nil {
		fail("stream", err.Error())
	} else {
		checks["stream"] = "ok"
	}
	if _, err := a.JS.KeyValue(ctx, events.LeaseBucket); err != nil {
		fail("leases", err.Error())
	} else {
		checks["leases"] = "ok"
	}
	select {
	case <-a.Front.Ready():
		checks["front"] = "ok"
	default:
		fail("front", "sales not loaded yet")
	}
	if checks["stream"] == "ok" {
		// Shoppers flood this process now, or its views still catch up
		// from that: read before the lag, so a flood that ends in between
		// does not clear the allowance the views still need.
		busy := a.Front.Flooded(floodLinger)
		lag, err := a.projectionLag(ctx)
		if err == nil && lag <= a.cfg.ReadyLag && !busy {
			a.ops.behind.Store(false) // caught up (the views may have nothing left to apply)
		}
		flood := busy || a.ops.behind.Load()
		bound := lagBound(a.cfg.ReadyLag, a.cfg.FloodLag, flood)
		idle := time.Since(time.Unix(0, a.ops.progressAt.Load()))
		switch {
		case err != nil:
			fail("projections", err.Error())
		case lag > bound:
			fail("projections", fmt.Sprintf("lag %d messages > %d", lag, bound))
		case lag > a.cfg.ReadyLag && idle > stalledAfter:
			fail("projections", fmt.Sprintf("lag %d messages, and no progress for %v", lag, idle.Round(time.Second)))
		case lag > a.cfg.ReadyLag:
			checks["projections"] = fmt.Sprintf("ok (lag %d: behind for a flood)", lag)
		default:
			checks["projections"] = fmt.Sprintf("ok (lag %d)", lag)
		}
	}
	owned, failing := a.manager.Status()
	if len(failing) > 0 {
		names := make([]string, 0, len(failing))
		for s, why := range failing {
			names = append(names, s+": "+why)
		}
		sort.Strings(names)
		fail("writers", "failing: "+strings.Join(names, "; "))
	} else {
		checks["writers"] = fmt.Sprintf("ok (%d sales written here, %d of them asleep)", len(owned), len(a.manager.Asleep()))
	}
	return ok, checks
}

// startSide starts a listener of its own (metrics, pprof). Listen first, so
// a bad address fails at start.
func (a *App) startSide(name, addr string, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("%s listener on %s: %w", name, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	a.side = append(a.side, srv)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error(name+" listener stopped", "err", err)
		}
	}()
	return "http://" + ln.Addr().String(), nil
}

// debugHandler serves pprof, and nothing else. The cmdline profile is left
// out: the command line may carry secrets (--admin-token).
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

package fulfil

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/flashgate/flashgate/internal/wait"
	"golang.org/x/time/rate"
)

// FloodPace holds a worker back while its process serves a flood of
// shoppers: a sale's decisions come first, and an order is asynchronous by
// design. A flood is Threshold or more requests waiting for decisions, and
// lasts until Linger has passed without that. During one at most Rate
// orders a second are taken; the others wait, durably, in the orders queue
// and go out at full speed once it is over. Outside a flood it never waits.
type FloodPace struct {
	Waiting   func() int64  // requests waiting for decisions in the process now
	Threshold int64         // Waiting at or above it is a flood (default 8)
	Linger    time.Duration // a flood lasts this long after it was last seen (default 1 s)
	Rate      float64       // orders a second during a flood; <= 0: no limit

	// now and sleep are the clock, replaced in tests.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	once sync.Once
	lim  *rate.Limiter
	mu   sync.Mutex
	seen time.Time // when a flood was last seen
}

// floodRecheck is how often a held-back worker looks again whether the
// flood is over.
const floodRecheck = 50 * time.Millisecond

func (p *FloodPace) init() {
	if p.Threshold <= 0 {
		p.Threshold = 8
	}
	if p.Linger <= 0 {
		p.Linger = time.Second
	}
	if p.now == nil {
		p.now = time.Now
	}
	if p.sleep == nil {
		p.sleep = wait.Sleep
	}
	// A burst of what one recheck period allows, so that a high rate is
	// not capped by the waits' granularity.
	burst := max(1, int(math.Ceil(p.Rate*floodRecheck.Seconds())))
	p.lim = rate.NewLimiter(rate.Limit(p.Rate), burst)
}

// Flood reports whether the process serves a flood now.
func (p *FloodPace) Flood() bool {
	p.once.Do(p.init)
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Waiting != nil && p.Waiting() >= p.Threshold {
		p.seen = now
		return true
	}
	return !p.seen.IsZero() && now.Sub(p.seen) < p.Linger
}

// Wait returns when the next order may be taken, or with ctx's error.
func (p *FloodPace) Wait(ctx context.Context) error {
	if p.Rate <= 0 || p.Waiting == nil {
		return nil
	}
	p.once.Do(p.init)
	for {
		if !p.Flood() {
			return nil
		}
		now := p.now()
		if p.lim.AllowN(now, 1) {
			return nil
		}
		// Until the next order is allowed, or the next look at the flood.
		d := time.Duration((1 - p.lim.TokensAt(now)) / p.Rate * float64(time.Second))
		d = max(min(d, floodRecheck), time.Millisecond)
		if err := p.sleep(ctx, d); err != nil {
			return err
		}
	}
}

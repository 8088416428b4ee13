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
// design. During a flood (Flooded: the front's detector, which the views
// and readiness use too) at most Rate orders a second are taken; the others
// wait, durably, in the orders queue and go out at full speed once it is
// over. Outside a flood it never waits.
type FloodPace struct {
	Flooded func() bool // whether the process serves a flood now
	Rate    float64     // orders a second during a flood; <= 0: no limit

	// now and sleep are the clock, replaced in tests.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	once sync.Once
	lim  *rate.Limiter
}

// floodRecheck is how often a held-back worker looks again whether the
// flood is over.
const floodRecheck = 50 * time.Millisecond

func (p *FloodPace) init() {
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

// Wait returns when the next order may be taken, or with ctx's error.
func (p *FloodPace) Wait(ctx context.Context) error {
	if p.Rate <= 0 || p.Flooded == nil {
		return nil
	}
	p.once.Do(p.init)
	for {
		if !p.Flooded() {
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

package fulfil

import (
	"context"
	"sync"
	"time"

	"github.com/flashgate/flashgate/internal/wait"
	"golang.org/x/time/rate"
)

// FloodPace holds a worker back while its process serves a flood of
// shoppers: a sale's decisions come first, and an order is asynchronous by
// design. While Busy reports a flood, at most Rate orders a second are
// taken; the others wait, durably, in the orders queue and go out at full
// speed once the flood is over. Outside a flood it never waits.
type FloodPace struct {
	Busy func() bool // whether the process serves a flood now
	Rate float64     // orders a second during a flood; <= 0: no limit

	// now and sleep are the clock, replaced in tests.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error

	once sync.Once
	lim  *rate.Limiter
}

// floodRecheck is how often a held-back worker looks again whether the
// flood is over.
const floodRecheck = 50 * time.Millisecond

// Wait returns when the next order may be taken, or with ctx's error.
func (p *FloodPace) Wait(ctx context.Context) error {
	if p.Rate <= 0 || p.Busy == nil {
		return nil
	}
	p.once.Do(func() {
		if p.now == nil {
			p.now = time.Now
		}
		if p.sleep == nil {
			p.sleep = wait.Sleep
		}
		p.lim = rate.NewLimiter(rate.Limit(p.Rate), 1)
	})
	for {
		if !p.Busy() {
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

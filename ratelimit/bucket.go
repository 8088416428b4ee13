package ratelimit

import (
	"math"
	"time"
)

// Bucket is one key's state: Tokens left at time Last, in nanoseconds on
// the caller's timeline (unix nanoseconds, or the monotonic nanoseconds a
// Limiter uses). A new key starts full: Bucket{Tokens: capacity, Last: now}.
type Bucket struct {
	Tokens float64
	Last   int64
}

// Take refills b to now at rate tokens a second, never above capacity, then
// takes cost tokens if the bucket holds that many. A clock that went
// backwards (now before b.Last) refills nothing and leaves Last where it
// was, so the time is not counted twice when the clock catches up. A
// refused request takes nothing.
//
// It returns the new bucket nb, whether the request is allowed, the tokens
// remaining in nb, and two durations from now:
//
//   - retryAfter: 0 when allowed; when refused, the shortest wait after
//     which the same request is allowed if nothing else takes from the
//     bucket (Take(capacity, rate, nb, now+retryAfter, cost) allows it);
//     the largest Duration when cost is above capacity, as it never is.
//   - reset: the shortest wait after which nb is full again, 0 if it is.
//
// Waits are rounded up to the nanosecond and saturate at the largest
// Duration. A cost below 0 counts as 0; a rate that is not positive
// refills nothing.
func Take(capacity, rate float64, b Bucket, now int64, cost float64) (nb Bucket, ok bool, remaining float64, retryAfter, reset time.Duration) {
	if !(rate > 0) {
		rate = 0
	}
	nb = b
	if now > b.Last {
		nb.Tokens = refill(b.Tokens, rate, now-b.Last)
		nb.Last = now
	}
	if nb.Tokens > capacity {
		nb.Tokens = capacity
	}
	if !(nb.Tokens >= 0) { // corrupt or NaN state: treat as empty
		nb.Tokens = 0
	}
	cost = max(cost, 0)
	// lag is how far the bucket's time is ahead of now: the refill only
	// starts at nb.Last.
	lag := time.Duration(nb.Last - now)
	switch {
	case nb.Tokens >= cost:
		nb.Tokens -= cost
		ok = true
	case cost > capacity:
		retryAfter = math.MaxInt64
	default:
		retryAfter = addSat(lag, wait(nb.Tokens, rate, cost))
	}
	if nb.Tokens < capacity {
		reset = addSat(lag, wait(nb.Tokens, rate, capacity))
	}
	return nb, ok, nb.Tokens, retryAfter, reset
}

// refill is tokens plus what rate adds in ns nanoseconds, uncapped. Take
// and wait share it so that a wait computed here is exact for Take.
func refill(tokens, rate float64, ns int64) float64 {
	return tokens + rate*float64(ns)/1e9
}

// wait is the fewest nanoseconds after which refill(tokens, rate, ns)
// reaches want, saturating at the largest Duration.
func wait(tokens, rate, want float64) time.Duration {
	if tokens >= want {
		return 0
	}
	d := ceilDuration((want - tokens) / rate * 1e9)
	if d == math.MaxInt64 {
		return d
	}
	// The division and the refill round differently: step to the first
	// nanosecond the refill agrees on, and back while the one before it
	// agrees too. One or two steps at most.
	for i := 0; i < 8 && refill(tokens, rate, int64(d)) < want; i++ {
		d++
	}
	for i := 0; i < 8 && d > 1 && refill(tokens, rate, int64(d-1)) >= want; i++ {
		d--
	}
	return d
}

// addSat is a+b for non-negative durations, saturating.
func addSat(a, b time.Duration) time.Duration {
	if a <= 0 {
		return b
	}
	if b > math.MaxInt64-a {
		return math.MaxInt64
	}
	return a + b
}

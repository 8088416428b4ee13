package ratelimit_test

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flashgate/flashgate/ratelimit"
)

const ms = int64(time.Millisecond)

func TestTake(t *testing.T) {
	tests := []struct {
		name           string
		capacity, rate float64
		b              ratelimit.Bucket
		now            int64
		cost           float64

		want       ratelimit.Bucket
		ok         bool
		retryAfter time.Duration
		reset      time.Duration
	}{
		{name: "new bucket is full", capacity: 10, rate: 2, b: ratelimit.Bucket{Tokens: 10, Last: 0}, now: 0, cost: 1,
			want: ratelimit.Bucket{Tokens: 9, Last: 0}, ok: true, reset: 500 * time.Millisecond},
		{name: "cost above 1", capacity: 10, rate: 2, b: ratelimit.Bucket{Tokens: 10, Last: 0}, now: 0, cost: 4,
			want: ratelimit.Bucket{Tokens: 6, Last: 0}, ok: true, reset: 2 * time.Second},
		{name: "take the last tokens", capacity: 10, rate: 2, b: ratelimit.Bucket{Tokens: 1, Last: 0}, now: 0, cost: 1,
			want: ratelimit.Bucket{Tokens: 0, Last: 0}, ok: true, reset: 5 * time.Second},
		{name: "refill", capacity: 10, rate: 2, b: ratelimit.Bucket{Tokens: 0, Last: 1000 * ms}, now: 2500 * ms, cost: 1,
			want: ratelimit.Bucket{Tokens: 2, Last: 2500 * ms}, ok: true, reset: 4 * time.Second},
		{name: "refill capped at capacity", capacity: 10, rate: 2, b: ratelimit.Bucket{Tokens: 5, Last: 0}, now: 10_000 * ms, cost: 1,
			want: ratelimit.Bucket{Tokens: 9, Last: 10_000 * ms}, ok: true, reset: 500 * time.Millisecond},
		{name: "above capacity is cut down", capacity: 10, rate: 2, b: ratelimit.Bucket{Tokens: 50, Last: 0}, now: 0, cost: 1,
			want: ratelimit.Bucket{Tokens: 9, Last: 0}, ok: true, reset: 500 * time.Millisecond},
		{name: "refused takes nothing", capacity: 10, rate: 2, b: ratelimit.Bucket{Tokens: 2, Last: 0}, now: 0, cost: 3,
			want: ratelimit.Bucket{Tokens: 2, Last: 0}, retryAfter: 500 * time.Millisecond, reset: 4 * time.Second},
		{name: "refused after partial refill", capacity: 10, rate: 2, b: ratelimit.Bucket{Tokens: 0, Last: 0}, now: 250 * ms, cost: 1,
			want: ratelimit.Bucket{Tokens: 0.5, Last: 250 * ms}, retryAfter: 250 * time.Millisecond, reset: 4750 * time.Millisecond},
		{name: "clock backwards refills nothing", capacity: 10, rate: 2, b: ratelimit.Bucket{Tokens: 3, Last: 1000 * ms}, now: 500 * ms, cost: 1,
			want: ratelimit.Bucket{Tokens: 2, Last: 1000 * ms}, ok: true, reset: 500*time.Millisecond + 4*time.Second},
		{name: "clock backwards, refused", capacity: 10, rate: 2, b: ratelimit.Bucket{Tokens: 0.5, Last: 1000 * ms}, now: 0, cost: 1,
			want: ratelimit.Bucket{Tokens: 0.5, Last: 1000 * ms}, retryAfter: 1250 * time.Millisecond, reset: 5750 * time.Millisecond},
		{name: "clock backwards, full", capacity: 10, rate: 2, b: ratelimit.Bucket{Tokens: 10, Last: 1000 * ms}, now: 0, cost: 0,
			want: ratelimit.Bucket{Tokens: 10, Last: 1000 * ms}, ok: true},
		{name: "cost above capacity never passes", capacity: 10, rate: 2, b: ratelimit.Bucket{Tokens: 10, Last: 0}, now: 0, cost: 11,
			want: ratelimit.Bucket{Tokens: 10, Last: 0}, retryAfter: math.MaxInt64},
		{name: "cost 0 takes nothing", capacity: 10, rate: 2, b: ratelimit.Bucket{Tokens: 0, Last: 0}, now: 0, cost: 0,
			want: ratelimit.Bucket{Tokens: 0, Last: 0}, ok: true, reset: 5 * time.Second},
		{name: "fractional cost", capacity: 1, rate: 0.5, b: ratelimit.Bucket{Tokens: 1, Last: 0}, now: 0, cost: 0.25,
			want: ratelimit.Bucket{Tokens: 0.75, Last: 0}, ok: true, reset: 500 * time.Millisecond},
		{name: "slow rate", capacity: 20, rate: 1.0 / 3, b: ratelimit.Bucket{Tokens: 0, Last: 0}, now: 0, cost: 1,
			want: ratelimit.Bucket{Tokens: 0, Last: 0}, retryAfter: 3 * time.Second, reset: 60 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nb, ok, rem, retry, reset := ratelimit.Take(tt.capacity, tt.rate, tt.b, tt.now, tt.cost)
			if nb != tt.want || ok != tt.ok || rem != tt.want.Tokens || retry != tt.retryAfter || reset != tt.reset {
				t.Errorf("Take = %+v, %v, %v, %v, %v; want %+v, %v, %v, %v, %v",
					nb, ok, rem, retry, reset, tt.want, tt.ok, tt.want.Tokens, tt.retryAfter, tt.reset)
			}
		})
	}
}

// TestTakeWaitsExact checks on random buckets that the waits Take reports
// are the shortest that work: after retryAfter the request passes and a
// nanosecond earlier it does not; likewise reset and a full bucket.
func TestTakeWaitsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20000 {
		capacity := 1 + r.Float64()*1000
		rate := math.Pow(10, r.Float64()*8-3) // 0.001 to 100,000 a second
		b := ratelimit.Bucket{Tokens: r.Float64() * capacity, Last: r.Int64N(1e12)}
		now := b.Last + r.Int64N(1e9) - 1e8
		cost := 0.1 + r.Float64()*(capacity-0.1)
		nb, ok, _, retry, reset := ratelimit.Take(capacity, rate, b, now, cost)
		if !ok {
			if _, again, _, _, _ := ratelimit.Take(capacity, rate, nb, now+int64(retry), cost); !again {
				t.Fatalf("case %d: refused %v after retryAfter %v", i, nb, retry)
			}
			if retry > 1 {
				if _, again, _, _, _ := ratelimit.Take(capacity, rate, nb, now+int64(retry)-1, cost); again {
					t.Fatalf("case %d: allowed 1ns before retryAfter %v", i, retry)
				}
			}
		}
		if reset > 0 {
			if full, _, _, _, _ := ratelimit.Take(capacity, rate, nb, now+int64(reset), 0); full.Tokens < capacity {
				t.Fatalf("case %d: %v not full after reset %v", i, full, reset)
			}
			if reset > 1 {
				if full, _, _, _, _ := ratelimit.Take(capacity, rate, nb, now+int64(reset)-1, 0); full.Tokens >= capacity {
					t.Fatalf("case %d: full 1ns before reset %v", i, reset)
				}
			}
		}
	}
}

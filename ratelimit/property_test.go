package ratelimit_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/flashgate/flashgate/ratelimit"
)

// event is one charge a policy allowed: its time and cost.
type event struct {
	at   int64 // ns
	cost float64
}

// TestPropertyNeverOverAdmits drives Limiters with random policies and
// random request schedules on a fake clock and checks, for every policy
// and key, that over ANY window [t0, t1] the cost it allowed is at most
// capacity + rate*(t1-t0), with its share applied. It also checks each
// decision against Take applied by hand (the Limiter adds nothing to the
// arithmetic).
func TestPropertyNeverOverAdmits(t *testing.T) {
	schedules := 300
	if testing.Short() {
		schedules = 50
	}
	routes := []string{"GET /a", "POST /b", "POST /c"}
	for seed := range uint64(schedules) {
		r := rand.New(rand.NewPCG(seed, 0x5eed))
		// Random policies of one group and kind.
		ps := make([]ratelimit.Policy, 1+r.IntN(3))
		for i := range ps {
			p := ratelimit.Policy{
				Name:     fmt.Sprintf("p%d", i),
				Group:    ratelimit.GroupTokens,
				Key:      ratelimit.KeyIP,
				Capacity: 1 + math.Floor(r.Float64()*50),
				Rate:     math.Pow(10, r.Float64()*3-1), // 0.1 to 100 a second
				Shadow:   r.IntN(4) == 0,
			}
			if r.IntN(2) == 0 {
				p.Cost = min(p.Capacity, 0.5+r.Float64()*3)
			}
			if r.IntN(2) == 0 {
				p.Costs = map[string]float64{routes[1]: min(p.Capacity, 1+r.Float64()*5)}
			}
			ps[i] = p
		}
		share := 1 + r.IntN(3)
		l, clk := newLimiter(t, 0, ps...)
		l.SetShare(share)

		// The reference: Take by hand on the effective figures.
		type ref struct{ capacity, rate float64 }
		refs := make([]ref, len(ps))
		for i, p := range ps {
			maxCost := p.CostOf(routes[0])
			for _, rt := range routes {
				maxCost = max(maxCost, p.CostOf(rt))
			}
			refs[i] = ref{max(p.Capacity/float64(share), maxCost), p.Rate / float64(share)}
		}
		buckets := map[string]ratelimit.Bucket{}

		keys := []string{"192.0.2.1", "192.0.2.2", "2001:db8::1"}[:1+r.IntN(3)]
		allowed := map[string][]event{} // by policy and key
		var now int64
		mean := 1e9 / (refs[0].rate * float64(1+r.IntN(4))) // around the refill interval
		for range 400 {
			switch x := r.Float64(); {
			case x < 0.3: // a burst: same instant
			case x < 0.95:
				now += int64(r.ExpFloat64() * mean)
			default: // a long pause
				now += int64(r.Float64() * 100e9)
			}
			clk.ns.Store(now)
			key := keys[r.IntN(len(keys))]
			rt := routes[r.IntN(len(routes))]
			d := l.Check(ratelimit.GroupTokens, rt, ratelimit.KeyIP, key)

			// What Take says, policy by policy.
			wantAllowed, n := true, 0
			for i, p := range ps {
				id := p.Name + "|" + key
				b, ok := buckets[id]
				if !ok {
					b = ratelimit.Bucket{Tokens: refs[i].capacity, Last: now}
				}
				nb, pass, _, _, _ := ratelimit.Take(refs[i].capacity, refs[i].rate, b, now, p.CostOf(rt))
				buckets[id] = nb
				n++
				if !pass && !p.Shadow {
					wantAllowed = false
					break
				}
			}
			rs := d.Results()
			if d.Allowed != wantAllowed || len(rs) != n {
				t.Fatalf("seed %d at %v: Check %v with %d results, Take by hand %v with %d", seed, time.Duration(now), d.Allowed, len(rs), wantAllowed, n)
			}
			for i, res := range rs {
				if res.Allowed {
					id := res.Policy + "|" + key
					allowed[id] = append(allowed[id], event{now, ps[i].CostOf(rt)})
				}
			}
		}

		for i, p := range ps {
			for _, key := range keys {
				evs := allowed[p.Name+"|"+key]
				capacity, rate := refs[i].capacity, refs[i].rate
				// Windows that start and end on allowed charges are the
				// worst; check them all.
				for a := range evs {
					sum := 0.0
					for b := a; b < len(evs); b++ {
						sum += evs[b].cost
						limit := capacity + rate*float64(evs[b].at-evs[a].at)/1e9
						if sum > limit+1e-9 {
							t.Fatalf("seed %d, policy %+v share %d key %s: allowed %v in [%v, %v], limit %v",
								seed, p, share, key, sum, time.Duration(evs[a].at), time.Duration(evs[b].at), limit)
						}
					}
				}
			}
		}
	}
}

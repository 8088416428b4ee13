package ratelimit_test

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashgate/flashgate/ratelimit"
)

// fakeClock is a clock the test moves by hand; safe for concurrent use.
type fakeClock struct {
	ns atomic.Int64 // since the epoch below
}

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func (c *fakeClock) Now() time.Time          { return epoch.Add(time.Duration(c.ns.Load())) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// newLimiter returns a Limiter on a fake clock with policies ps.
func newLimiter(tb testing.TB, maxKeys int, ps ...ratelimit.Policy) (*ratelimit.Limiter, *fakeClock) {
	tb.Helper()
	for _, p := range ps {
		if err := p.Validate(); err != nil {
			tb.Fatalf("policy %s: %v", p.Name, err)
		}
	}
	clk := &fakeClock{}
	l := ratelimit.New(ratelimit.Config{MaxKeys: maxKeys, Now: clk.Now})
	l.SetPolicies(ps)
	return l, clk
}

// pol is a valid policy for the tokens group counting by shopper.
func pol(name string, capacity, rate float64) ratelimit.Policy {
	return ratelimit.Policy{Name: name, Group: ratelimit.GroupTokens, Key: ratelimit.KeyShopper, Capacity: capacity, Rate: rate}
}

const route = "POST /api/v1/sales/{sale}/tokens"

// check is one Check on the tokens group by shopper.
func check(l *ratelimit.Limiter, key string) ratelimit.Decision {
	return l.Check(ratelimit.GroupTokens, route, ratelimit.KeyShopper, key)
}

func TestCheckDrainsAndRefills(t *testing.T) {
	l, clk := newLimiter(t, 0, pol("tokens-shopper", 10, 2))
	for i := range 10 {
		d := check(l, "alice")
		rs := d.Results()
		if !d.Allowed || len(rs) != 1 || rs[0].Remaining != 9-i {
			t.Fatalf("request %d: %+v %+v", i, d.Allowed, rs)
		}
	}
	d := check(l, "alice")
	r := d.Results()[0]
	want := ratelimit.Result{Policy: "tokens-shopper", Allowed: false, Remaining: 0, Reset: 5 * time.Second,
		RetryAfter: 500 * time.Millisecond, Quota: 10, Window: 5 * time.Second}
	if d.Allowed || r != want {
		t.Fatalf("11th request: %v %+v, want refused %+v", d.Allowed, r, want)
	}
	if got := d.RetryAfterSeconds(); got != 1 {
		t.Errorf("RetryAfterSeconds = %d, want 1", got)
	}
	if d := check(l, "bob"); !d.Allowed {
		t.Error("another key is limited too")
	}
	clk.Advance(499 * time.Millisecond)
	if d := check(l, "alice"); d.Allowed {
		t.Error("allowed before RetryAfter")
	}
	clk.Advance(time.Millisecond)
	if d := check(l, "alice"); !d.Allowed {
		t.Error("refused at RetryAfter")
	}
	clk.Advance(time.Hour)
	if d := check(l, "alice"); d.Results()[0].Remaining != 9 {
		t.Errorf("after an hour: %+v, want a full bucket less one", d.Results())
	}
}

func TestShadow(t *testing.T) {
	p := pol("tokens-shopper", 2, 1)
	p.Shadow = true
	l, _ := newLimiter(t, 0, p)
	for i := range 5 {
		d := check(l, "alice")
		r := d.Results()[0]
		if !d.Allowed || !r.Shadow || r.Allowed != (i < 2) {
			t.Fatalf("request %d: allowed %v, result %+v", i, d.Allowed, r)
		}
		if i >= 2 && (r.RetryAfter != time.Second || d.RetryAfterSeconds() != 0) {
			t.Errorf("request %d: RetryAfter %v, RetryAfterSeconds %d", i, r.RetryAfter, d.RetryAfterSeconds())
		}
	}
}

func TestShadowRefusalGoesOn(t *testing.T) {
	a := pol("a-shadow", 1, 1)
	a.Shadow = true
	l, _ := newLimiter(t, 0, a, pol("b-enforced", 3, 1))
	for i := range 4 {
		d := check(l, "alice")
		rs := d.Results()
		if len(rs) != 2 || rs[0].Allowed != (i < 1) || rs[1].Allowed != (i < 3) || d.Allowed != (i < 3) {
			t.Fatalf("request %d: %v %+v", i, d.Allowed, rs)
		}
	}
}

func TestOffAndDisabled(t *testing.T) {
	off := pol("a-off", 1, 1)
	off.Off = true
	l, _ := newLimiter(t, 0, off, pol("b-on", 1, 1))
	d := check(l, "alice")
	if rs := d.Results(); len(rs) != 1 || rs[0].Policy != "b-on" {
		t.Fatalf("results %+v, want only b-on", rs)
	}
	if len(l.Policies()) != 2 {
		t.Errorf("Policies() = %+v, want the off one listed too", l.Policies())
	}
	l.SetEnabled(false)
	for range 3 {
		if d := check(l, "alice"); !d.Allowed || len(d.Results()) != 0 {
			t.Fatalf("disabled: %v %+v", d.Allowed, d.Results())
		}
	}
	l.SetEnabled(true)
	if d := check(l, "alice"); d.Allowed {
		t.Error("enabled again: the bucket forgot it was empty")
	}
}

func TestEmptyKeyUnknownGroupAndKind(t *testing.T) {
	l, _ := newLimiter(t, 0, pol("p", 1, 1))
	for _, c := range []struct{ group, kind, key string }{
		{ratelimit.GroupTokens, ratelimit.KeyShopper, ""},
		{"nope", ratelimit.KeyShopper, "alice"},
		{ratelimit.GroupTokens, "nope", "alice"},
		{ratelimit.GroupTokens, ratelimit.KeyIP, "alice"},
		{ratelimit.GroupReads, ratelimit.KeyShopper, "alice"},
	} {
		for range 3 {
			d := l.Check(c.group, route, c.kind, c.key)
			if !d.Allowed || len(d.Results()) != 0 {
				t.Fatalf("%+v: %v %+v", c, d.Allowed, d.Results())
			}
		}
	}
	if l.Len() != 0 {
		t.Errorf("Len = %d, want nothing remembered", l.Len())
	}
}

// TestApplies: Applies is true exactly when Check would consult a policy.
func TestApplies(t *testing.T) {
	off := ratelimit.Policy{Name: "ip-off", Group: ratelimit.GroupTokens, Key: ratelimit.KeyIP, Capacity: 1, Rate: 1, Off: true}
	l, _ := newLimiter(t, 0, pol("p", 1, 1), off)
	for _, c := range []struct {
		group, kind string
		want        bool
	}{
		{ratelimit.GroupTokens, ratelimit.KeyShopper, true},
		{ratelimit.GroupTokens, ratelimit.KeyIP, false}, // only an off policy
		{ratelimit.GroupReads, ratelimit.KeyShopper, false},
		{"nope", ratelimit.KeyShopper, false},
		{ratelimit.GroupTokens, "nope", false},
	} {
		if got := l.Applies(c.group, c.kind); got != c.want {
			t.Errorf("Applies(%s, %s) = %v, want %v", c.group, c.kind, got, c.want)
		}
		d := l.Check(c.group, route, c.kind, "alice")
		if got := len(d.Results()) > 0; got != c.want {
			t.Errorf("Check(%s, %s) consulted a policy: %v, Applies says %v", c.group, c.kind, got, c.want)
		}
	}
	l.SetEnabled(false)
	if l.Applies(ratelimit.GroupTokens, ratelimit.KeyShopper) {
		t.Error("disabled: Applies is true")
	}
	l.SetEnabled(true)
	l.SetPolicies(nil)
	if l.Applies(ratelimit.GroupTokens, ratelimit.KeyShopper) {
		t.Error("no policies: Applies is true")
	}
}

func TestSetShare(t *testing.T) {
	big := pol("a", 30, 3)
	floor := pol("b", 12, 6)
	floor.Costs = map[string]float64{route: 8}
	l, clk := newLimiter(t, 0, big, floor)
	if l.Share() != 1 {
		t.Fatalf("Share() = %d at first", l.Share())
	}
	l.SetShare(3)
	if l.Share() != 3 {
		t.Fatalf("Share() = %d, want 3", l.Share())
	}
	d := l.Check(ratelimit.GroupTokens, "GET /other", ratelimit.KeyShopper, "alice")
	rs := d.Results()
	// a: 30/3 = 10 tokens, 1 a second: a 10 s window.
	// b: 12/3 = 4 is below the largest cost, 8; 2 a second: 4 s.
	if rs[0].Quota != 10 || rs[0].Window != 10*time.Second || rs[0].Remaining != 9 || rs[0].Reset != time.Second {
		t.Errorf("shared a: %+v", rs[0])
	}
	if rs[1].Quota != 8 || rs[1].Window != 4*time.Second || rs[1].Remaining != 7 {
		t.Errorf("shared b, floored at its largest cost: %+v", rs[1])
	}
	if d := check(l, "bob"); !d.Allowed || d.Results()[1].Remaining != 0 {
		t.Errorf("the largest cost cannot pass a full bucket: %+v", d.Results())
	}
	for range 8 {
		check(l, "carol")
	}
	clk.Advance(3 * time.Second) // b refills 6 of its 8 at 2 a second
	if d := check(l, "carol"); d.Allowed {
		t.Errorf("refill not divided: %+v", d.Results())
	}
	l.SetShare(0)
	if l.Share() != 1 {
		t.Errorf("SetShare(0): Share() = %d, want 1", l.Share())
	}
	if d := l.Check(ratelimit.GroupTokens, "GET /other", ratelimit.KeyShopper, "dave"); d.Results()[0].Quota != 30 {
		t.Errorf("share 1: %+v", d.Results())
	}
}

func TestChangedPolicyStartsFull(t *testing.T) {
	a, b := pol("a", 2, 1), pol("b", 2, 1)
	l, _ := newLimiter(t, 0, a, b)
	for range 2 {
		check(l, "alice")
	}
	if d := check(l, "alice"); d.Allowed {
		t.Fatal("not drained")
	}
	l.SetPolicies([]ratelimit.Policy{b, a}) // the same settings: state kept
	if d := check(l, "alice"); d.Allowed {
		t.Fatal("unchanged policies started full")
	}
	a.Rate = 2
	l.SetPolicies([]ratelimit.Policy{a, b})
	d := check(l, "alice")
	rs := d.Results()
	if len(rs) != 2 || !rs[0].Allowed || rs[0].Remaining != 1 || rs[1].Allowed {
		t.Fatalf("after changing a: %v %+v; want a full, b still empty", d.Allowed, rs)
	}
	// Removing and adding back is a change: a new generation.
	l.SetPolicies([]ratelimit.Policy{a})
	l.SetPolicies([]ratelimit.Policy{a, b})
	if d := check(l, "alice"); !d.Allowed {
		t.Fatalf("b added back: %+v", d.Results())
	}
}

func TestCheckStopsAtFirstRefusal(t *testing.T) {
	l, _ := newLimiter(t, 0, pol("z-second", 5, 1), pol("a-first", 1, 1))
	d := check(l, "alice")
	if rs := d.Results(); len(rs) != 2 || rs[0].Policy != "a-first" || rs[1].Policy != "z-second" {
		t.Fatalf("not in name order: %+v", rs)
	}
	d = check(l, "alice")
	if rs := d.Results(); d.Allowed || len(rs) != 1 || rs[0].Policy != "a-first" {
		t.Fatalf("second request: %v %+v", d.Allowed, rs)
	}
	l.SetPolicies([]ratelimit.Policy{pol("z-second", 5, 1), pol("a-first", 1, 1), {Name: "a-first", Group: ratelimit.GroupTokens,
		Key: ratelimit.KeyShopper, Capacity: 100, Rate: 1}})
	d = check(l, "alice")
	if rs := d.Results(); len(rs) != 2 || rs[0].Quota != 100 || rs[1].Remaining != 3 {
		t.Fatalf("z-second charged for a refused request, or the later duplicate lost: %+v", rs)
	}
}

func TestRouteCosts(t *testing.T) {
	p := pol("p", 10, 1)
	p.Cost = 2
	p.Costs = map[string]float64{"POST /expensive": 5, "GET /cheap": 0.5}
	l, _ := newLimiter(t, 0, p)
	for _, c := range []struct {
		route     string
		remaining int
	}{{"POST /expensive", 5}, {"GET /cheap", 4}, {"GET /other", 2}, {"POST /expensive", 2}} {
		d := l.Check(ratelimit.GroupTokens, c.route, ratelimit.KeyShopper, "alice")
		if r := d.Results()[0]; r.Remaining != c.remaining {
			t.Fatalf("%s: %+v, want %d left", c.route, r, c.remaining)
		}
	}
}

func TestManyPolicies(t *testing.T) {
	var ps []ratelimit.Policy
	for i := range 7 {
		ps = append(ps, pol(fmt.Sprintf("p%d", i), float64(10+i), 1))
	}
	l, _ := newLimiter(t, 0, ps...)
	d := check(l, "alice")
	rs := d.Results()
	if len(rs) != 7 {
		t.Fatalf("%d results, want 7", len(rs))
	}
	for i, r := range rs {
		if r.Policy != fmt.Sprintf("p%d", i) || r.Quota != 10+i {
			t.Errorf("result %d: %+v", i, r)
		}
	}
}

func TestSetPoliciesSkipsInvalidAndCopies(t *testing.T) {
	p := pol("p", 10, 1)
	p.Costs = map[string]float64{"GET /x": 2}
	bad := pol("Bad Name", 10, 1)
	l, _ := newLimiter(t, 0)
	l.SetPolicies([]ratelimit.Policy{p, bad})
	p.Costs["GET /x"] = 9 // the caller's map is not the Limiter's
	got := l.Policies()
	if len(got) != 1 || got[0].Name != "p" || got[0].Costs["GET /x"] != 2 {
		t.Fatalf("Policies() = %+v", got)
	}
	got[0].Costs["GET /x"] = 7
	if l.Policies()[0].Costs["GET /x"] != 2 {
		t.Error("Policies() shares its maps")
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	// Decisions are made by Check; build the cases from real ones.
	slow := pol("a-slow", 1, 0.1)   // refused: 10 s
	fast := pol("b-fast", 1, 1)     // refused: 1 s
	frac := pol("c-frac", 1, 1.0/3) // refused: 3 s
	shadow := pol("a-shadow", 1, 0.01)
	shadow.Shadow = true
	tests := []struct {
		name string
		ps   []ratelimit.Policy
		want int
	}{
		{"allowed", nil, 0},
		{"one refusal", []ratelimit.Policy{fast}, 1},
		{"rounded up", []ratelimit.Policy{frac}, 3},
		{"first refusal stops", []ratelimit.Policy{slow, fast}, 10},
		{"shadow ignored", []ratelimit.Policy{shadow, fast}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := newLimiter(t, 0, tt.ps...)
			check(l, "alice")
			d := check(l, "alice")
			if got := d.RetryAfterSeconds(); got != tt.want {
				t.Errorf("RetryAfterSeconds() = %d, want %d (%+v)", got, tt.want, d.Results())
			}
		})
	}
}

func TestMemoryBound(t *testing.T) {
	tests := []struct{ maxKeys, keys, atLeast int }{
		{10_000, 1_000_000, 9_000},
		{1, 1000, 1},
		{100, 10_000, 100}, // one shard: two would hold under 64 each
		{1000, 100_000, 900},
	}
	for _, tt := range tests {
		if testing.Short() {
			tt.keys = min(tt.keys, 100_000)
		}
		l, clk := newLimiter(t, tt.maxKeys, pol("p", 10, 1))
		var buf []byte
		for i := range tt.keys {
			buf = strconv.AppendInt(buf[:0], int64(i), 36)
			if d := check(l, string(buf)); !d.Allowed {
				t.Fatalf("MaxKeys %d: key %d refused", tt.maxKeys, i)
			}
			if i%1000 == 0 {
				clk.Advance(time.Millisecond)
			}
		}
		if got := l.Len(); got > tt.maxKeys || got < tt.atLeast {
			t.Errorf("MaxKeys %d: Len() = %d after %d keys, want %d to %d", tt.maxKeys, got, tt.keys, tt.atLeast, tt.maxKeys)
		}
	}
}

// TestEvictionKeepsRecentKeys floods a small table with new keys while one
// drained key keeps being used: the approximate LRU keeps its state.
func TestEvictionKeepsRecentKeys(t *testing.T) {
	l, clk := newLimiter(t, 1000, pol("p", 1, 0.001))
	check(l, "hot")
	for i := range 100_000 {
		clk.Advance(time.Microsecond)
		check(l, "cold"+strconv.Itoa(i))
		if i%50 == 0 {
			if d := check(l, "hot"); d.Allowed {
				t.Fatalf("after %d new keys the hot key was forgotten", i)
			}
		}
	}
}

// TestEvictionPrefersIdle fills a table with keys that are full again and
// checks that new drained keys push those out, not each other.
func TestEvictionPrefersIdle(t *testing.T) {
	l, clk := newLimiter(t, 1000, pol("p", 1, 1)) // window 1 s
	for i := range 2000 {
		check(l, "idle"+strconv.Itoa(i))
	}
	clk.Advance(time.Second) // every key so far is full again
	// 100 busy keys over 8 shards of 125: a sample of 8 entries misses
	// every idle one with a chance under 1e-6.
	for i := range 100 {
		check(l, "busy"+strconv.Itoa(i))
	}
	for i := range 100 {
		if d := check(l, "busy"+strconv.Itoa(i)); d.Allowed {
			t.Fatalf("busy key %d forgotten while idle ones were there", i)
		}
	}
}

func TestSweep(t *testing.T) {
	l, clk := newLimiter(t, 0, pol("a", 2, 1), pol("b", 10, 1)) // windows 2 s and 10 s
	for i := range 1000 {
		check(l, strconv.Itoa(i))
	}
	if l.Len() != 2000 {
		t.Fatalf("Len() = %d, want 2000", l.Len())
	}
	clk.Advance(9 * time.Second)
	if n := l.Sweep(); n != 0 || l.Len() != 2000 {
		t.Fatalf("Sweep before the longest window removed %d, Len %d", n, l.Len())
	}
	check(l, "0")
	clk.Advance(time.Second)
	if n := l.Sweep(); n != 1998 || l.Len() != 2 {
		t.Fatalf("Sweep removed %d, Len %d; want 1998 and the key just used", n, l.Len())
	}
	// A removed policy's entries go too.
	l.SetPolicies(nil)
	if n := l.Sweep(); n != 2 || l.Len() != 0 {
		t.Fatalf("Sweep after removing policies removed %d, Len %d", n, l.Len())
	}
}

func TestCheckDoesNotAllocate(t *testing.T) {
	withCosts := pol("b", 1e9, 1e9)
	withCosts.Costs = map[string]float64{route: 2}
	l := ratelimit.New(ratelimit.Config{}) // the real clock
	l.SetPolicies([]ratelimit.Policy{pol("a", 1e9, 1e9), withCosts})
	check(l, "alice")
	allocs := testing.AllocsPerRun(1000, func() {
		d := check(l, "alice")
		if len(d.Results()) != 2 {
			panic("want two results")
		}
	})
	if allocs != 0 {
		t.Errorf("Check on an existing key: %v allocations, want 0", allocs)
	}
}

// TestConcurrent runs Check, SetPolicies, SetShare and Sweep together (for
// the race detector) and checks that a key's bucket is never overdrawn.
func TestConcurrent(t *testing.T) {
	p := pol("p", 100, 1e-6)
	l, _ := newLimiter(t, 0, p)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				if check(l, "shared").Allowed {
					allowed.Add(1)
				}
				check(l, strconv.Itoa(g*10000+i))
			}
		})
	}
	wg.Go(func() {
		for i := range 200 {
			l.SetPolicies([]ratelimit.Policy{p}) // unchanged: keeps the state
			l.SetShare(1)
			l.Sweep()
			_ = l.Policies()
			_ = l.Len()
			if i%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	})
	wg.Wait()
	if got := allowed.Load(); got != 100 {
		t.Errorf("allowed %d requests of one key, want its capacity, 100", got)
	}
}

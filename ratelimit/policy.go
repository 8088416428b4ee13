package ratelimit

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"time"
)

// Key kinds a policy can count by.
const (
	KeyIP      = "ip"      // the client address (see Proxies.ClientIP)
	KeyShopper = "shopper" // the shopper id of the session
)

// Route groups.
const (
	GroupSession   = "session"   // POST /api/v1/session
	GroupTokens    = "tokens"    // token requests and challenges
	GroupPurchases = "purchases" // purchases
	GroupQueue     = "queue"     // waiting-room joins, polls, streams and leaves
	GroupReads     = "reads"     // GETs of sales, requests, orders, time
)

// groupIndex is the index of group g in a snapshot's table, or -1.
func groupIndex(g string) int {
	switch g {
	case GroupSession:
		return 0
	case GroupTokens:
		return 1
	case GroupPurchases:
		return 2
	case GroupQueue:
		return 3
	case GroupReads:
		return 4
	}
	return -1
}

// kindIndex is the index of key kind k in a snapshot's table, or -1.
func kindIndex(k string) int {
	switch k {
	case KeyIP:
		return 0
	case KeyShopper:
		return 1
	}
	return -1
}

// Limits on a policy's figures and routes.
const (
	maxFigure   = 1e9 // largest capacity and rate
	maxNameLen  = 64
	maxRouteLen = 256 // longest route in Costs
	maxCosts    = 64  // most entries in Costs
)

// Policy is one token-bucket limit. It is JSON-serialisable: it is stored
// as JSON in a NATS KV bucket and set by an operator CLI.
type Policy struct {
	// Name is 1 to 64 of a-z 0-9 - _; it is also the policy name in the
	// response headers and a metrics label.
	Name string `json:"name"`
	// Group is the route group the policy applies to (GroupSession, ...).
	Group string `json:"group"`
	// Key is what the policy counts by: KeyIP or KeyShopper.
	Key string `json:"key"`
	// Capacity is the burst: the tokens of a full bucket, 1 to 1e9.
	Capacity float64 `json:"capacity"`
	// Rate is the refill in tokens per second, above 0 and at most 1e9.
	Rate float64 `json:"rate"`
	// Cost is what one request takes; 0 means 1. At most Capacity.
	Cost float64 `json:"cost,omitempty"`
	// Costs overrides Cost by route, the net/http ServeMux pattern the
	// request matched (for example "POST /api/v1/sales/{sale}/tokens").
	// Each cost is above 0 and at most Capacity.
	Costs map[string]float64 `json:"costs,omitempty"`
	// Shadow makes the policy decide and count but never reject.
	Shadow bool `json:"shadow,omitempty"`
	// Off disables the policy.
	Off bool `json:"off,omitempty"`
}

// Validate reports the first problem with p. The message starts with the
// JSON name of the bad field, as in "capacity: must be 1 to 1e9, got 0".
func (p Policy) Validate() error {
	if err := validName(p.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if groupIndex(p.Group) < 0 {
		return fmt.Errorf("group: must be one of %q, %q, %q, %q, %q, got %q",
			GroupSession, GroupTokens, GroupPurchases, GroupQueue, GroupReads, p.Group)
	}
	if kindIndex(p.Key) < 0 {
		return fmt.Errorf("key: must be %q or %q, got %q", KeyIP, KeyShopper, p.Key)
	}
	// The comparisons are written so that NaN fails them.
	if !(p.Capacity >= 1 && p.Capacity <= maxFigure) {
		return fmt.Errorf("capacity: must be 1 to 1e9, got %v", p.Capacity)
	}
	if !(p.Rate > 0 && p.Rate <= maxFigure) {
		return fmt.Errorf("rate: must be above 0 and at most 1e9, got %v", p.Rate)
	}
	if !(p.Cost >= 0 && p.Cost <= p.Capacity) {
		return fmt.Errorf("cost: must be 0 (meaning 1) to capacity %v, got %v", p.Capacity, p.Cost)
	}
	if len(p.Costs) > maxCosts {
		return fmt.Errorf("costs: at most %d routes, got %d", maxCosts, len(p.Costs))
	}
	for route, c := range p.Costs {
		if route == "" || len(route) > maxRouteLen {
			return fmt.Errorf("costs: route must be 1 to %d bytes, got %q", maxRouteLen, route)
		}
		if !(c > 0 && c <= p.Capacity) {
			return fmt.Errorf("costs: cost of %q must be above 0 and at most capacity %v, got %v", route, p.Capacity, c)
		}
	}
	return nil
}

// validName checks a policy name: 1 to 64 of a-z 0-9 - _.
func validName(s string) error {
	if s == "" || len(s) > maxNameLen {
		return fmt.Errorf("must be 1 to %d characters, got %d", maxNameLen, len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return errors.New("must be only a-z 0-9 - _")
		}
	}
	return nil
}

// CostOf is what one request on route takes: Costs[route] if set, else
// Cost, else 1.
func (p Policy) CostOf(route string) float64 {
	if c, ok := p.Costs[route]; ok {
		return c
	}
	return p.baseCost()
}

// baseCost is Cost, or 1 when Cost is 0.
func (p Policy) baseCost() float64 {
	if p.Cost > 0 {
		return p.Cost
	}
	return 1
}

// maxCost is the largest cost of any route.
func (p Policy) maxCost() float64 {
	m := p.baseCost()
	for _, c := range p.Costs {
		m = max(m, c)
	}
	return m
}

// Window is the time to refill the whole capacity from empty,
// Capacity/Rate, rounded up to the nanosecond. The RateLimit-Policy header
// shows it as w=, in whole seconds rounded up and at least 1. It is 0 when
// Rate is not positive.
func (p Policy) Window() time.Duration {
	return window(p.Capacity, p.Rate)
}

// window is capacity/rate as a duration rounded up, 0 for a rate that is
// not positive and the largest duration when it would overflow.
func window(capacity, rate float64) time.Duration {
	if !(rate > 0) || !(capacity > 0) {
		return 0
	}
	return ceilDuration(capacity / rate * 1e9)
}

// ceilDuration rounds ns nanoseconds up to a Duration, saturating.
func ceilDuration(ns float64) time.Duration {
	if !(ns > 0) {
		return 0
	}
	if !(ns < math.MaxInt64) { // also +Inf
		return math.MaxInt64
	}
	return time.Duration(math.Ceil(ns))
}

// equal reports whether p and q have the same settings.
func (p Policy) equal(q Policy) bool {
	return p.Name == q.Name && p.Group == q.Group && p.Key == q.Key &&
		p.Capacity == q.Capacity && p.Rate == q.Rate && p.Cost == q.Cost &&
		p.Shadow == q.Shadow && p.Off == q.Off && maps.Equal(p.Costs, q.Costs)
}

// clone returns p with its own Costs map.
func (p Policy) clone() Policy {
	p.Costs = maps.Clone(p.Costs)
	return p
}

// Shared is what one of n processes enforces of p: capacity/n (never below
// the largest cost, so a request can still pass), rate/n, and the window
// and quota the headers report.
func (p Policy) Shared(n int) (capacity, rate float64, quota int, w time.Duration) {
	n = max(n, 1)
	capacity = max(p.Capacity/float64(n), p.maxCost())
	rate = p.Rate / float64(n)
	return capacity, rate, int(math.Floor(capacity)), window(capacity, rate)
}

// Defaults returns the built-in policies, sized for one 2-core box serving
// about 8,000 requests a second in all. The per-address limits leave room
// for many shoppers behind one NAT (an office, a mobile carrier's CGNAT);
// the per-shopper limits are what a person clicking, or a well-behaved page
// polling, never reaches.
func Defaults() []Policy {
	return []Policy{
		// New anonymous sessions per client address: a burst of 20 covers a
		// household or a small office starting together; then one a second
		// (3,600 an hour), enough for a NAT, while a script minting shopper
		// ids to dodge the per-shopper limits gets one a second per address.
		{Name: "session-ip", Group: GroupSession, Key: KeyIP, Capacity: 20, Rate: 1},
		// Token requests per client address: 100 a second sustained is 50
		// shoppers behind one address at their own full rate, 1.25% of the
		// box; the burst of 200 absorbs the opening second of a sale.
		{Name: "tokens-ip", Group: GroupTokens, Key: KeyIP, Capacity: 200, Rate: 100},
		// Token requests per shopper: a person retrying at the opening gets
		// 10 at once, then one every half second; a bot gets no more.
		{Name: "tokens-shopper", Group: GroupTokens, Key: KeyShopper, Capacity: 10, Rate: 2},
		// Purchases per shopper: each needs a token, so this mostly stops
		// replays of refused purchases; the same shape as tokens-shopper.
		{Name: "purchases-shopper", Group: GroupPurchases, Key: KeyShopper, Capacity: 10, Rate: 2},
		// Waiting-room joins and polls per shopper: a page polling every
		// second or two stays far below 5 a second; 30 covers reloads.
		{Name: "queue-shopper", Group: GroupQueue, Key: KeyShopper, Capacity: 30, Rate: 5},
		// Reads per client address: pages poll sales, orders and the time
		// about once a second each, so 300 a second is ~100 open pages
		// behind one address, under 4% of the box; the burst covers page
		// loads that fan out.
		{Name: "reads-ip", Group: GroupReads, Key: KeyIP, Capacity: 600, Rate: 300},
	}
}

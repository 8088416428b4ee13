package ratelimit

import (
	"cmp"
	"hash/maphash"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxKeys is the bound on remembered keys when Config.MaxKeys is 0.
const DefaultMaxKeys = 1 << 20

const (
	maxShards   = 256 // shards of the key table, a power of two
	minPerShard = 64  // fewer shards when MaxKeys is small, so each holds this many
	sampleSize  = 8   // entries looked at to choose one to evict
	numGroups   = 5   // len of the group constants
	numKinds    = 2   // len of the key kind constants
	inline      = 4   // results a Decision holds without allocating
)

// Config configures a Limiter. The zero value works.
type Config struct {
	// MaxKeys bounds the keys remembered over all policies; 0 means
	// DefaultMaxKeys (1,048,576). Each shard of the table holds at most
	// MaxKeys/shards keys.
	MaxKeys int
	// Now is the clock; nil means time.Now. Times from time.Now carry a
	// monotonic reading, which the Limiter uses, so a wall clock step
	// changes nothing.
	Now func() time.Time
}

// Limiter applies policies to keys. It remembers one Bucket for each
// (policy, key) in a table of shards, each a mutex and a
// map[uint64]Bucket keyed by a 64-bit hash of the policy's name, its
// generation and the key; key strings are not stored, so two keys whose
// hashes collide (about one pair in 2^64) would share a bucket.
//
// The table is bounded (Config.MaxKeys). When a shard is full and a new key
// arrives, the Limiter looks at a few entries (Go's map iteration starts at
// a random place) and drops the first idle one, an entry untouched for the
// longest window of the current policies and so certainly full; if none is
// idle it drops the one used least recently (an approximate LRU, as Redis
// does). The trade-off: a flood of distinct keys can push out the state of
// other keys, which then start full again. Pushing keys out needs many
// distinct keys in one group and kind; per-address limits make shopper
// ids (from sessions) expensive, and addresses are costly to vary if
// IPv6 ones are counted by /64 (see IPKey). Size MaxKeys above the keys
// live within the longest window in normal load.
//
// A Limiter is safe for concurrent use. Check takes no lock but its
// shard's.
type Limiter struct {
	now      func() time.Time
	base     time.Time // the clock at New: times are nanoseconds since
	seed     maphash.Seed
	shards   []shard
	shift    uint // a hash's top bits select its shard: h >> shift (64 for one shard)
	perShard int  // most entries in one shard
	disabled atomic.Bool
	snap     atomic.Pointer[snapshot]

	mu      sync.Mutex // serialises SetPolicies and SetShare
	set     []Policy   // as last set, sorted by name, valid, cloned
	gens    map[string]uint64
	nextGen uint64
}

// shard is one lock and its part of the table, padded to a cache line so
// that neighbouring shards' locks do not false-share.
type shard struct {
	mu   sync.Mutex
	m    map[uint64]Bucket
	peak int // most entries since the map was last made
	_    [40]byte
}

// snapshot is the compiled policy set. It is immutable once published.
type snapshot struct {
	table [numGroups][numKinds][]compiled
	share int
	// idle is the longest effective window of the enabled policies: an
	// entry untouched for this long is full whatever its policy was.
	idle int64
}

// compiled is one enabled policy with its share applied.
type compiled struct {
	name     string
	salt     uint64 // hash of name and generation, mixed into the key hash
	capacity float64
	rate     float64
	cost     float64
	costs    map[string]float64 // nil when the policy has none
	shadow   bool
	quota    int
	window   time.Duration
}

// New returns a Limiter with no policies: Check allows everything until
// SetPolicies.
func New(c Config) *Limiter {
	if c.MaxKeys <= 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	n := maxShards
	for n > 1 && c.MaxKeys/n < minPerShard {
		n /= 2
	}
	l := &Limiter{
		now:      c.Now,
		base:     c.Now(),
		seed:     maphash.MakeSeed(),
		shards:   make([]shard, n),
		shift:    uint(64 - bits.TrailingZeros(uint(n))),
		perShard: max(1, c.MaxKeys/n),
		gens:     make(map[string]uint64),
	}
	l.snap.Store(&snapshot{share: 1})
	return l
}

// clock is the time now in nanoseconds since New.
func (l *Limiter) clock() int64 {
	return int64(l.now().Sub(l.base))
}

// SetPolicies replaces the policy set. Invalid policies are skipped (the
// caller validates and reports them); of two with one name the later wins.
// A policy whose settings changed in any way, or which is new, gets a new
// generation: its keys start with full buckets, and the entries of the old
// generation are never looked up again and age out. It is safe to call
// concurrently with Check.
func (l *Limiter) SetPolicies(ps []Policy) {
	byName := make(map[string]Policy, len(ps))
	for _, p := range ps {
		if p.Validate() == nil {
			byName[p.Name] = p.clone()
		}
	}
	set := make([]Policy, 0, len(byName))
	for _, p := range byName {
		set = append(set, p)
	}
	slices.SortFunc(set, func(a, b Policy) int { return cmp.Compare(a.Name, b.Name) })

	l.mu.Lock()
	defer l.mu.Unlock()
	old := make(map[string]Policy, len(l.set))
	for _, p := range l.set {
		old[p.Name] = p
	}
	gens := make(map[string]uint64, len(set))
	for _, p := range set {
		if q, ok := old[p.Name]; ok && q.equal(p) {
			gens[p.Name] = l.gens[p.Name]
			continue
		}
		l.nextGen++
		gens[p.Name] = l.nextGen
	}
	l.set, l.gens = set, gens
	l.publish(l.snap.Load().share)
}

// Policies returns the current set, sorted by name, including Off ones.
func (l *Limiter) Policies() []Policy {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Policy, len(l.set))
	for i, p := range l.set {
		out[i] = p.clone()
	}
	return out
}

// SetShare tells the Limiter it is one of n live processes sharing a
// global limit: every policy's capacity and rate are divided by n, the
// capacity never below the policy's largest cost so that every request can
// still pass. n below 1 counts as 1. Buckets are kept: a bucket holding
// more than the new capacity is cut down at its next use.
func (l *Limiter) SetShare(n int) {
	n = max(n, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.publish(n)
}

// Share returns the n of the last SetShare, 1 at first.
func (l *Limiter) Share() int {
	return l.snap.Load().share
}

// publish compiles l.set with share n and publishes it. l.mu is held.
func (l *Limiter) publish(n int) {
	s := &snapshot{share: n}
	for _, p := range l.set {
		if p.Off {
			continue
		}
		c := compiled{
			name:   p.Name,
			salt:   l.salt(p.Name, l.gens[p.Name]),
			cost:   p.baseCost(),
			costs:  p.Costs,
			shadow: p.Shadow,
		}
		c.capacity, c.rate, c.quota, c.window = p.Shared(n)
		s.idle = max(s.idle, int64(c.window))
		g, k := groupIndex(p.Group), kindIndex(p.Key)
		s.table[g][k] = append(s.table[g][k], c)
	}
	l.snap.Store(s)
}

// salt hashes a policy's name and generation with the Limiter's seed.
func (l *Limiter) salt(name string, gen uint64) uint64 {
	var h maphash.Hash
	h.SetSeed(l.seed)
	h.WriteString(name)
	h.WriteByte(0)
	var b [8]byte
	for i := range b {
		b[i] = byte(gen >> (8 * i))
	}
	h.Write(b[:])
	return h.Sum64()
}

// SetEnabled(false) turns every policy off (the --rate-limit=off switch):
// Check then allows everything and reports no results. SetEnabled(true)
// turns them back on with the buckets they had.
func (l *Limiter) SetEnabled(on bool) {
	l.disabled.Store(!on)
}

// Enabled reports whether the Limiter applies its policies (see SetEnabled).
func (l *Limiter) Enabled() bool { return !l.disabled.Load() }

// Result is what one policy decided for one request.
type Result struct {
	Policy     string        // the policy's name
	Allowed    bool          // the bucket allowed the request
	Shadow     bool          // the policy is in shadow mode: a refusal is counted, not enforced
	Remaining  int           // whole tokens left (rounded down), for r=
	Reset      time.Duration // until the bucket is full, for t= (whole seconds rounded up in the header)
	RetryAfter time.Duration // when refused, until the request could pass; else 0
	Quota      int           // effective capacity after the share (rounded down), for q=
	Window     time.Duration // effective window, capacity/rate, for w=
}

// Decision is what Check decided for one request.
//
// Its results live inside it, so Check does not allocate: read them with
// the Results method on a Decision held in a variable,
//
//	d := l.Check(group, route, kind, key)
//	for _, r := range d.Results() { ... }
//
// The slice aliases d, so it is valid as long as d is. Only when more
// than four policies of one group count by one kind do the results go to
// the heap.
type Decision struct {
	// Allowed is false only when a policy that is not in shadow mode
	// refused the request.
	Allowed bool

	n    int
	buf  [inline]Result
	more []Result // all the results, when more than fit in buf
}

// Results are the results of every policy applied, in the order applied.
func (d *Decision) Results() []Result {
	if d.more != nil {
		return d.more
	}
	return d.buf[:d.n]
}

// add appends r.
func (d *Decision) add(r Result) {
	if d.more == nil && d.n < inline {
		d.buf[d.n] = r
		d.n++
		return
	}
	if d.more == nil {
		d.more = append(make([]Result, 0, 2*inline), d.buf[:d.n]...)
	}
	d.more = append(d.more, r)
	d.n++
}

// RetryAfterSeconds is the largest RetryAfter of the refusing results that
// are not in shadow mode, in whole seconds rounded up and at least 1: the
// value for a Retry-After header. It is 0 when the decision allowed the
// request.
func (d Decision) RetryAfterSeconds() int {
	if d.Allowed {
		return 0
	}
	var longest time.Duration
	for _, r := range d.Results() {
		if !r.Allowed && !r.Shadow {
			longest = max(longest, r.RetryAfter)
		}
	}
	return int(max(ceilSeconds(longest), 1))
}

// Applies reports whether Check(group, route, kind, key) can do anything
// for a non-empty key: whether the Limiter is enabled and has a policy of
// group, on, that counts by kind. A caller can then skip working out a key
// that nothing would count (a client's address, with --rate-limit=off or
// shopper).
func (l *Limiter) Applies(group, kind string) bool {
	if l.disabled.Load() {
		return false
	}
	g, k := groupIndex(group), kindIndex(kind)
	return g >= 0 && k >= 0 && len(l.snap.Load().table[g][k]) > 0
}

// Check applies to key every enabled policy of group that counts by kind,
// in name order, for one request on route (the ServeMux pattern, which
// selects a policy's per-route cost). It stops at the first policy not in
// shadow mode that refuses: later policies are not charged, while earlier
// ones that allowed keep the charge. A shadow policy's refusal is reported
// and takes nothing, and the request goes on to the next policy.
//
// An empty key, an unknown group or kind, or a disabled Limiter allow the
// request with no results.
func (l *Limiter) Check(group, route, kind, key string) Decision {
	d := Decision{Allowed: true}
	if key == "" || l.disabled.Load() {
		return d
	}
	g, k := groupIndex(group), kindIndex(kind)
	if g < 0 || k < 0 {
		return d
	}
	snap := l.snap.Load()
	ps := snap.table[g][k]
	if len(ps) == 0 {
		return d
	}
	hk := maphash.String(l.seed, key)
	now := l.clock()
	for i := range ps {
		p := &ps[i]
		cost := p.cost
		if p.costs != nil {
			if c, ok := p.costs[route]; ok {
				cost = c
			}
		}
		ok, rem, retry, reset := l.take(p, hk^p.salt, now, cost, snap.idle)
		d.add(Result{
			Policy:     p.name,
			Allowed:    ok,
			Shadow:     p.shadow,
			Remaining:  int(rem), // rem is 0 to capacity: conversion rounds down
			Reset:      reset,
			RetryAfter: retry,
			Quota:      p.quota,
			Window:     p.window,
		})
		if !ok && !p.shadow {
			d.Allowed = false
			break
		}
	}
	return d
}

// take applies p to the entry h at now; idle is the snapshot's.
func (l *Limiter) take(p *compiled, h uint64, now int64, cost float64, idle int64) (ok bool, remaining float64, retry, reset time.Duration) {
	s := &l.shards[h>>l.shift]
	s.mu.Lock()
	b, found := s.m[h]
	if !found {
		b = Bucket{Tokens: p.capacity, Last: now}
	}
	b, ok, remaining, retry, reset = Take(p.capacity, p.rate, b, now, cost)
	switch {
	case found:
		s.m[h] = b
	case ok: // a refused new key changes nothing: nothing to store
		s.makeRoom(l.perShard, now, idle)
		s.m[h] = b
		s.peak = max(s.peak, len(s.m))
	}
	s.mu.Unlock()
	return ok, remaining, retry, reset
}

// makeRoom makes the map if there is none and, when it holds limit
// entries, drops one: the first idle entry among a few, else the least
// recently used of them. s.mu is held.
func (s *shard) makeRoom(limit int, now, idle int64) {
	if s.m == nil {
		s.m = make(map[uint64]Bucket)
	}
	if len(s.m) < limit {
		return
	}
	var victim uint64
	oldest := int64(math.MaxInt64)
	n := 0
	for h, b := range s.m {
		if isIdle(b, now, idle) {
			victim = h
			break
		}
		if b.Last < oldest {
			victim, oldest = h, b.Last
		}
		if n++; n == sampleSize {
			break
		}
	}
	delete(s.m, victim)
}

// isIdle reports whether b, untouched since b.Last, is certainly full at
// now: idle is at least the window of its policy.
func isIdle(b Bucket, now, idle int64) bool {
	return now-b.Last >= idle && now >= b.Last
}

// Len is the number of keys remembered over all policies.
func (l *Limiter) Len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// Sweep forgets the keys whose buckets have refilled completely: those
// untouched for the longest window of the current policies (every bucket
// is full by then, and a full bucket is what a new key gets). Entries of
// removed or changed policies go the same way. A shard that shrank to a
// quarter of its peak gets a new map, giving the memory back (Go maps do
// not shrink). The owner calls Sweep periodically, every 10 seconds or so;
// it locks one shard at a time. It returns the number of keys removed.
func (l *Limiter) Sweep() int {
	idle := l.snap.Load().idle
	removed := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		now := l.clock() // per shard: a long sweep judges every shard by its own time
		for h, b := range s.m {
			if isIdle(b, now, idle) {
				delete(s.m, h)
				removed++
			}
		}
		if s.peak >= 4*minPerShard && len(s.m) < s.peak/4 {
			s.m = shrunk(s.m)
			s.peak = len(s.m)
		}
		s.mu.Unlock()
	}
	return removed
}

// shrunk copies m into a map sized for it (maps.Clone keeps the size).
func shrunk(m map[uint64]Bucket) map[uint64]Bucket {
	c := make(map[uint64]Bucket, len(m))
	for h, b := range m {
		c[h] = b
	}
	return c
}

// ceilSeconds is d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d-1)/time.Second) + 1
}

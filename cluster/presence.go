// Package cluster tells a flashgate process which other processes are alive
// on the same NATS installation. Each process writes a heartbeat under its
// node id in the FLASHGATE_NODES bucket and watches the bucket; a process is
// live while its heartbeats keep arriving. The rate limiter divides global
// limits by the number of live processes.
package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Member is what a process says about itself in its heartbeat.
type Member struct {
	Node    string    `json:"node"`
	HTTP    string    `json:"http,omitempty"` // its API's base URL
	Started time.Time `json:"started"`
	Beat    time.Time `json:"beat"`              // when this heartbeat was written (the writer's clock)
	Applied uint64    `json:"applied,omitempty"` // the last stream sequence its projections applied
	Owns    []string  `json:"owns,omitempty"`    // the sales whose writer it runs
}

// Config configures a Presence.
type Config struct {
	Self     Member        // this process (Node required)
	Interval time.Duration // between heartbeats; default 2s
	// Dead is how long after its last heartbeat a process counts as gone;
	// default 3 x Interval.
	Dead     time.Duration
	Now      func() time.Time
	Log      *slog.Logger
	OnChange func(live int, degraded bool) // called when either changes
	// Update, if set, fills the changing fields of each heartbeat (the
	// projections' progress, the sales owned).
	Update func(*Member)
	// Resync, if set, returns a channel closed at the next reconnect to
	// NATS: the watch starts again at once (a server restart loses its
	// consumer; the client would notice only after missed heartbeats).
	Resync func() <-chan struct{}
}

// Presence keeps this process's heartbeat and the view of the others.
type Presence struct {
	kv  jetstream.KeyValue
	cfg Config

	mu        sync.Mutex
	heard     map[string]heard // node -> last heartbeat
	live      int              // as last reported
	degraded  bool
	recovered time.Time // when the last degraded spell ended
	reported  bool      // degraded, as last reported
}

type update struct {
	e       jetstream.KeyValueEntry
	initial bool // written before the watch began
}

type heard struct {
	m  Member
	at time.Time // by this process's clock
}

// New returns a presence on the FLASHGATE_NODES bucket kv. Run starts it.
func New(kv jetstream.KeyValue, c Config) *Presence {
	if c.Interval <= 0 {
		c.Interval = 2 * time.Second
	}
	if c.Dead <= 0 {
		c.Dead = 3 * c.Interval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return &Presence{kv: kv, cfg: c, heard: map[string]heard{}, live: 1}
}

// Live is the number of live processes, this one included (at least 1).
// While this process cannot reach NATS it keeps the last figure it knew:
// the others are most likely still there.
func (p *Presence) Live() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live
}

// Degraded reports whether the last heartbeat could not be written.
func (p *Presence) Degraded() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.degraded
}

// Members is the live processes, by node id.
func (p *Presence) Members() []Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.cfg.Now()
	var out []Member
	for _, h := range p.heard {
		if now.Sub(h.at) < p.cfg.Dead {
			out = append(out, h.m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// Run beats and watches until ctx ends, then deletes this process's entry
// so that the others count it gone at once.
func (p *Presence) Run(ctx context.Context) error {
	if p.cfg.Self.Node == "" {
		return errors.New("cluster: no node id")
	}
	updates := make(chan update, 64)
	go p.watch(ctx, updates)
	p.beat(ctx)
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = p.kv.Delete(dctx, p.cfg.Self.Node)
			cancel()
			return ctx.Err()
		case u := <-updates:
			p.note(u)
		case <-tick.C:
			p.beat(ctx)
		}
	}
}

// beat writes the heartbeat and recounts.
func (p *Presence) beat(ctx context.Context) {
	m := p.cfg.Self
	if p.cfg.Update != nil {
		p.cfg.Update(&m)
	}
	m.Beat = p.cfg.Now().UTC()
	b, _ := json.Marshal(m)
	bctx, cancel := context.WithTimeout(ctx, p.cfg.Interval)
	_, err := p.kv.Put(bctx, m.Node, b)
	cancel()
	if ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	wasDegraded := p.degraded
	p.degraded = err != nil
	if wasDegraded && err == nil {
		p.recovered = p.cfg.Now()
	}
	if err == nil {
		p.heard[m.Node] = heard{m: m, at: p.cfg.Now()}
	}
	p.mu.Unlock()
	switch {
	case err != nil && !wasDegraded:
		p.cfg.Log.Warn("cluster: heartbeat failed; rate limits keep the last known share of live processes", "err", err)
	case err == nil && wasDegraded:
		p.cfg.Log.Info("cluster: heartbeat restored")
	}
	p.recount()
}

// note takes one entry from the watch.
func (p *Presence) note(u update) {
	e := u.e
	p.mu.Lock()
	switch e.Operation() {
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		delete(p.heard, e.Key())
	default:
		var m Member
		if json.Unmarshal(e.Value(), &m) == nil && m.Node == e.Key() {
			// A heartbeat written before the watch began may be from a
			// process that has since died: it counts for two intervals, in
			// which a live process beats again. (Not by the entry's time:
			// that is the server's clock, not this process's.)
			at := p.cfg.Now()
			if u.initial && p.cfg.Dead > 2*p.cfg.Interval {
				at = at.Add(-(p.cfg.Dead - 2*p.cfg.Interval))
			}
			p.heard[m.Node] = heard{m: m, at: at}
		}
	}
	p.mu.Unlock()
	p.recount()
}

// recount works out the live count and reports a change. While degraded,
// the count stays where it was.
func (p *Presence) recount() {
	p.mu.Lock()
	now := p.cfg.Now()
	live := 0
	for node, h := range p.heard {
		if now.Sub(h.at) < p.cfg.Dead {
			live++
		} else if now.Sub(h.at) > 10*p.cfg.Dead {
			delete(p.heard, node)
		}
	}
	if _, self := p.heard[p.cfg.Self.Node]; !self {
		live++ // this process is alive whatever the bucket says
	}
	changed := p.degraded != p.reported
	// Just back from an outage, the others' heartbeats are old until the
	// watch catches up: the count may rise then, not fall.
	settling := now.Sub(p.recovered) < p.cfg.Dead
	if !p.degraded && live != p.live && (live > p.live || !settling) {
		p.live, changed = live, true
	}
	p.reported = p.degraded
	live, degraded := p.live, p.degraded
	p.mu.Unlock()
	if changed && p.cfg.OnChange != nil {
		p.cfg.OnChange(live, degraded)
	}
}

// watch feeds updates from the bucket until ctx ends, starting again after
// a failure.
func (p *Presence) watch(ctx context.Context, out chan<- update) {
	const first = 250 * time.Millisecond
	for backoff := first; ctx.Err() == nil; backoff = min(2*backoff, 5*time.Second) {
		var again <-chan struct{}
		if p.cfg.Resync != nil {
			again = p.cfg.Resync()
		}
		resynced := false
		w, err := p.kv.WatchAll(ctx)
		if err == nil {
			initial := true
		watching:
			for {
				select {
				case e, ok := <-w.Updates():
					if !ok {
						break watching
					}
					if e == nil {
						initial = false // the initial values are done
						continue
					}
					select {
					case out <- update{e: e, initial: initial}:
					case <-ctx.Done():
					}
				case <-again:
					resynced = true
					break watching
				}
			}
			_ = w.Stop()
		}
		if resynced {
			backoff = first / 2 // reconnected: watch again at once (the loop doubles it back)
			continue
		}
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
}

// String describes the view, for logs.
func (p *Presence) String() string {
	return fmt.Sprintf("%d live process(es)", p.Live())
}

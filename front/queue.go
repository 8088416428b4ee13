package front

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/queue"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// The waiting room as this process sees it. Every process folds every
// decision batch of a queue sale into its own queue.Room, in order, the
// same way the writer and the audit do; a shopper's position is then a
// lookup in memory (O(log n)), never a question to the writer.

// Bounds of the presence pings (QueueSeenRequested), the observed
// admission rate, the change signal and the claims.
const (
	// MaxSeenPerRequest caps the tickets of one QueueSeenRequested.
	MaxSeenPerRequest = 5000
	// PingEvery is how often the presence loop runs.
	PingEvery = time.Second
	// RateWindow is how far back the observed admission rate looks.
	RateWindow = 30 * time.Second
	// SignalEvery is the least time between two change signals of a room
	// (QueueChanged): a stream wakes at most four times a second however
	// busy the room.
	SignalEvery = 250 * time.Millisecond
	// ClaimRetry is how long a claim sent waits for its QueueClaimed (or
	// the purchase) before the next hand-over sends it again.
	ClaimRetry = 5 * time.Second
)

// QueueView is one ticket as this process's room shows it: a copy.
type QueueView struct {
	Ticket, Shopper string
	Status          string // queue.StatusOf: waiting, admitted, claimed, left, expired, sold_out, closed
	Reason          string // why it left (left, idle, unclaimed, limit_reached)
	Place           int64  // -1 until the pre-queue is drawn
	Ahead           int    // waiting tickets before it; -1 when not waiting or not drawn yet
	ETASeconds      int    // estimated seconds until the turn; -1 unknown
	TokenID         string
	TokenIssuedAt   time.Time
	TokenExpiresAt  time.Time
	ClaimBy         time.Time
	Bought          bool   // the admission's token bought a unit
	Version         uint64 // the last batch version folded into the room
}

// roomView is one queue sale's room and what the front keeps beside it.
type roomView struct {
	mu        sync.RWMutex
	sale      string
	cfg       events.Queue
	room      *queue.Room
	version   uint64               // last batch folded
	failed    bool                 // a batch did not fit the room (logged once)
	rate      admissions           // admissions observed
	perSecond float64              // the observed rate as of the last batch (admissions.estimate); 0 unknown
	changed   chan struct{}        // closed and replaced when a batch changed a position or a ticket's state (see signal)
	signalled time.Time            // when changed was last closed (wall clock)
	held      bool                 // a change waits for the next signal
	folded    chan struct{}        // nil until asked for (QueueFolded): closed at the next batch
	claims    map[string]time.Time // admitted tickets whose claim this process sent, and when
	bought    map[string]struct{}  // tickets whose token bought (bounded by the stock)
	pings     *pings
}

func newRoomView(sale string, q events.Queue) *roomView {
	return &roomView{sale: sale, cfg: q, room: queue.NewRoom(), changed: make(chan struct{}),
		claims: map[string]time.Time{}, bought: map[string]struct{}{}, pings: newPings(time.Duration(q.IdleTimeout) / 4)}
}

func (f *Front) roomOf(sale string) *roomView {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.rooms[sale]
}

// foldQueue folds a decision batch into its sale's room, once per version.
// Every event goes to the room (Room.Apply ignores what it does not know).
// A batch that does not fit is logged once; the room keeps what fitted.
func (f *Front) foldQueue(db *events.DecisionBatch) {
	rv := f.roomOf(db.Sale)
	if rv == nil {
		return
	}
	rv.mu.Lock()
	if db.Head.Version <= rv.version {
		rv.mu.Unlock()
		return
	}
	if rv.version != 0 && db.Head.Version != rv.version+1 && !rv.failed {
		rv.failed = true
		f.cfg.Log.Error("front: queue batches missing; positions may be wrong", "sale", db.Sale, "have", rv.version, "got", db.Head.Version)
	}
	changed, admitted := false, 0
	for i := range db.Events {
		e := &db.Events[i]
		if d, ok := e.Data.(*events.PurchaseAccepted); ok {
			if t, ok := rv.room.Ticket(d.TokenID); ok && (t.Status == queue.Admitted || t.Status == queue.Claimed) {
				rv.bought[d.TokenID] = struct{}{}
			}
		}
		if err := rv.room.Apply(*e, db.DecidedAt); err != nil {
			if !rv.failed {
				rv.failed = true
				f.cfg.Log.Error("front: a queue decision does not fit the room; positions may be wrong", "sale", db.Sale,
					"version", db.Head.Version, "event", e.ID, "err", err)
			}
			continue
		}
		// What moves a place or changes a ticket's state wakes the streams;
		// joins (placed behind everyone) and signs of life do not.
		switch d := e.Data.(type) {
		case *events.QueueShuffled, *events.QueueClosed, *events.SaleUpdated:
			changed = true
		case *events.QueueAdmitted:
			admitted++
			changed = true
		case *events.QueueClaimed:
			delete(rv.claims, d.Ticket)
			changed = true
		case *events.QueueLeft:
			if d.Reason != events.LeftNothing { // a refused leave changes nothing
				delete(rv.claims, d.Ticket)
				changed = true
			}
		case *events.PurchaseAccepted:
			if _, ok := rv.room.Ticket(d.TokenID); ok {
				delete(rv.claims, d.TokenID)
				changed = true
			}
		case *events.TokenExpired:
			if _, ok := rv.room.Ticket(d.TokenID); ok {
				delete(rv.claims, d.TokenID)
				changed = true
			}
		}
	}
	rv.version = db.Head.Version
	if admitted > 0 {
		rv.rate.add(db.DecidedAt, admitted)
	}
	rv.perSecond = rv.rate.estimate(db.DecidedAt)
	if changed {
		rv.signal()
	}
	if rv.folded != nil {
		close(rv.folded)
		rv.folded = nil
	}
	waiting, total := rv.waiting(), rv.room.Admitted()
	rv.mu.Unlock()
	f.mu.Lock()
	if v := f.sales[db.Sale]; v != nil {
		v.QueueWaiting, v.QueueAdmitted = waiting, total
	}
	f.mu.Unlock()
}

// waiting is the tickets waiting: none once the queue ended (those still
// in line are told sold out or closed). rv.mu is held.
func (rv *roomView) waiting() int {
	if rv.room.Closed() != "" {
		return 0
	}
	return rv.room.Waiting()
}

// signal closes the change signal, at most once every SignalEvery: a
// change within SignalEvery of the last signal is signalled when that time
// is up, together with any that follow meanwhile. rv.mu is held.
func (rv *roomView) signal() {
	if rv.held {
		return
	}
	wait := SignalEvery - time.Since(rv.signalled)
	if rv.signalled.IsZero() || wait <= 0 {
		rv.fire()
		return
	}
	rv.held = true
	time.AfterFunc(wait, func() {
		rv.mu.Lock()
		defer rv.mu.Unlock()
		rv.held = false
		rv.fire()
	})
}

func (rv *roomView) fire() {
	close(rv.changed)
	rv.changed = make(chan struct{})
	rv.signalled = time.Now()
}

// replayQueue folds a queue sale's decision history, up to the batch at
// stream sequence last, into its room (at start: the consumer then follows
// from there; a batch seen twice is folded once).
func (f *Front) replayQueue(ctx context.Context, sale string, last uint64) error {
	return stream.Read(ctx, f.st, events.DecisionSubject(sale), 1, last, func(m *jetstream.RawStreamMsg) error {
		db, err := events.DecodeDecisions(m.Data)
		if err != nil {
			f.cfg.Log.Error("front: bad decision batch", "subject", m.Subject, "seq", m.Sequence, "err", err)
			return nil
		}
		f.foldQueue(&db)
		return nil
	})
}

// QueueTicket returns a ticket of a queue sale as this process's room shows
// it. It takes O(log n).
func (f *Front) QueueTicket(sale, ticket string) (QueueView, bool) {
	rv := f.roomOf(sale)
	if rv == nil {
		return QueueView{}, false
	}
	rv.mu.RLock()
	defer rv.mu.RUnlock()
	t, ok := rv.room.Ticket(ticket)
	if !ok {
		return QueueView{}, false
	}
	return rv.view(t), true
}

// QueueActive returns the shopper's waiting or admitted ticket.
func (f *Front) QueueActive(sale, shopper string) (QueueView, bool) {
	rv := f.roomOf(sale)
	if rv == nil {
		return QueueView{}, false
	}
	rv.mu.RLock()
	defer rv.mu.RUnlock()
	t, ok := rv.room.Active(shopper)
	if !ok {
		return QueueView{}, false
	}
	return rv.view(t), true
}

// view copies t; rv.mu is held.
func (rv *roomView) view(t *queue.Ticket) QueueView {
	v := QueueView{Ticket: t.ID, Shopper: t.Shopper, Status: rv.room.StatusOf(t), Reason: t.Reason, Place: t.Place,
		Ahead: -1, ETASeconds: -1, TokenID: t.TokenID, TokenIssuedAt: t.TokenIssuedAt, TokenExpiresAt: t.TokenExpiresAt,
		ClaimBy: t.ClaimBy, Version: rv.version}
	_, v.Bought = rv.bought[t.ID]
	if v.Status == queue.Waiting {
		v.Ahead = rv.room.Ahead(t)
		v.ETASeconds = eta(v.Ahead, rv.perSecond, rv.cfg.AdmissionRate)
	}
	return v
}

// eta is the estimated seconds until a ticket with ahead tickets before it
// is let in: ahead over the observed admission rate (see
// admissions.estimate), or over the sale's configured rate while none was
// ever observed; -1 while the place is not drawn.
func eta(ahead int, observed, configured float64) int {
	if ahead < 0 {
		return -1
	}
	r := observed
	if r <= 0 {
		r = configured
	}
	if r <= 0 {
		return -1
	}
	s := math.Ceil(float64(ahead) / r)
	if s > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(s)
}

// QueueChanged returns a channel closed after the next batch that moves a
// place or changes a ticket's state in the sale's room (an admission, a
// claim, a leave, the shuffle, the queue's end or reopening, a purchase, a
// token's expiry; not a join or a sign of life), at most once every
// SignalEvery; nil for a sale without a queue: never. Take it before
// reading the room, so no change is missed.
func (f *Front) QueueChanged(sale string) <-chan struct{} {
	rv := f.roomOf(sale)
	if rv == nil {
		return nil
	}
	rv.mu.RLock()
	defer rv.mu.RUnlock()
	return rv.changed
}

// QueueFolded returns a channel closed once the next batch of the sale is
// folded into its room, whatever it holds (nil for a sale without a queue:
// never): for waiting on a ticket this process has not seen yet. Take it
// before reading the room.
func (f *Front) QueueFolded(sale string) <-chan struct{} {
	rv := f.roomOf(sale)
	if rv == nil {
		return nil
	}
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if rv.folded == nil {
		rv.folded = make(chan struct{})
	}
	return rv.folded
}

// QueueStats returns a queue sale's tickets waiting, admissions so far and
// the observed admission rate as of the last batch (see
// admissions.estimate; 0 unknown).
func (f *Front) QueueStats(sale string) (waiting int, admitted int64, ratePerSec float64) {
	rv := f.roomOf(sale)
	if rv == nil {
		return 0, 0, 0
	}
	rv.mu.RLock()
	defer rv.mu.RUnlock()
	return rv.waiting(), rv.room.Admitted(), rv.perSecond
}

// QueueSeen notes that the shopper of a waiting or admitted ticket is here
// (polling or streaming); the presence loop tells the writer (see pings).
func (f *Front) QueueSeen(sale, ticket string) {
	rv := f.roomOf(sale)
	if rv == nil {
		return
	}
	rv.mu.RLock()
	t, ok := rv.room.Ticket(ticket)
	active := ok && rv.room.Closed() == "" && (t.Status == queue.Waiting || t.Status == queue.Admitted)
	rv.mu.RUnlock()
	if active {
		rv.pings.note(ticket, f.cfg.Now())
	}
}

// QueueClaim tells the writer that an admitted ticket's token was handed to
// its shopper (call it once the answer carrying the token is written). A
// claim is sent at most once every ClaimRetry per ticket and process: a
// call sends it again when the last one's append failed, or when its
// QueueClaimed (or the purchase) was not folded within ClaimRetry. A ticket
// no longer admitted (claimed, bought, left, expired) is not claimed.
func (f *Front) QueueClaim(sale, ticket string) error {
	rv := f.roomOf(sale)
	if rv == nil {
		return nil
	}
	now := f.cfg.Now()
	rv.mu.Lock()
	t, ok := rv.room.Ticket(ticket)
	sent, was := rv.claims[ticket]
	if !ok || t.Status != queue.Admitted || (was && now.Sub(sent) < ClaimRetry) {
		rv.mu.Unlock()
		return nil
	}
	rv.claims[ticket] = now
	shopper := t.Shopper
	rv.mu.Unlock()
	forget := func() { // the next hand-over sends it again
		rv.mu.Lock()
		if at, ok := rv.claims[ticket]; ok && at.Equal(now) {
			delete(rv.claims, ticket)
		}
		rv.mu.Unlock()
	}
	at := now.UTC()
	err := f.send(events.Event{ID: f.ids.New(at), Type: events.TypeQueueClaimRequested, Version: events.SchemaVersion,
		Sale: sale, Time: at, Shopper: shopper, Data: &events.QueueClaimRequested{Ticket: ticket}}, func(err error) {
		if err != nil {
			forget()
		}
	})
	if err != nil {
		forget()
	}
	return err
}

// presence sends, once every PingEvery, each queue sale's QueueSeenRequested
// for the tickets seen here (see pings), until ctx ends.
func (f *Front) presence(ctx context.Context) {
	t := time.NewTicker(PingEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, req := range f.pingRound(f.cfg.Now()) {
			if err := f.Send(req); err != nil {
				f.cfg.Log.Warn("front: presence ping not sent", "sale", req.Sale, "err", err)
			}
		}
	}
}

// pingRound collects the presence requests due at now, in chunks of at most
// MaxSeenPerRequest tickets.
func (f *Front) pingRound(now time.Time) []events.Event {
	f.mu.RLock()
	rooms := make([]*roomView, 0, len(f.rooms))
	for _, rv := range f.rooms {
		rooms = append(rooms, rv)
	}
	f.mu.RUnlock()
	var out []events.Event
	for _, rv := range rooms {
		rv.mu.RLock()
		due := rv.pings.round(now, func(id string) bool {
			t, ok := rv.room.Ticket(id)
			return ok && rv.room.Closed() == "" && (t.Status == queue.Waiting || t.Status == queue.Admitted)
		})
		rv.mu.RUnlock()
		at := now.UTC()
		for len(due) > 0 {
			n := min(len(due), MaxSeenPerRequest)
			out = append(out, events.Event{ID: f.ids.New(at), Type: events.TypeQueueSeenRequested, Version: events.SchemaVersion,
				Sale: rv.sale, Time: at, Shopper: "front", Data: &events.QueueSeenRequested{Tickets: due[:n:n]}})
			due = due[n:]
		}
	}
	return out
}

// pings is the presence bookkeeping of one sale: which tickets were seen on
// this process, and when each was last pinged to the writer. A ticket seen
// is pinged at the next round, then not again before every (the idle
// timeout / 4) has passed: at most about four pings per idle timeout, and
// the writer hears of a present shopper at most every + PingEvery late.
//
// Memory holds only tickets seen or pinged within the last every, and a
// round forgets tickets no longer waiting or admitted: it is bounded by the
// live tickets of this process's shoppers. Each note is O(1); a round costs
// the tickets it visits.
type pings struct {
	mu      sync.Mutex
	every   time.Duration
	tickets map[string]*ping
	fresh   []string           // noted, never pinged: due at the next round
	slots   map[int64][]string // by second (unix) at which they are due again
	swept   int64              // the last second a round processed
}

type ping struct {
	last  int64 // unix nanos of the last ping
	again bool  // seen since
}

func newPings(every time.Duration) *pings {
	return &pings{every: max(every, time.Millisecond), tickets: map[string]*ping{}, slots: map[int64][]string{}}
}

// note records that ticket was seen at now.
func (p *pings) note(ticket string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.tickets[ticket]; ok {
		s.again = true
		return
	}
	p.tickets[ticket] = &ping{again: true}
	p.fresh = append(p.fresh, ticket)
}

// round returns the tickets to ping at now: those seen since their last
// ping at least every ago (or never pinged), still active. It forgets
// tickets that were not seen again within every, or are not active.
func (p *pings) round(now time.Time, active func(string) bool) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var due []string
	visit := func(id string) {
		s := p.tickets[id]
		if s == nil {
			return
		}
		if !s.again || !active(id) {
			delete(p.tickets, id)
			return
		}
		if s.last != 0 && now.UnixNano()-s.last < int64(p.every) {
			// Its slot's second came, its time not yet: the next second.
			p.slots[now.Unix()+1] = append(p.slots[now.Unix()+1], id)
			return
		}
		s.last, s.again = now.UnixNano(), false
		due = append(due, id)
		sec := now.Add(p.every).Unix() // the second it is due again in
		p.slots[sec] = append(p.slots[sec], id)
	}
	fresh := p.fresh
	p.fresh = nil
	for _, id := range fresh {
		visit(id)
	}
	nowSec := now.Unix()
	if p.swept == 0 || nowSec-p.swept > int64(len(p.slots))+1 {
		// First round, or a long pause: walk the slots present instead of
		// every second since the last round.
		for sec, ids := range p.slots {
			if sec <= nowSec {
				delete(p.slots, sec)
				for _, id := range ids {
					visit(id)
				}
			}
		}
	} else {
		for sec := p.swept + 1; sec <= nowSec; sec++ {
			ids, ok := p.slots[sec]
			if !ok {
				continue
			}
			delete(p.slots, sec)
			for _, id := range ids {
				visit(id)
			}
		}
	}
	p.swept = nowSec
	return due
}

// size is the tickets the bookkeeping holds (for tests).
func (p *pings) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.tickets)
}

// admissions is the observed admission rate: admissions by batch time, a
// running count over the last RateWindow and the total since the first.
// Times passed to its methods do not go back (batch times).
type admissions struct {
	first  time.Time  // the first admission batch seen
	firstN int        // its admissions
	total  int64      // admissions since the first batch, that one included
	recent []admitted // within the window of the newest, oldest first
	n      int        // admissions in recent
}

type admitted struct {
	at time.Time
	n  int
}

// add records n admissions decided at at.
func (a *admissions) add(at time.Time, n int) {
	if a.first.IsZero() {
		a.first, a.firstN = at, n
	}
	a.total += int64(n)
	a.recent = append(a.recent, admitted{at, n})
	a.n += n
	a.cut(at)
}

// cut forgets the batches before the window ending at now: O(1) amortized.
func (a *admissions) cut(now time.Time) {
	from := now.Add(-RateWindow)
	i := 0
	for i < len(a.recent) && a.recent[i].at.Before(from) {
		a.n -= a.recent[i].n
		i++
	}
	if i > 0 {
		a.recent = a.recent[i:]
	}
}

// perSecond is the admissions per second over the last RateWindow before
// now; 0 when unknown. While the queue has admitted for less than the
// window, the rate is measured from its first admission batch, which is not
// counted (the writer's allowance starts full: the first batch is a burst).
func (a *admissions) perSecond(now time.Time) float64 {
	a.cut(now)
	n := a.n
	if a.first.IsZero() || n == 0 {
		return 0
	}
	from := now.Add(-RateWindow)
	span := RateWindow
	if a.first.After(from) {
		span = now.Sub(a.first)
		n -= a.firstN
		if span < time.Second || n <= 0 {
			return 0
		}
	}
	return float64(n) / span.Seconds()
}

// estimate is the rate an estimate of the wait uses at now: the rate over
// the last RateWindow (perSecond); when there was no admission within it
// but some before (admissions stalled: tokens held, claim windows running),
// the long-run rate, every admission since the first over the time since;
// 0 (unknown: the caller uses the configured rate) when none was ever
// observed, or only the opening burst less than RateWindow ago.
func (a *admissions) estimate(now time.Time) float64 {
	if r := a.perSecond(now); r > 0 || a.first.IsZero() {
		return r
	}
	span := now.Sub(a.first)
	if span < RateWindow {
		return 0
	}
	return float64(a.total) / span.Seconds()
}

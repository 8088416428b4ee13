package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/front"
	"github.com/flashgate/flashgate/handlers"
	"github.com/flashgate/flashgate/queue"
	"github.com/flashgate/flashgate/tokens"
	"github.com/oklog/ulid/v2"
)

// The waiting room's shopper API. A join is a request the sale's writer
// decides like a token request; everything else (the position, the
// admission and its token, the stream of changes) is read from this
// process's copy of the room (front.QueueTicket), which every process folds
// from the decisions, so polling and streaming never reach the writer.
//
//	POST   /api/v1/sales/{sale}/queue                   join (the same ticket when joined before)
//	GET    /api/v1/sales/{sale}/queue/{ticket}          the ticket: position, or the token once admitted
//	GET    /api/v1/sales/{sale}/queue/{ticket}/events   the same as Server-Sent Events
//	DELETE /api/v1/sales/{sale}/queue/{ticket}          leave

// Bounds of the waiting room's event streams.
const (
	// DefaultMaxQueueStreams is Config.MaxQueueStreams's default.
	DefaultMaxQueueStreams = 10000
	// MaxQueueStreamsPerShopper bounds one shopper's open streams (two
	// tabs); beyond: 429 rate_limited, Retry-After 5.
	MaxQueueStreamsPerShopper = 2
	queueKeepAlive            = 15 * time.Second
	queuePositionEvery        = time.Second // position events per client at most
	streamWriteTimeout        = 5 * time.Second
)

// recentTicket is how young a ticket this process has not folded yet must
// be (by its id, a ULID stamped with the join's time) to be waited for
// rather than answered 404 at once: another process took the join and this
// one is a moment behind.
const recentTicket = 30 * time.Second

// queueSale looks up the request's sale, which must have a waiting room.
func (a *api) queueSale(r *http.Request) (front.SaleView, error) {
	v, err := a.lookup(r.PathValue("sale"))
	if err != nil {
		return v, err
	}
	if v.Sale.Queue == nil {
		return v, newError(http.StatusNotFound, "queue_not_enabled", fmt.Sprintf("sale %q has no waiting room", v.Sale.ID))
	}
	return v, nil
}

// shopperTicket is the sale and the shopper's ticket a ticket route names.
func (a *api) shopperTicket(r *http.Request, shopper string) (front.SaleView, front.QueueView, error) {
	v, err := a.queueSale(r)
	if err != nil {
		return v, front.QueueView{}, err
	}
	q, err := a.ownTicket(r, v, r.PathValue("ticket"), shopper)
	return v, q, err
}

// ownTicket returns the shopper's ticket; another shopper's is not found
// either (its existence is not revealed). A ticket this process has not
// folded yet whose id is recent (recentTicket) is waited for, up to
// DecisionWait: the join was decided, this process is behind.
func (a *api) ownTicket(r *http.Request, v front.SaleView, ticket, shopper string) (front.QueueView, error) {
	q, ok := a.Front.QueueTicket(v.Sale.ID, ticket)
	if !ok && recentID(ticket, a.Now()) {
		q, ok = a.awaitTicket(r, v.Sale.ID, ticket)
	}
	if !ok || q.Shopper != shopper {
		return q, newError(http.StatusNotFound, "ticket_not_found", "no such ticket in this sale's waiting room")
	}
	return q, nil
}

// recentID reports whether id is a ULID stamped within recentTicket of now
// (either way: the clocks of the processes differ a little).
func recentID(id string, now time.Time) bool {
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return false
	}
	age := now.Sub(ulid.Time(u.Time()))
	return age > -recentTicket && age < recentTicket
}

// joinsFrom is when a sale's queue takes joins: the pre-queue's opening, or
// the sale's.
func joinsFrom(s handlers.Sale) time.Time {
	if s.Queue != nil && !s.Queue.PreQueueOpensAt.IsZero() && s.Queue.PreQueueOpensAt.Before(s.OpensAt) {
		return s.Queue.PreQueueOpensAt
	}
	return s.OpensAt // also when an operator opened the sale before the pre-queue's time
}

// joinError is the answer to a refused join.
func joinError(s handlers.Sale, reason string) *Error {
	e := reasonError(reason)
	if reason == events.ReasonNotOpen {
		e = e.with("opensAt", s.OpensAt.UTC().Format(time.RFC3339Nano))
		if s.Queue != nil && !s.Queue.PreQueueOpensAt.IsZero() {
			e = e.with("preQueueOpensAt", s.Queue.PreQueueOpensAt.UTC().Format(time.RFC3339Nano))
		}
	}
	return e
}

// cheapJoin answers a join from the cached head when the outcome is
// certain: closed, sold out, not taking joins yet.
func cheapJoin(v front.SaleView, now time.Time) error {
	switch v.Sale.StatusAt(now, v.Head) {
	case handlers.StatusClosed:
		return joinError(v.Sale, events.ReasonClosed)
	case handlers.StatusSoldOut:
		return joinError(v.Sale, events.ReasonSoldOut)
	}
	if now.Before(joinsFrom(v.Sale)) {
		return joinError(v.Sale, events.ReasonNotOpen)
	}
	return nil
}

// queueJoin answers POST /api/v1/sales/{sale}/queue.
func (a *api) queueJoin(w http.ResponseWriter, r *http.Request, shopper string) error {
	v, err := a.queueSale(r)
	if err != nil {
		return err
	}
	now := a.Now()
	if err := cheapJoin(v, now); err != nil {
		a.answered("queue", "cheap")
		return err
	}
	if err := a.checkSignature(r, v); err != nil {
		return err
	}
	if err := a.checkChallenge(r, v, shopper); err != nil {
		return err
	}
	req := events.Event{ID: reqID(r), Type: events.TypeQueueJoinRequested, Version: events.SchemaVersion,
		Sale: v.Sale.ID, Time: now.UTC(), Shopper: shopper, ClientRequestID: clientRequestID(r), Data: &events.QueueJoinRequested{}}
	// Not stored: the retry may use the solution again.
	d, pending, err := a.decide(r, req, "queue", func() { a.releaseChallenge(r, v) })
	if err != nil {
		return err
	}
	if pending {
		w.Header().Set("Location", "/api/v1/requests/"+req.ID)
		writeJSON(w, http.StatusAccepted, map[string]any{"requestId": req.ID, "status": "pending"})
		return nil
	}
	switch x := d.Data.(type) {
	case *events.QueueJoinDenied:
		return joinError(v.Sale, x.Reason)
	case *events.QueueJoined:
		// The front folds a batch before it hands out its decisions, so the
		// ticket is there; wait a moment in case it is not.
		q, found := a.awaitTicket(r, v.Sale.ID, x.Ticket)
		loc := "/api/v1/sales/" + v.Sale.ID + "/queue/" + x.Ticket
		w.Header().Set("Location", loc)
		if !found {
			writeJSON(w, http.StatusAccepted, map[string]any{"requestId": req.ID, "ticket": x.Ticket, "status": "pending"})
			return nil
		}
		a.Front.QueueSeen(v.Sale.ID, q.Ticket)
		// The answer to a join does not hand over a token (an admitted
		// shopper takes it with GET or the stream, within claimBy): a
		// shopper who joins and goes away never takes the turn.
		status := http.StatusCreated
		if x.Already {
			status = http.StatusOK
		}
		return a.writeTicket(w, status, v, q, false)
	}
	return fmt.Errorf("request %s: join answered by %s", req.ID, d.Type)
}

// awaitTicket waits up to DecisionWait for this process's room to hold the
// ticket.
func (a *api) awaitTicket(r *http.Request, sale, ticket string) (front.QueueView, bool) {
	var limit <-chan time.Time
	for {
		changed := a.Front.QueueFolded(sale) // a join is no change to the streams: wait for any batch
		if q, ok := a.Front.QueueTicket(sale, ticket); ok {
			return q, true
		}
		if limit == nil {
			t := time.NewTimer(a.DecisionWait)
			defer t.Stop()
			limit = t.C
		}
		select {
		case <-changed:
		case <-limit:
			return front.QueueView{}, false
		case <-r.Context().Done():
			return front.QueueView{}, false
		}
	}
}

// queueTicket answers GET /api/v1/sales/{sale}/queue/{ticket}.
func (a *api) queueTicket(w http.ResponseWriter, r *http.Request, shopper string) error {
	v, q, err := a.shopperTicket(r, shopper)
	if err != nil {
		return err
	}
	a.Front.QueueSeen(v.Sale.ID, q.Ticket)
	return a.writeTicket(w, http.StatusOK, v, q, true)
}

// queueLeave answers DELETE /api/v1/sales/{sale}/queue/{ticket}.
func (a *api) queueLeave(w http.ResponseWriter, r *http.Request, shopper string) error {
	v, q, err := a.shopperTicket(r, shopper)
	if err != nil {
		return err
	}
	now := a.Now()
	if status, _, _ := shown(q, now); status != queue.Waiting && status != queue.Admitted {
		// Nothing to leave: say where the ticket is. (A claimed ticket
		// whose token is valid and unused shows admitted: leaving gives
		// the token back.)
		return a.writeTicket(w, http.StatusOK, v, q, true)
	}
	req := events.Event{ID: reqID(r), Type: events.TypeQueueLeaveRequested, Version: events.SchemaVersion,
		Sale: v.Sale.ID, Time: now.UTC(), Shopper: shopper, ClientRequestID: clientRequestID(r),
		Data: &events.QueueLeaveRequested{Ticket: q.Ticket}}
	d, pending, err := a.decide(r, req, "queue", nil)
	if err != nil {
		return err
	}
	if pending {
		w.Header().Set("Location", "/api/v1/requests/"+req.ID)
		writeJSON(w, http.StatusAccepted, map[string]any{"requestId": req.ID, "ticket": q.Ticket, "status": "pending"})
		return nil
	}
	if x, ok := d.Data.(*events.QueueLeft); ok && x.Reason == events.LeftByShopper {
		writeJSON(w, http.StatusOK, map[string]any{"ticket": q.Ticket, "status": queue.Left})
		return nil
	}
	// The ticket was admitted to a purchase, or ended, meanwhile.
	q, _ = a.Front.QueueTicket(v.Sale.ID, q.Ticket)
	return a.writeTicket(w, http.StatusOK, v, q, true)
}

// Statuses a shopper sees besides the room's (queue.Waiting, ...): a
// claimed ticket whose token bought or ran out.
const (
	reasonBought       = "bought"
	reasonTokenExpired = "token_expired"
)

// shown is what the shopper is told of a ticket at now: its status, why
// (for an ended ticket), and whether the answer hands over the token: an
// admitted ticket within its claim window, or a claimed one whose token is
// still valid and unused (the token is never lost to a reload or a
// reconnect). An admitted ticket past claimBy is expired (unclaimed) even
// before this process folds the writer's word for it: the writer reclaims
// it then, a token handed over now would not buy.
func shown(q front.QueueView, now time.Time) (status, reason string, token bool) {
	valid := !q.TokenExpiresAt.IsZero() && now.Before(q.TokenExpiresAt)
	switch q.Status {
	case queue.Admitted:
		if !valid || (!q.ClaimBy.IsZero() && !now.Before(q.ClaimBy)) {
			return queue.Expired, events.LeftUnclaimed, false
		}
		return queue.Admitted, "", true
	case queue.Claimed:
		switch {
		case q.Bought:
			return queue.Claimed, reasonBought, false
		case valid:
			return queue.Admitted, "", true
		}
		return queue.Claimed, reasonTokenExpired, false
	case queue.Expired:
		return queue.Expired, q.Reason, false
	case queue.Left:
		if q.Reason != events.LeftByShopper {
			return queue.Left, q.Reason, false // limit_reached: holds a token or bought already
		}
		return queue.Left, "", false
	}
	return q.Status, "", false
}

// position is the part of a ticket that moves while it waits.
func position(q front.QueueView) map[string]any {
	m := map[string]any{"status": queue.Waiting, "position": nil, "ahead": nil, "etaSeconds": nil}
	if q.Ahead >= 0 {
		m["position"], m["ahead"] = q.Ahead+1, q.Ahead
		if q.ETASeconds >= 0 {
			m["etaSeconds"] = q.ETASeconds
		}
	}
	return m
}

// admission is the part of a ticket that hands over the token. Once the
// answer carrying it is written, the caller claims it (claim).
func (a *api) admission(v front.SaleView, q front.QueueView) (map[string]any, error) {
	tok, err := a.Purchase.Sign(tokens.Claims{Shopper: q.Shopper, Sale: v.Sale.ID, TokenID: q.TokenID,
		IssuedAt: q.TokenIssuedAt, ExpiresAt: q.TokenExpiresAt})
	if err != nil {
		return nil, err
	}
	return map[string]any{"status": queue.Admitted, "token": tok, "tokenId": q.TokenID,
		"expiresAt": q.TokenExpiresAt.UTC().Format(time.RFC3339), "claimBy": q.ClaimBy.UTC().Format(time.RFC3339Nano)}, nil
}

// claim tells the writer that an admitted ticket's token was handed over
// (front.QueueClaim: again, at most every front.ClaimRetry, while no
// QueueClaimed comes back); a claim never sent ends the turn at claimBy.
func (a *api) claim(sale, ticket string) {
	if err := a.Front.QueueClaim(sale, ticket); err != nil {
		a.Log.Warn("queue: claim not sent", "sale", sale, "err", err)
	}
}

// ticketJSON is a ticket as GET .../queue/{ticket} shows it; hand selects
// whether an admitted ticket's answer hands over the token, handed whether
// it does.
func (a *api) ticketJSON(v front.SaleView, q front.QueueView, now time.Time, hand bool) (body map[string]any, handed bool, err error) {
	status, reason, token := shown(q, now)
	body = map[string]any{"ticket": q.Ticket, "status": status, "position": nil, "ahead": nil, "etaSeconds": nil}
	switch {
	case token && hand:
		m, err := a.admission(v, q)
		if err != nil {
			return nil, false, err
		}
		for k, x := range m {
			body[k] = x
		}
		handed = true
	case status == queue.Waiting:
		for k, x := range position(q) {
			body[k] = x
		}
	}
	if reason != "" {
		body["reason"] = reason
	}
	return body, handed, nil
}

// writeTicket answers with the ticket (ticketJSON). When the answer hands
// an admitted ticket's token over, the claim is sent once the answer is
// written and flushed.
func (a *api) writeTicket(w http.ResponseWriter, status int, v front.SaleView, q front.QueueView, hand bool) error {
	body, handed, err := a.ticketJSON(v, q, a.Now(), hand)
	if err != nil {
		return err
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if _, err := w.Write(append(b, '\n')); err != nil {
		return nil // the client went away: no claim, the token may be taken again
	}
	if handed && q.Status == queue.Admitted && http.NewResponseController(w).Flush() == nil {
		a.claim(v.Sale.ID, q.Ticket)
	}
	return nil
}

// queueEvents answers GET /api/v1/sales/{sale}/queue/{ticket}/events: the
// ticket as Server-Sent Events. The current state comes at once (a
// reconnect, with Last-Event-ID or not, resumes from it: an admitted
// shopper gets the token again), then
//
//	event: position  {"status","position","ahead","etaSeconds"} when they change, at most once a second
//	event: admitted  {"status":"admitted","token","tokenId","expiresAt","claimBy"}
//	event: done      {"status","reason"?} for an ended ticket; the stream ends
//
// each with id: the room's batch version. A comment every 15 s keeps
// proxies from closing a quiet stream. Each change of the room (signalled
// at most every front.SignalEvery) costs a client one lookup of its own
// ticket (O(log n)). The token's claim is sent once the admitted event is
// written and flushed, and again at most every front.ClaimRetry while the
// ticket stays admitted and unclaimed. Streams are bounded (429 beyond
// MaxQueueStreamsPerShopper for one shopper, 503 beyond MaxQueueStreams),
// every write has a deadline, and they end when the server stops.
func (a *api) queueEvents(w http.ResponseWriter, r *http.Request, shopper string) error {
	v, q, err := a.shopperTicket(r, shopper)
	if err != nil {
		return err
	}
	if !a.queueStreamsPer.take(shopper) {
		return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
			Message: fmt.Sprintf("at most %d waiting-room streams per shopper; close one, or retry", MaxQueueStreamsPerShopper), RetryAfter: 5}
	}
	defer a.queueStreamsPer.give(shopper)
	select {
	case a.queueStreams <- struct{}{}:
		defer func() { <-a.queueStreams }()
	default:
		return &Error{Status: http.StatusServiceUnavailable, Code: "too_many_streams",
			Message: "too many waiting-room streams open on this server; poll GET .../queue/{ticket} instead, or retry", RetryAfter: 5}
	}
	if a.Metrics != nil {
		a.Metrics.QueueStream(1)
		defer a.Metrics.QueueStream(-1)
	}
	sale, ticket := v.Sale.ID, q.Ticket
	s := &sse{w: w, rc: http.NewResponseController(w)}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	// Presence: the stream is a sign of life, noted often enough that the
	// front's pings (every idle timeout / 4) always have a fresh one.
	seenEvery := max(time.Second, time.Duration(v.Sale.Queue.IdleTimeout)/8)
	seen := time.NewTicker(seenEvery)
	defer seen.Stop()
	keep := time.NewTicker(queueKeepAlive)
	defer keep.Stop()
	a.Front.QueueSeen(sale, ticket)

	var (
		lastPos   string    // the last position event's data
		lastPosAt time.Time // when it was written
		handed    bool      // the admitted event was written
		hold      *time.Timer
		retry     *time.Timer // handed over, not claimed yet: when to claim again
	)
	defer func() {
		if hold != nil {
			hold.Stop()
		}
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		changed := a.Front.QueueChanged(sale) // before the lookup: no change is missed
		q, _ = a.Front.QueueTicket(sale, ticket)
		if sv, ok := a.Front.Sale(sale); ok {
			v = sv
		}
		now := a.Now()
		status, reason, token := shown(q, now)
		switch {
		case token:
			if !handed {
				m, err := a.admission(v, q)
				if err != nil {
					return nil // the stream is open: an error answer cannot be written; the client reconnects
				}
				if !s.event("admitted", q.Version, m) {
					return nil
				}
				handed = true
			}
			if q.Status == queue.Admitted && retry == nil {
				// Written and flushed: claim it, and again until the
				// writer's QueueClaimed is folded (front.QueueClaim sends
				// at most every front.ClaimRetry).
				a.claim(sale, ticket)
				retry = time.NewTimer(front.ClaimRetry)
			}
		case status == queue.Waiting:
			b, _ := json.Marshal(position(q))
			if string(b) != lastPos {
				if wait := queuePositionEvery - time.Since(lastPosAt); !lastPosAt.IsZero() && wait > 0 {
					if hold == nil {
						hold = time.NewTimer(wait)
					}
				} else {
					if !s.raw("position", q.Version, b) {
						return nil
					}
					lastPos, lastPosAt = string(b), time.Now()
				}
			}
		default:
			done := map[string]any{"status": status}
			if reason != "" {
				done["reason"] = reason
			}
			s.event("done", q.Version, done)
			return nil
		}
		// While a position event is held back, wait for its time, not for
		// changes: a client hears at most one a second.
		wake := changed
		var held, again <-chan time.Time
		if hold != nil {
			wake, held = nil, hold.C
		}
		if retry != nil {
			again = retry.C
		}
		select {
		case <-wake:
		case <-held:
			hold = nil
		case <-again:
			retry = nil // claimed again above if still admitted
		case <-keep.C:
			if !s.comment("keep-alive") {
				return nil
			}
		case <-seen.C:
			a.Front.QueueSeen(sale, ticket)
		case <-r.Context().Done():
			return nil
		case <-a.Stopping:
			return nil
		}
	}
}

// sse writes Server-Sent Events, each with a write deadline: a client that
// stops reading does not hold its stream (and a slot) for ever.
type sse struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (s *sse) event(name string, id uint64, v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		return false
	}
	return s.raw(name, id, b)
}

func (s *sse) raw(name string, id uint64, data []byte) bool {
	_ = s.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if _, err := fmt.Fprintf(s.w, "event: %s\nid: %d\ndata: %s\n\n", name, id, data); err != nil {
		return false
	}
	return s.rc.Flush() == nil
}

func (s *sse) comment(text string) bool {
	_ = s.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if _, err := fmt.Fprintf(s.w, ": %s\n\n", text); err != nil {
		return false
	}
	return s.rc.Flush() == nil
}

// queueJSON is a sale's waiting room in the sale's JSON (nil without one).
func queueJSON(v front.SaleView) any {
	q := v.Sale.Queue
	if q == nil {
		return nil
	}
	m := map[string]any{"preQueueOpensAt": nil, "admissionRate": q.AdmissionRate,
		"claimWindow": time.Duration(q.ClaimWindow).String(), "idleTimeout": time.Duration(q.IdleTimeout).String(),
		"waiting": v.QueueWaiting, "admitted": v.QueueAdmitted}
	if !q.PreQueueOpensAt.IsZero() {
		m["preQueueOpensAt"] = q.PreQueueOpensAt.UTC().Format(time.RFC3339Nano)
	}
	return m
}

// QueueRequest is a sale's waiting room in POST /api/v1/admin/sales.
type QueueRequest struct {
	Enabled         bool     `json:"enabled"`
	PreQueueOpensAt string   `json:"preQueueOpensAt"` // RFC 3339, before opensAt; "": joins open with the sale
	AdmissionRate   *float64 `json:"admissionRate"`   // per second; default DefaultAdmissionRate
	ClaimWindow     string   `json:"claimWindow"`     // Go duration; default DefaultClaimWindow
	IdleTimeout     string   `json:"idleTimeout"`     // Go duration; default DefaultIdleTimeout
}

// A waiting room's defaults.
const (
	DefaultAdmissionRate = 10
	DefaultClaimWindow   = 2 * time.Minute
	DefaultIdleTimeout   = time.Minute
)

// MinIdleTimeout is the shortest idle timeout a sale may set: presence
// pings run once a second, the shop page polls every 5 s when the stream
// does not get through, and a shopper there must not be taken for gone.
const MinIdleTimeout = 10 * time.Second

// validateQueue turns a sale request's queue into s.Queue, naming the first
// bad field.
func (sr SaleRequest) validateQueue(s *handlers.Sale) error {
	qr := sr.Queue
	if qr == nil || !qr.Enabled {
		return nil
	}
	q := events.Queue{AdmissionRate: DefaultAdmissionRate, ClaimWindow: events.Duration(DefaultClaimWindow),
		IdleTimeout: events.Duration(DefaultIdleTimeout)}
	if qr.AdmissionRate != nil {
		if r := *qr.AdmissionRate; !(r >= events.MinAdmissionRate && r <= events.MaxAdmissionRate) {
			return invalid("queue.admissionRate", fmt.Sprintf("admissions per second, from %v to %d", events.MinAdmissionRate, events.MaxAdmissionRate))
		}
		q.AdmissionRate = *qr.AdmissionRate
	}
	window := func(field, v string, d *events.Duration) error {
		if v == "" {
			return nil
		}
		x, err := time.ParseDuration(v)
		if err != nil || x < events.MinQueueWindow || x > events.MaxQueueWindow {
			return invalid(field, fmt.Sprintf("a Go duration from %v to %v, like \"2m\"", events.MinQueueWindow, events.MaxQueueWindow))
		}
		*d = events.Duration(x)
		return nil
	}
	if err := window("queue.claimWindow", qr.ClaimWindow, &q.ClaimWindow); err != nil {
		return err
	}
	if err := window("queue.idleTimeout", qr.IdleTimeout, &q.IdleTimeout); err != nil {
		return err
	}
	if time.Duration(q.IdleTimeout) < MinIdleTimeout {
		return invalid("queue.idleTimeout", fmt.Sprintf("at least %v: presence is noted once a second and the shop page polls every 5 s", MinIdleTimeout))
	}
	if time.Duration(q.ClaimWindow) > s.TokenTTL {
		return invalid("queue.claimWindow", fmt.Sprintf("must not be longer than tokenTTL (%v): the token must outlive the time to take it", s.TokenTTL))
	}
	if qr.PreQueueOpensAt != "" {
		t, err := time.Parse(time.RFC3339Nano, qr.PreQueueOpensAt)
		if err != nil {
			return invalid("queue.preQueueOpensAt", "an RFC 3339 time, like \"2026-12-01T09:00:00Z\"")
		}
		if !events.ValidScheduleTime(t) || !t.Before(s.OpensAt) {
			return invalid("queue.preQueueOpensAt", "must be before opensAt (the pre-queue is drawn at the opening)")
		}
		q.PreQueueOpensAt = t.UTC()
	}
	if err := q.Check(s.OpensAt); err != nil {
		return invalid("queue", err.Error())
	}
	s.Queue = &q
	return nil
}

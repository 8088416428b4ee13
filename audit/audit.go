// Package audit proves, from the event stream alone, that a flashgate
// installation kept its invariants. It replays every message into a fresh
// SQLite projection and, for each sale, re-runs the decision code over the
// recorded requests with the recorded decision times: every decision must
// come out byte for byte as recorded. Then it checks the invariants on the
// replayed views and compares the replayed counters with the live heads.
//
// The fulfilment outcomes of the orders (the order events on
// fg.ord.<sale>.<order>) are followed order by order: each must name an
// order the sale's writer accepted, for its shopper, on that order's own
// subject, and take a step the fulfilment worker can take (see
// verifier.order); the replayed orders view must agree.
package audit

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/handlers"
	"github.com/flashgate/flashgate/projections"
	"github.com/flashgate/flashgate/queue"
	"github.com/flashgate/flashgate/stream"
	"github.com/nats-io/nats.go/jetstream"
)

// testHookAfterLiveHeads runs between reading the live heads and the
// stream's end (tests commit a batch there).
var testHookAfterLiveHeads func()

// testHookAfterReplay runs between the replay and the checks of the views
// (tests alter the views there).
var testHookAfterReplay func(views *sql.DB)

// maxListed caps the violations listed per kind; the count is always exact.
const maxListed = 20

// Report is the audit's result.
type Report struct {
	LastSeq    uint64
	Messages   int
	Sales      []*SaleReport
	Violations []string // installation-wide (anomalies of the replay)
}

// OK reports whether every invariant held.
func (r *Report) OK() bool {
	if len(r.Violations) > 0 {
		return false
	}
	for _, s := range r.Sales {
		if len(s.Violations) > 0 {
			return false
		}
	}
	return true
}

// SaleReport is one sale's figures and violations.
type SaleReport struct {
	Sale            handlers.Sale
	Requests        int64 // decided or pending
	TokenRequests   int64
	PurchaseReqs    int64
	OperatorReqs    int64 // opens and closes
	QueueReqs       int64 // joins, leaves, presence notes, claims
	Pending         int64 // appended after the last decided request
	Batches         int64
	Issued          int64
	Reissued        int64
	Expired         int64
	Redeemed        int64
	Denied          map[string]int64
	Refused         map[string]int64
	Reproduced      int64 // decisions re-run and equal
	Decisions       int64 // decisions recorded
	MaxHeld         int64 // max over batches of issued - expired
	LiveHead        events.Head
	LiveHeadVersion uint64
	Queue           *QueueReport // the waiting room's figures; nil without one
	Orders          OrderReport  // what became of the orders at the fulfilment provider
	Violations      []string
	violationCount  int
}

// OrderReport is what the audit proves of a sale's orders at the
// fulfilment provider, from the order events alone: the figures at the end
// of the stream, and the violations of each kind.
type OrderReport struct {
	Accepted       int64 // orders the writer accepted (PurchaseAccepted)
	Confirmed      int64 // taken by the provider
	Failed         int64 // given up, and still failed at the end
	InFlight       int64 // neither confirmed nor failed at the end: the worker's to finish (Pending included)
	Pending        int64 // of them requeued by an operator after failing
	Events         int64 // messages on the sale's order subjects
	AttemptsFailed int64 // OrderAttemptFailed events
	GivenUp        int64 // OrderFailed events (an order requeued may fail again)
	Requeued       int64 // OrderRequeued events
	// Violations of each kind (each is also listed in the sale's).
	Unmatched      int64 // events naming no order accepted for their sale and shopper, or on another order's subject
	BadTransitions int64 // a second confirmation, anything after one, a requeue of an order not failed, attempts out of sequence
	ViewsDiffer    int64 // orders whose row in the replayed view is not what their events make of them
}

// violations is the order violations counted.
func (o *OrderReport) violations() int64 { return o.Unmatched + o.BadTransitions + o.ViewsDiffer }

// orderState is an order as its events make it, followed by the audit
// apart from the projections.
type orderState struct {
	shopper                         string
	status                          string // as the orders view names it (projections.Status*)
	attempts                        int    // failed calls since accepted or last requeued
	reference, lastError, failedFor string
	updated                         time.Time // the time of its last event folded
	confirmedAt                     uint64    // stream sequence of its OrderConfirmed
}

// QueueReport is what the audit proves of a sale's waiting room: the
// pre-queue's order recomputed from the recorded seed, and every admission
// taken in that order.
type QueueReport struct {
	Joins      int64 // tickets given
	PreQueue   int64 // of them before the opening
	Shuffled   bool
	Seed       uint64
	Admitted   int64
	InOrder    int64 // admissions at the first waiting place of the recomputed order
	Idle       int64 // passed over: silent past the idle timeout at their turn
	Unclaimed  int64 // admitted, the token not taken in time
	Left       int64 // left by the shopper
	Closed     string
	lastPlace  int64
	orderRoom  *queue.Room // the order rebuilt independently from the recorded events
	orderError string
}

// orderViolate records a violation about the orders and counts it in
// kind, one of s.Orders' counters.
func (s *SaleReport) orderViolate(kind *int64, format string, args ...any) {
	*kind++
	s.violate(format, args...)
}

func (s *SaleReport) violate(format string, args ...any) {
	s.violationCount++
	if len(s.Violations) < maxListed {
		s.Violations = append(s.Violations, fmt.Sprintf(format, args...))
	} else if len(s.Violations) == maxListed {
		s.Violations = append(s.Violations, "... more violations of this sale not listed")
	}
}

// verifier re-runs one sale's decisions as the stream goes by.
type verifier struct {
	rep     *SaleReport
	live    uint64       // version of the live head read before the replay (0: none)
	atLive  *events.Head // the replayed head at that version
	state   *handlers.State
	queue   []reqMsg // request messages not yet covered by a decision batch
	version uint64
	cursor  uint64
	orders  map[string]*orderState // by order id: the orders accepted in the sale
}

type reqMsg struct {
	seq  uint64
	reqs []events.Event
}

// Run audits the installation behind js, replaying into the SQLite file at
// dbPath (which should not exist yet).
func Run(ctx context.Context, js jetstream.JetStream, dbPath string) (*Report, error) {
	st, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return nil, fmt.Errorf("audit: stream %s: %w", events.StreamName, err)
	}
	// The live heads first, then the stream's end: the replay covers every
	// batch the heads name.
	ids, err := stream.SaleIDs(ctx, st)
	if err != nil {
		return nil, err
	}
	live := map[string]events.DecisionBatch{}
	for _, id := range ids {
		db, _, ok, err := stream.LastDecision(ctx, st, id)
		if err != nil {
			return nil, err
		}
		if ok {
			live[id] = db
		}
	}
	if testHookAfterLiveHeads != nil {
		testHookAfterLiveHeads()
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	rep := &Report{LastSeq: info.State.LastSeq}
	store, err := projections.Open(dbPath)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer store.Close()

	vs := map[string]*verifier{}
	var batch []projections.Msg
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := store.Apply(ctx, batch)
		batch = batch[:0]
		return err
	}
	err = stream.Read(ctx, st, events.SubjectAll, 1, info.State.LastSeq, func(m *jetstream.RawStreamMsg) error {
		rep.Messages++
		batch = append(batch, projections.Msg{Seq: m.Sequence, Subject: m.Subject, Data: m.Data})
		if len(batch) >= 1024 {
			if err := flush(); err != nil {
				return err
			}
		}
		verify(rep, vs, live, m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("audit: replay: %w", err)
	}
	if err := flush(); err != nil {
		return nil, fmt.Errorf("audit: replay: %w", err)
	}

	if testHookAfterReplay != nil {
		testHookAfterReplay(store.DB())
	}
	if err := anomalies(ctx, store.DB(), rep); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(vs))
	for id := range vs {
		names = append(names, id)
	}
	sort.Strings(names)
	for _, id := range names {
		v := vs[id]
		if v.state == nil {
			continue
		}
		for _, q := range v.queue {
			v.rep.Pending += int64(len(q.reqs))
			v.rep.Requests += int64(len(q.reqs))
		}
		if db, ok := live[id]; ok {
			// A running installation commits on while we replay: compare
			// at the live head's own version.
			v.rep.LiveHead, v.rep.LiveHeadVersion = db.Head, db.Head.Version
			switch {
			case v.atLive == nil:
				v.rep.violate("live head is at batch %d but the replay never reached it (last %d)", db.Head.Version, v.version)
			case !v.atLive.Same(db.Head):
				v.rep.violate("replayed head %+v differs from the live head %+v", *v.atLive, db.Head)
			}
		}
		if err := checkViews(ctx, store.DB(), v.rep); err != nil {
			return nil, err
		}
		v.orderFigures()
		if err := v.checkOrderViews(ctx, store); err != nil {
			return nil, err
		}
		rep.Sales = append(rep.Sales, v.rep)
	}
	return rep, nil
}

func verify(rep *Report, vs map[string]*verifier, live map[string]events.DecisionBatch, m *jetstream.RawStreamMsg) {
	sale, err := events.SaleOfSubject(m.Subject)
	if err != nil {
		rep.Violations = append(rep.Violations, fmt.Sprintf("message %d on unknown subject %q", m.Sequence, m.Subject))
		return
	}
	v := vs[sale]
	if v == nil {
		v = &verifier{rep: &SaleReport{Sale: handlers.Sale{ID: sale}, Denied: map[string]int64{}, Refused: map[string]int64{}},
			live: live[sale].Head.Version, orders: map[string]*orderState{}}
		vs[sale] = v
	}
	switch {
	case strings.HasPrefix(m.Subject, events.SubjectSalePfx):
		ev, err := events.DecodeEvent(m.Data)
		if err != nil {
			v.rep.violate("sale event at %d does not decode: %v", m.Sequence, err)
			return
		}
		s, err := handlers.SaleFromEvent(ev)
		if err != nil || v.state != nil {
			v.rep.violate("sale event at %d: a second or invalid SaleCreated (%v)", m.Sequence, err)
			return
		}
		v.rep.Sale = s
		v.state = handlers.NewState(s)
		if s.Queue != nil {
			v.rep.Queue = &QueueReport{lastPlace: -1, orderRoom: queue.NewRoom()}
		}
	case strings.HasPrefix(m.Subject, events.SubjectReqPfx):
		reqs, err := handlers.RequestsOf(sale, m.Data)
		if err != nil {
			v.rep.violate("request message %d: %v (audit with a newer flashgate)", m.Sequence, err)
		}
		v.queue = append(v.queue, reqMsg{seq: m.Sequence, reqs: reqs})
	case strings.HasPrefix(m.Subject, events.SubjectDecPfx):
		v.batch(m)
	case strings.HasPrefix(m.Subject, events.SubjectOrdPfx):
		if v.state == nil {
			// No sale report will hold it: the sale was never created.
			rep.Violations = append(rep.Violations, fmt.Sprintf("order message %d on %s: sale %s was never created (before it)", m.Sequence, m.Subject, sale))
			return
		}
		v.order(m)
	}
}

// batch re-runs the decision code for one recorded decision batch.
func (v *verifier) batch(m *jetstream.RawStreamMsg) {
	r := v.rep
	db, err := events.DecodeDecisions(m.Data)
	if err != nil {
		r.violate("decision batch at %d does not decode: %v", m.Sequence, err)
		return
	}
	if v.state == nil {
		r.violate("decision batch at %d before the sale was created", m.Sequence)
		return
	}
	if db.Head.Version != v.version+1 {
		r.violate("decision batch at %d has version %d, expected %d (two writers, or a lost batch)", m.Sequence, db.Head.Version, v.version+1)
		return
	}
	if db.Head.Cursor < v.cursor || db.Head.Cursor >= m.Sequence {
		r.violate("batch %d: cursor %d goes back from %d or points past the batch itself", db.Head.Version, db.Head.Cursor, v.cursor)
		return
	}
	var reqs []events.Event
	n := 0
	for n < len(v.queue) && v.queue[n].seq <= db.Head.Cursor {
		reqs = append(reqs, v.queue[n].reqs...)
		n++
	}
	if n > 0 && db.FromSeq != v.queue[0].seq {
		r.violate("batch %d: starts at request message %d, but the first undecided one is %d", db.Head.Version, db.FromSeq, v.queue[0].seq)
	}
	v.queue = v.queue[n:]
	r.Batches++
	for _, q := range reqs {
		r.Requests++
		switch q.Type {
		case events.TypeTokenRequested:
			r.TokenRequests++
		case events.TypePurchaseRequested:
			r.PurchaseReqs++
		case events.TypeSaleUpdateRequested:
			r.OperatorReqs++
		case events.TypeQueueJoinRequested, events.TypeQueueLeaveRequested, events.TypeQueueSeenRequested, events.TypeQueueClaimRequested:
			r.QueueReqs++
		}
	}
	// The shuffle's seed is an input of the decision code, like the time:
	// the re-run takes the recorded one, and the order it implies is then
	// checked against every admission below.
	var seed uint64
	for _, e := range db.Events {
		if d, ok := e.Data.(*events.QueueShuffled); ok {
			seed = d.Seed
		}
	}
	v.state.SetSeed(func() uint64 { return seed })
	got := v.state.Decide(db.DecidedAt, reqs)
	if r.Queue != nil {
		v.checkQueue(&db)
	}
	r.Decisions += int64(len(db.Events))
	if len(got) != len(db.Events) {
		r.violate("batch %d: re-run gives %d decisions, %d recorded", db.Head.Version, len(got), len(db.Events))
	}
	for i := 0; i < min(len(got), len(db.Events)); i++ {
		want, _ := events.EncodeEvent(db.Events[i])
		have, _ := events.EncodeEvent(got[i])
		if !bytes.Equal(want, have) {
			r.violate("batch %d decision %d: recorded %s, re-run gives %s", db.Head.Version, i, want, have)
			continue
		}
		r.Reproduced++
	}
	for _, e := range db.Events {
		switch d := e.Data.(type) {
		case *events.TokenIssued:
			if d.AlreadyIssued {
				r.Reissued++
			} else {
				r.Issued++
			}
		case *events.TokenExpired:
			r.Expired++
		case *events.PurchaseAccepted:
			r.Redeemed++
			if v.orders[d.OrderID] == nil {
				v.orders[d.OrderID] = &orderState{shopper: e.Shopper, status: projections.StatusAccepted}
				r.Orders.Accepted++
			}
		case *events.TokenDenied:
			r.Denied[d.Reason]++
		case *events.PurchaseRefused:
			r.Refused[d.Reason]++
		}
	}
	h := v.state.Head
	h.Version, h.Cursor = db.Head.Version, db.Head.Cursor
	if !h.Same(db.Head) {
		r.violate("batch %d: head %+v, but its decisions give %+v", db.Head.Version, db.Head, h)
	}
	// Counter invariants, at every batch.
	if r.Redeemed > r.Sale.Stock {
		r.violate("batch %d: oversold: %d units sold of %d", db.Head.Version, r.Redeemed, r.Sale.Stock)
	}
	if held := r.Issued - r.Expired; held > r.Sale.Quota {
		r.violate("batch %d: quota exceeded: issued - expired = %d > quota %d", db.Head.Version, held, r.Sale.Quota)
	} else if held > r.MaxHeld {
		r.MaxHeld = held
	}
	v.state.Head = db.Head
	v.version, v.cursor = db.Head.Version, db.Head.Cursor
	if v.version == v.live {
		v.atLive = &h // the head the re-run computed, not the recorded one
	}
}

func anomalies(ctx context.Context, db *sql.DB, rep *Report) error {
	rows, err := db.QueryContext(ctx, `SELECT seq, sale, what FROM anomalies ORDER BY seq`)
	if err != nil {
		return fmt.Errorf("audit: anomalies: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq uint64
		var sale, what string
		if err := rows.Scan(&seq, &sale, &what); err != nil {
			return err
		}
		rep.Violations = append(rep.Violations, fmt.Sprintf("replay anomaly at %d (sale %s): %s", seq, sale, what))
	}
	return rows.Err()
}

// checkViews checks the invariants on the replayed SQLite views, apart from
// the re-run: the views are built by other code (the projections), so they
// are a second, independent witness.
func checkViews(ctx context.Context, db *sql.DB, r *SaleReport) error {
	id := r.Sale.ID
	one := func(q string, args ...any) (int64, error) {
		var n sql.NullInt64
		err := db.QueryRowContext(ctx, q, args...).Scan(&n)
		return n.Int64, err
	}
	checks := []struct {
		name string
		q    string
		ok   func(n int64) bool
		msg  string
	}{
		{"oversell", `SELECT COUNT(*) FROM orders WHERE sale = ?`, func(n int64) bool { return n <= r.Sale.Stock },
			"orders %d exceed stock"},
		{"single use", `SELECT COUNT(*) FROM (SELECT token_id FROM orders WHERE sale = ? GROUP BY token_id HAVING COUNT(*) > 1)`,
			func(n int64) bool { return n == 0 }, "%d tokens bought more than one order"},
		{"own token", `SELECT COUNT(*) FROM orders o JOIN tokens t ON t.id = o.token_id WHERE o.sale = ? AND (t.shopper <> o.shopper OR t.sale <> o.sale)`,
			func(n int64) bool { return n == 0 }, "%d orders bought with another shopper's or sale's token"},
		{"orders have tokens", `SELECT COUNT(*) FROM orders o LEFT JOIN tokens t ON t.id = o.token_id WHERE o.sale = ? AND t.id IS NULL`,
			func(n int64) bool { return n == 0 }, "%d orders without an issued token"},
		{"before expiry", `SELECT COUNT(*) FROM orders o JOIN tokens t ON t.id = o.token_id WHERE o.sale = ? AND o.created_at >= t.expires_at`,
			func(n int64) bool { return n == 0 }, "%d orders made with an expired token"},
		{"per-user limit", `SELECT COUNT(*) FROM (SELECT shopper FROM orders WHERE sale = ? GROUP BY shopper HAVING SUM(units) > ?)`,
			func(n int64) bool { return n == 0 }, "%d shoppers bought more than the per-user limit"},
		// An admission answers a join a second time (its token): not a repeat.
		{"decided once", `SELECT COUNT(*) FROM (SELECT d.request FROM decisions d LEFT JOIN requests q ON q.id = d.request
			WHERE d.sale = ? AND d.request IS NOT NULL
			AND NOT (q.type = 'QueueJoinRequested' AND d.type IN ('TokenIssued', 'QueueAdmitted'))
			GROUP BY d.request HAVING COUNT(*) > 1)`,
			func(n int64) bool { return n == 0 }, "%d requests decided more than once"},
		// A presence note for tickets no longer waiting, and a claim that
		// changes nothing, are answered by nothing.
		{"decided at all", `SELECT COUNT(*) FROM requests q LEFT JOIN decisions d ON d.request = q.id WHERE q.sale = ? AND d.id IS NULL AND q.seq <= ?
			AND q.type NOT IN ('QueueSeenRequested', 'QueueClaimRequested')`,
			func(n int64) bool { return n == 0 }, "%d requests before the last cursor were never decided"},
		{"decisions answer requests", `SELECT COUNT(*) FROM decisions d LEFT JOIN requests q ON q.id = d.request WHERE d.sale = ? AND d.request IS NOT NULL AND q.id IS NULL`,
			func(n int64) bool { return n == 0 }, "%d decisions answer no recorded request"},
	}
	for _, c := range checks {
		args := []any{id}
		switch c.name {
		case "per-user limit":
			args = append(args, r.Sale.PerUserLimit)
		case "decided at all":
			args = append(args, r.LiveHead.Cursor)
		}
		n, err := one(c.q, args...)
		if err != nil {
			return fmt.Errorf("audit: check %s of %s: %w", c.name, id, err)
		}
		if !c.ok(n) {
			r.violate("%s: "+c.msg, c.name, n)
		}
	}
	// The views' counters must equal the re-run's.
	var issued, expired, redeemed int64
	if err := db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM tokens WHERE sale = ?),
		(SELECT COUNT(*) FROM tokens WHERE sale = ? AND status = 'expired'),
		(SELECT COUNT(*) FROM tokens WHERE sale = ? AND status = 'redeemed')`, id, id, id).Scan(&issued, &expired, &redeemed); err != nil {
		return fmt.Errorf("audit: token ledger of %s: %w", id, err)
	}
	if issued != r.Issued || expired != r.Expired || redeemed != r.Redeemed {
		r.violate("token ledger (issued %d, expired %d, redeemed %d) differs from the decisions (issued %d, expired %d, redeemed %d)",
			issued, expired, redeemed, r.Issued, r.Expired, r.Redeemed)
	}
	return nil
}

// Write prints the report for people.
func (r *Report) Write(w io.Writer) {
	fmt.Fprintf(w, "flashgate audit: %d messages replayed (stream sequence 1..%d), %d sales\n", r.Messages, r.LastSeq, len(r.Sales))
	for _, v := range r.Violations {
		fmt.Fprintf(w, "  VIOLATION %s\n", v)
	}
	for _, s := range r.Sales {
		sale := s.Sale
		fmt.Fprintf(w, "\nsale %s: stock %d, quota %d (buffer %.2f), per-user limit %d, token TTL %s\n",
			sale.ID, sale.Stock, sale.Quota, sale.QuotaBuffer, sale.PerUserLimit, sale.TokenTTL)
		fmt.Fprintf(w, "  requests    %d (token %d, purchase %d, queue %d, operator %d), %d pending after the last batch\n",
			s.Requests, s.TokenRequests, s.PurchaseReqs, s.QueueReqs, s.OperatorReqs, s.Pending)
		fmt.Fprintf(w, "  batches     %d, head version %d, cursor %d\n", s.Batches, s.LiveHeadVersion, s.LiveHead.Cursor)
		fmt.Fprintf(w, "  tokens      issued %d, repeated answers %d, expired %d, redeemed %d, outstanding %d\n",
			s.Issued, s.Reissued, s.Expired, s.Redeemed, s.Issued-s.Expired-s.Redeemed)
		fmt.Fprintf(w, "  denied      %s\n", counts(s.Denied))
		fmt.Fprintf(w, "  refused     %s\n", counts(s.Refused))
		o := &s.Orders
		fmt.Fprintf(w, "  orders      %d accepted: %d confirmed, %d failed, %d in flight (%d requeued); %d order events: %d attempts failed, %d given up, %d requeued\n",
			o.Accepted, o.Confirmed, o.Failed, o.InFlight, o.Pending, o.Events, o.AttemptsFailed, o.GivenUp, o.Requeued)
		check := func(ok bool, format string, args ...any) {
			mark := "ok  "
			if !ok {
				mark = "FAIL"
			}
			fmt.Fprintf(w, "  %s %s\n", mark, fmt.Sprintf(format, args...))
		}
		fmt.Fprintf(w, "  invariants:\n")
		check(s.Redeemed <= sale.Stock, "no oversell: %d sold <= stock %d", s.Redeemed, sale.Stock)
		check(s.MaxHeld <= sale.Quota, "quota: at most %d held (issued - expired) <= quota %d", s.MaxHeld, sale.Quota)
		others := int64(s.violationCount) - o.violations() // the orders' have lines of their own
		check(s.Reproduced == s.Decisions && others == 0, "re-run: %d of %d recorded decisions reproduced exactly", s.Reproduced, s.Decisions)
		check(others == 0, "views: single use, own token, per-user limit, each request decided once, counters = live head")
		check(o.Unmatched == 0, "orders: each of the %d order events names an order accepted for its sale and shopper, on that order's subject", o.Events)
		check(o.BadTransitions == 0, "fulfilment: each order confirmed at most once and nothing after it; requeued only after failing; attempts counted from 1")
		check(o.ViewsDiffer == 0, "orders view: the status, attempts, reference and errors of each of the %d orders = its events", o.Accepted)
		if q := s.Queue; q != nil {
			fmt.Fprintf(w, "  queue       %d joined (%d before opening), %d admitted, %d idle, %d unclaimed, %d left", q.Joins, q.PreQueue, q.Admitted, q.Idle, q.Unclaimed, q.Left)
			if q.Closed != "" {
				fmt.Fprintf(w, ", closed: %s", q.Closed)
			}
			fmt.Fprintln(w)
			if q.Shuffled {
				check(q.orderError == "", "fair order: the %d pre-queue joins were placed by the order recomputed from the recorded seed %#x", q.PreQueue, q.Seed)
			}
			check(q.InOrder == q.Admitted && q.orderError == "", "admissions in order: %d of %d admissions took the first waiting place", q.InOrder, q.Admitted)
		}
		for _, v := range s.Violations {
			fmt.Fprintf(w, "  VIOLATION %s\n", v)
		}
	}
	if r.OK() {
		fmt.Fprintf(w, "\nresult: PASS — every invariant held\n")
	} else {
		fmt.Fprintf(w, "\nresult: FAIL — see the violations above\n")
	}
}

// checkQueue folds a recorded batch into an order rebuilt from the
// recorded events alone (not the re-run's) and checks that each admission
// took the first waiting place of that order: the writer never admitted out
// of turn, whatever the re-run says.
func (v *verifier) checkQueue(db *events.DecisionBatch) {
	q, r := v.rep.Queue, v.rep
	for _, e := range db.Events {
		if d, ok := e.Data.(*events.QueueAdmitted); ok {
			next, ok := q.orderRoom.Next()
			switch {
			case !ok || next.ID != d.Ticket:
				want := "nobody"
				if ok {
					want = fmt.Sprintf("ticket %s at place %d", next.ID, next.Place)
				}
				r.violate("batch %d: admission of ticket %s at place %d out of order: the recomputed order has %s next", db.Head.Version, d.Ticket, d.Place, want)
			default:
				q.InOrder++
			}
		}
		if err := q.orderRoom.Apply(e, db.DecidedAt); err != nil && q.orderError == "" {
			q.orderError = err.Error()
			r.violate("batch %d: the recorded queue events do not fit together: %v", db.Head.Version, err)
		}
		switch d := e.Data.(type) {
		case *events.QueueJoined:
			if !d.Already {
				q.Joins++
				if d.Place < 0 {
					q.PreQueue++
				}
			}
		case *events.QueueShuffled:
			q.Shuffled, q.Seed = true, d.Seed
		case *events.QueueAdmitted:
			q.Admitted++
		case *events.QueueLeft:
			switch d.Reason {
			case events.LeftIdle:
				q.Idle++
			case events.LeftUnclaimed:
				q.Unclaimed++
			case events.LeftByShopper:
				q.Left++
			}
		case *events.QueueClosed:
			q.Closed = d.Reason
		}
	}
}

func counts(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

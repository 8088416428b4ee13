package projections

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/flashgate/flashgate/events"
)

// Msg is one stream message.
type Msg struct {
	Seq     uint64
	Subject string
	Data    []byte
}

// The statuses of the tokens and orders views.
const (
	StatusOutstanding = "outstanding" // token issued, neither expired nor redeemed
	StatusExpired     = "expired"     // token reclaimed unused
	StatusRedeemed    = "redeemed"    // token used for an order
	StatusAccepted    = "accepted"    // order accepted by the sale's writer, no outcome yet
	StatusRetrying    = "retrying"    // a call to the provider failed; the worker retries it
	StatusConfirmed   = "confirmed"   // the provider took the order: final
	StatusFailed      = "failed"      // given up: the order is in the dead-letter stream
	StatusPending     = "pending"     // requeued by an operator after it failed
)

// stmts are the statements Apply runs, prepared once on the writer's
// connection and bound to each transaction with Tx.StmtContext.
type stmts struct {
	lastSeq, setLastSeq          *sql.Stmt
	saleExists, insSale, updSale *sql.Stmt
	maxVersion, insBatch         *sql.Stmt
	requestOf                    *sql.Stmt
	tokenOf, closeToken          *sql.Stmt
	orderOf, updOrder            *sql.Stmt
	insAnomaly                   *sql.Stmt
	ins                          inserts // bound on first use
	all                          []*sql.Stmt
}

func (st *stmts) prepare(db *sql.DB) error {
	for _, p := range []struct {
		s   **sql.Stmt
		sql string
	}{
		{&st.lastSeq, `SELECT value FROM meta WHERE key = 'last_seq'`},
		{&st.setLastSeq, `INSERT INTO meta (key, value) VALUES ('last_seq', ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value`},
		{&st.saleExists, `SELECT COUNT(*) FROM sales WHERE id = ?`},
		{&st.insSale, `INSERT INTO sales (id, seq, stock, quota, quota_buffer, per_user_limit, token_ttl_ms, opens_at, closes_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`},
		{&st.updSale, `UPDATE sales SET opens_at = ?, closes_at = ? WHERE id = ?`},
		{&st.maxVersion, `SELECT COALESCE(MAX(version), 0) FROM batches WHERE sale = ?`},
		{&st.insBatch, `INSERT INTO batches (sale, version, seq, writer, decided_at, from_seq, cursor, stock, quota, issued, expired, redeemed)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`},
		{&st.requestOf, `SELECT r.sale, r.type, r.shopper,
			COALESCE((SELECT d.id FROM decisions d WHERE d.request = r.id LIMIT 1), '')
			FROM requests r WHERE r.id = ?`},
		{&st.tokenOf, `SELECT sale, shopper, status FROM tokens WHERE id = ?`},
		{&st.closeToken, `UPDATE tokens SET status = ?, order_id = ?, closed_at = ? WHERE id = ?`},
		{&st.orderOf, `SELECT sale, shopper, status, attempts, reference, last_error, failed_reason FROM orders WHERE id = ?`},
		{&st.updOrder, `UPDATE orders SET status = ?, reference = ?, attempts = ?, last_error = ?, failed_reason = ?, updated_at = ?
			WHERE id = ?`},
		{&st.insAnomaly, `INSERT INTO anomalies (seq, sale, what) VALUES (?, ?, ?)`},
	} {
		s, err := db.Prepare(p.sql)
		if err != nil {
			st.close()
			return fmt.Errorf("prepare %q: %w", p.sql, err)
		}
		*p.s = s
		st.all = append(st.all, s)
	}
	if err := st.ins.prepare(db, &st.all); err != nil {
		st.close()
		return err
	}
	return nil
}

func (st *stmts) close() {
	for _, s := range st.all {
		s.Close()
	}
	st.all = nil
}

// bind returns the statements bound to tx; the multi-row inserts are
// bound on first use.
func (st *stmts) bind(ctx context.Context, tx *sql.Tx) stmts {
	return stmts{
		lastSeq:    tx.StmtContext(ctx, st.lastSeq),
		setLastSeq: tx.StmtContext(ctx, st.setLastSeq),
		saleExists: tx.StmtContext(ctx, st.saleExists),
		insSale:    tx.StmtContext(ctx, st.insSale),
		updSale:    tx.StmtContext(ctx, st.updSale),
		maxVersion: tx.StmtContext(ctx, st.maxVersion),
		insBatch:   tx.StmtContext(ctx, st.insBatch),
		requestOf:  tx.StmtContext(ctx, st.requestOf),
		tokenOf:    tx.StmtContext(ctx, st.tokenOf),
		closeToken: tx.StmtContext(ctx, st.closeToken),
		orderOf:    tx.StmtContext(ctx, st.orderOf),
		updOrder:   tx.StmtContext(ctx, st.updOrder),
		insAnomaly: tx.StmtContext(ctx, st.insAnomaly),
	}
}

// Apply folds msgs, in stream order, into the views in one transaction, and
// stores the sequence of the last one with them. Messages at or below the
// last sequence applied are skipped, so applying a slice twice changes
// nothing. Data that is undecodable or wrong is recorded in the anomalies
// table and never stops the fold; only a database error (or ctx ending) is
// returned, and then nothing of msgs is applied.
func (s *Store) Apply(ctx context.Context, msgs []Msg) error {
	if len(msgs) == 0 {
		return nil
	}
	if err := s.apply(ctx, msgs); err != nil {
		return fmt.Errorf("apply stream %d..%d: %w", msgs[0].Seq, msgs[len(msgs)-1].Seq, err)
	}
	return nil
}

// apply runs the transaction on the fast path, which buffers the rows and
// assumes each is new, and if one was not, runs it again row by row.
func (s *Store) apply(ctx context.Context, msgs []Msg) error {
	err := s.applyTx(ctx, msgs, false)
	if errors.Is(err, errRecheck) {
		err = s.applyTx(ctx, msgs, true)
	}
	return err
}

func (s *Store) applyTx(ctx context.Context, msgs []Msg, exact bool) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	a := applier{ctx: ctx, tx: tx, exact: exact, st: s.stmts.bind(ctx, tx), ins: &s.stmts.ins,
		reqs: make(map[string]*reqInfo), toks: make(map[string]*tokInfo), ords: make(map[string]*ordInfo),
		sales: make(map[string]bool), versions: make(map[string]uint64)}
	var v sql.NullString
	if err := a.st.lastSeq.QueryRowContext(ctx).Scan(&v); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	last := uint64(0)
	if v.Valid {
		if last, err = strconv.ParseUint(v.String, 10, 64); err != nil {
			return fmt.Errorf("stored last_seq %q: %w", v.String, err)
		}
	}
	start := last
	for _, m := range msgs {
		if m.Seq <= last {
			continue
		}
		a.seq = m.Seq
		if err := a.message(m); err != nil {
			return err
		}
		last = m.Seq
	}
	if last == start {
		return nil
	}
	if err := a.flushAll(); err != nil {
		return err
	}
	if _, err := a.st.setLastSeq.ExecContext(ctx, strconv.FormatUint(last, 10)); err != nil {
		return err
	}
	return tx.Commit()
}

// applier folds the messages of one transaction. Its methods return only
// database errors (and errRecheck); everything wrong with the data goes to
// anomalies.
type applier struct {
	ctx   context.Context
	tx    *sql.Tx
	st    stmts
	exact bool // row by row, each insert checked at once
	seq   uint64
	// bufs are the rows of each buffered table not yet inserted, at most
	// bufRows; ins are the statements inserting them, bound lazily to tx
	// in bound.
	bufs  [numTables]struct{ vals []any }
	ins   *inserts
	bound inserts
	body  []byte // scratch for an audit trail body
	// The caches below hold what this transaction read or wrote, so that
	// a request decided soon after it arrived, a token redeemed soon after
	// it was issued, an order's outcome soon after it was accepted, the sale
	// and its batch version cost no query. They hold no more than the ids
	// of one Apply.
	reqs     map[string]*reqInfo
	toks     map[string]*tokInfo
	ords     map[string]*ordInfo
	sales    map[string]bool   // whether the sale was created
	versions map[string]uint64 // the highest batch version of a sale
}

// reqInfo is what deciding a request needs to know about it.
type reqInfo struct {
	sale, typ, shopper string
	decidedBy          string // the first decision answering it, "" if none
}

func (a *applier) anomaly(sale, format string, args ...any) error {
	_, err := a.st.insAnomaly.ExecContext(a.ctx, int64(a.seq), sale, fmt.Sprintf(format, args...))
	return err
}

// exec runs an insert or update and reports whether it changed a row.
func (a *applier) exec(s *sql.Stmt, args ...any) (bool, error) {
	res, err := s.ExecContext(a.ctx, args...)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

func (a *applier) message(m Msg) error {
	switch {
	case strings.HasPrefix(m.Subject, events.SubjectSalePfx):
		return a.sale(m, strings.TrimPrefix(m.Subject, events.SubjectSalePfx))
	case strings.HasPrefix(m.Subject, events.SubjectReqPfx):
		return a.requests(m, strings.TrimPrefix(m.Subject, events.SubjectReqPfx))
	case strings.HasPrefix(m.Subject, events.SubjectDecPfx):
		return a.decisions(m, strings.TrimPrefix(m.Subject, events.SubjectDecPfx))
	case strings.HasPrefix(m.Subject, events.SubjectOrdPfx):
		sale, order, _ := strings.Cut(strings.TrimPrefix(m.Subject, events.SubjectOrdPfx), ".")
		return a.orderEvent(m, sale, order)
	}
	return a.anomaly("", "message on unknown subject %q", m.Subject)
}

// trail writes the audit trail row of event idx of the message, whose
// time is tm as stored.
func (a *applier) trail(idx int, e events.Event, tm string) error {
	body, ok := appendEvent(a.body[:0], e)
	a.body = body[:0]
	if !ok {
		var err error
		if body, err = events.EncodeEvent(e); err != nil { // a decoded event always encodes; keep going if not
			return a.anomaly(e.Sale, "event %s: re-encode for the audit trail: %v", e.ID, err)
		}
	}
	ok, err := a.insert(auditTable, int64(a.seq), int64(idx), e.ID, string(e.Type), e.Sale, tm, string(body))
	if err == nil && !ok {
		err = fmt.Errorf("audit trail row %d/%d is there already", a.seq, idx)
	}
	return err
}

func (a *applier) saleKnown(sale string) (bool, error) {
	if known, ok := a.sales[sale]; ok {
		return known, nil
	}
	var n int
	if err := a.st.saleExists.QueryRowContext(a.ctx, sale).Scan(&n); err != nil {
		return false, err
	}
	a.sales[sale] = n > 0
	return n > 0, nil
}

func (a *applier) sale(m Msg, subjSale string) error {
	e, err := events.DecodeEvent(m.Data)
	if err != nil {
		return a.anomaly(subjSale, "undecodable sale message on %s: %v", m.Subject, err)
	}
	if err := a.trail(0, e, fmtTime(e.Time)); err != nil {
		return err
	}
	if e.Sale != subjSale {
		if err := a.anomaly(subjSale, "event %s on %s names sale %q", e.ID, m.Subject, e.Sale); err != nil {
			return err
		}
	}
	sc, ok := e.Data.(*events.SaleCreated)
	if !ok {
		return a.anomaly(e.Sale, "event %s on %s is a %s, not a SaleCreated", e.ID, m.Subject, e.Type)
	}
	ok, err = a.exec(a.st.insSale, e.Sale, int64(a.seq), sc.Stock, sc.Quota, sc.QuotaBuffer, sc.PerUserLimit,
		time.Duration(sc.TokenTTL).Milliseconds(), fmtTime(sc.OpensAt), fmtTime(sc.ClosesAt))
	if err != nil {
		return err
	}
	if ok {
		a.sales[e.Sale] = true
		return nil
	}
	return a.anomaly(e.Sale, "sale %s created again by event %s", e.Sale, e.ID)
}

func (a *applier) requests(m Msg, subjSale string) error {
	rb, err := events.DecodeRequests(m.Data)
	if err != nil {
		return a.anomaly(subjSale, "undecodable request batch on %s: %v", m.Subject, err)
	}
	if known, err := a.saleKnown(subjSale); err != nil {
		return err
	} else if !known {
		if err := a.anomaly(subjSale, "request batch on %s for a sale never created", m.Subject); err != nil {
			return err
		}
	}
	for i, e := range rb.Requests {
		received := fmtTime(e.Time)
		if err := a.trail(i, e, received); err != nil {
			return err
		}
		if e.Sale != subjSale {
			if err := a.anomaly(subjSale, "request %s on %s names sale %q", e.ID, m.Subject, e.Sale); err != nil {
				return err
			}
		}
		var token any
		if p, ok := e.Data.(*events.PurchaseRequested); ok {
			token = p.TokenID
		}
		ok, err := a.insert(requestsTable, e.ID, e.Sale, int64(a.seq), int64(i), string(e.Type), e.Shopper,
			e.ClientRequestID, token, received)
		if err != nil {
			return err
		}
		if !ok {
			if err := a.anomaly(e.Sale, "request id %s appended again", e.ID); err != nil {
				return err
			}
			continue
		}
		a.reqs[e.ID] = &reqInfo{sale: e.Sale, typ: string(e.Type), shopper: e.Shopper}
	}
	return nil
}

func (a *applier) decisions(m Msg, subjSale string) error {
	db, err := events.DecodeDecisions(m.Data)
	if err != nil {
		return a.anomaly(subjSale, "undecodable decision batch on %s: %v", m.Subject, err)
	}
	sale, v := db.Sale, db.Head.Version
	if sale != subjSale {
		if err := a.anomaly(subjSale, "decision batch on %s names sale %q", m.Subject, sale); err != nil {
			return err
		}
	}
	if known, err := a.saleKnown(sale); err != nil {
		return err
	} else if !known {
		if err := a.anomaly(sale, "decision batch %d for a sale never created", v); err != nil {
			return err
		}
	}
	prev, cached := a.versions[sale]
	if !cached {
		if err := a.st.maxVersion.QueryRowContext(a.ctx, sale).Scan(&prev); err != nil {
			return err
		}
		a.versions[sale] = prev
	}
	h, at := db.Head, fmtTime(db.DecidedAt)
	ok, err := a.exec(a.st.insBatch, sale, int64(v), int64(a.seq), db.Writer, at, int64(db.FromSeq),
		int64(h.Cursor), h.Stock, h.Quota, h.Issued, h.Expired, h.Redeemed)
	if ok {
		a.versions[sale] = max(prev, v)
	}
	switch {
	case err != nil:
		return err
	case !ok:
		err = a.anomaly(sale, "duplicate batch version %d (writer %q)", v, db.Writer)
	case v != prev+1:
		err = a.anomaly(sale, "batch version %d follows version %d", v, prev)
	}
	if err != nil {
		return err
	}
	for i, e := range db.Events {
		tm := at
		if !e.Time.Equal(db.DecidedAt) {
			tm = fmtTime(e.Time)
		}
		if err := a.trail(i, e, tm); err != nil {
			return err
		}
		if err := a.decision(&db, at, i, e); err != nil {
			return err
		}
	}
	return nil
}

// decisionRow is the decisions row of one event, filled as the event is
// checked.
type decisionRow struct {
	request, shopper, token, order, reason any
	already                                bool
	expires                                time.Time
}

// decision folds event idx of batch db, decided at at (as stored).
func (a *applier) decision(db *events.DecisionBatch, at string, idx int, e events.Event) error {
	sale := db.Sale
	if e.Sale != sale {
		if err := a.anomaly(sale, "decision %s in a batch of sale %s names sale %q", e.ID, sale, e.Sale); err != nil {
			return err
		}
	}
	if !e.Time.Equal(db.DecidedAt) {
		if err := a.anomaly(sale, "decision %s has time %s, its batch %s", e.ID, fmtTime(e.Time), fmtTime(db.DecidedAt)); err != nil {
			return err
		}
	}
	row := decisionRow{}
	if e.Shopper != "" {
		row.shopper = e.Shopper
	}
	fold := true // whether the decision changes the ledger
	var req *reqInfo
	if e.Type == events.TypeTokenExpired {
		// Answers no request; the shopper is the token holder's.
		x := e.Data.(*events.TokenExpired)
		t, found, err := a.token(x.TokenID)
		if err != nil {
			return err
		}
		if found && row.shopper == nil {
			row.shopper = t.shopper
		}
		row.token, row.expires = nullStr(x.TokenID), x.ExpiresAt
	} else if e.Request == "" && e.Type.AnswersNoRequest() {
		// The writer's own queue decision (the shuffle, an idle or
		// unclaimed turn, the queue's end): it answers no request.
	} else {
		row.request = e.Request
		var err error
		req, err = a.request(e.Request)
		switch {
		case err != nil:
			return err
		case req == nil:
			if err := a.anomaly(sale, "%s %s answers unknown request %s", e.Type, e.ID, e.Request); err != nil {
				return err
			}
		default:
			if err := a.checkAnswer(sale, e, req.sale, req.typ, req.shopper); err != nil {
				return err
			}
			// An admission answers the join a second time: the token.
			admission := req.typ == string(events.TypeQueueJoinRequested) &&
				(e.Type == events.TypeTokenIssued || e.Type == events.TypeQueueAdmitted)
			if req.decidedBy != "" && !admission {
				fold = false
			}
			if row.shopper == nil {
				row.shopper = req.shopper
			}
		}
		switch x := e.Data.(type) {
		case *events.TokenIssued:
			row.token, row.expires, row.already = nullStr(x.TokenID), x.ExpiresAt, x.AlreadyIssued
		case *events.TokenDenied:
			row.reason = nullStr(x.Reason)
		case *events.PurchaseAccepted:
			row.token, row.order = nullStr(x.TokenID), nullStr(x.OrderID)
		case *events.PurchaseRefused:
			row.token, row.order, row.reason = nullStr(x.TokenID), nullStr(x.OrderID), nullStr(x.Reason)
		}
	}
	ok, err := a.insert(decisionsTable, e.ID, e.Sale, int64(db.Head.Version), int64(idx), int64(a.seq), string(e.Type),
		row.request, row.shopper, row.token, row.order, row.reason, row.already, nullTime(row.expires), at)
	if err != nil {
		return err
	}
	if !ok {
		return a.anomaly(sale, "decision id %s recorded again", e.ID)
	}
	if !fold {
		return a.anomaly(sale, "request %s decided again by %s %s (first by %s)", e.Request, e.Type, e.ID, req.decidedBy)
	}
	if req != nil {
		req.decidedBy = e.ID
	}
	shopper, _ := row.shopper.(string)
	switch x := e.Data.(type) {
	case *events.TokenIssued:
		return a.issue(sale, shopper, e, x)
	case *events.TokenExpired:
		return a.expire(sale, e, x, at)
	case *events.PurchaseAccepted:
		return a.redeem(sale, shopper, e, x, at)
	case *events.SaleUpdated:
		_, err := a.st.updSale.ExecContext(a.ctx, fmtTime(x.OpensAt), fmtTime(x.ClosesAt), sale)
		return err
	}
	return nil
}

// checkAnswer records what is wrong with decision e answering a request of
// type typ by shopper in sale.
func (a *applier) checkAnswer(sale string, e events.Event, reqSale, typ, shopper string) error {
	want := events.TypeTokenRequested
	switch e.Type {
	case events.TypePurchaseAccepted, events.TypePurchaseRefused:
		want = events.TypePurchaseRequested
	case events.TypeSaleUpdated:
		want = events.TypeSaleUpdateRequested
	case events.TypeQueueJoined, events.TypeQueueJoinDenied, events.TypeQueueAdmitted:
		want = events.TypeQueueJoinRequested
	case events.TypeQueueLeft:
		want = events.TypeQueueLeaveRequested
	case events.TypeQueueSeen:
		want = events.TypeQueueSeenRequested
	case events.TypeQueueClaimed:
		want = events.TypeQueueClaimRequested
	case events.TypeTokenIssued:
		if typ == string(events.TypeQueueJoinRequested) {
			want = events.TypeQueueJoinRequested // an admission hands over the token
		}
	}
	if typ != string(want) {
		if err := a.anomaly(sale, "%s %s answers request %s, a %s", e.Type, e.ID, e.Request, typ); err != nil {
			return err
		}
	}
	if reqSale != e.Sale {
		if err := a.anomaly(sale, "%s %s answers request %s of sale %s", e.Type, e.ID, e.Request, reqSale); err != nil {
			return err
		}
	}
	if e.Shopper != "" && e.Shopper != shopper {
		if err := a.anomaly(sale, "%s %s names shopper %q, request %s is from %q", e.Type, e.ID, e.Shopper, e.Request, shopper); err != nil {
			return err
		}
	}
	return nil
}

// request looks up a request, nil if the views do not hold it.
func (a *applier) request(id string) (*reqInfo, error) {
	if r, ok := a.reqs[id]; ok {
		return r, nil
	}
	r := new(reqInfo)
	err := a.st.requestOf.QueryRowContext(a.ctx, id).Scan(&r.sale, &r.typ, &r.shopper, &r.decidedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	a.reqs[id] = r
	return r, nil
}

// tokInfo is what checking a change to a token needs to know about it.
type tokInfo struct {
	sale, shopper, status string
	found                 bool // whether the token exists
	row                   int  // its row in the tokens buffer, -1 if written
}

// token looks up a token, found false if the views do not hold it.
func (a *applier) token(id string) (t *tokInfo, found bool, err error) {
	if t, ok := a.toks[id]; ok {
		return t, t.found, nil
	}
	t = &tokInfo{row: -1}
	err = a.st.tokenOf.QueryRowContext(a.ctx, id).Scan(&t.sale, &t.shopper, &t.status)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		t = &tokInfo{row: -1}
	case err != nil:
		return nil, false, err
	default:
		t.found = true
	}
	a.toks[id] = t
	return t, t.found, nil
}

// closeToken marks token t, which is outstanding, status (expired or
// redeemed, with order).
func (a *applier) closeToken(id string, t *tokInfo, status string, order any, at string) error {
	t.status = status
	if t.row >= 0 { // not written yet: write it closed
		v := a.bufs[tokensTable].vals[t.row*tables[tokensTable].cols:]
		v[6], v[7], v[8] = status, order, at
		return nil
	}
	_, err := a.st.closeToken.ExecContext(a.ctx, status, order, at, id)
	return err
}

func (a *applier) issue(sale, shopper string, e events.Event, x *events.TokenIssued) error {
	if x.AlreadyIssued {
		t, found, err := a.token(x.TokenID)
		switch {
		case err != nil:
			return err
		case !found:
			return a.anomaly(sale, "TokenIssued %s repeats unknown token %q", e.ID, x.TokenID)
		case t.status != StatusOutstanding:
			return a.anomaly(sale, "TokenIssued %s repeats token %s, which is %s", e.ID, x.TokenID, t.status)
		case t.sale != e.Sale || t.shopper != shopper:
			return a.anomaly(sale, "TokenIssued %s repeats token %s of %s/%s to %s/%s", e.ID, x.TokenID, t.sale, t.shopper, e.Sale, shopper)
		}
		return nil
	}
	if x.TokenID == "" {
		return a.anomaly(sale, "TokenIssued %s carries no token id", e.ID)
	}
	if x.TokenID != e.Request {
		if err := a.anomaly(sale, "TokenIssued %s issues token %s for request %s", e.ID, x.TokenID, e.Request); err != nil {
			return err
		}
	}
	// The cache entry goes first: a full buffer is written during insert,
	// and marks its tokens written.
	prev, cached := a.toks[x.TokenID]
	t := &tokInfo{sale: e.Sale, shopper: shopper, status: StatusOutstanding, found: true, row: -1}
	if !a.exact {
		t.row = len(a.bufs[tokensTable].vals) / tables[tokensTable].cols
	}
	a.toks[x.TokenID] = t
	ok, err := a.insert(tokensTable, x.TokenID, e.Sale, shopper, e.Request, fmtTime(x.IssuedAt), fmtTime(x.ExpiresAt),
		StatusOutstanding, nil, nil)
	if err != nil || ok {
		return err
	}
	if cached {
		a.toks[x.TokenID] = prev
	} else {
		delete(a.toks, x.TokenID)
	}
	return a.anomaly(sale, "TokenIssued %s issues token %s again", e.ID, x.TokenID)
}

func (a *applier) expire(sale string, e events.Event, x *events.TokenExpired, at string) error {
	t, found, err := a.token(x.TokenID)
	switch {
	case err != nil:
		return err
	case !found:
		return a.anomaly(sale, "TokenExpired %s expires unknown token %q", e.ID, x.TokenID)
	case t.status != StatusOutstanding:
		return a.anomaly(sale, "TokenExpired %s expires token %s, which is %s", e.ID, x.TokenID, t.status)
	case t.sale != e.Sale:
		return a.anomaly(sale, "TokenExpired %s expires token %s of sale %s", e.ID, x.TokenID, t.sale)
	}
	return a.closeToken(x.TokenID, t, StatusExpired, nil, at)
}

func (a *applier) redeem(sale, shopper string, e events.Event, x *events.PurchaseAccepted, at string) error {
	if x.OrderID != e.Request {
		if err := a.anomaly(sale, "PurchaseAccepted %s makes order %s for request %s", e.ID, x.OrderID, e.Request); err != nil {
			return err
		}
	}
	t, found, err := a.token(x.TokenID)
	switch {
	case err != nil:
		return err
	case !found:
		err = a.anomaly(sale, "PurchaseAccepted %s redeems unknown token %q", e.ID, x.TokenID)
	case t.status != StatusOutstanding:
		err = a.anomaly(sale, "PurchaseAccepted %s redeems token %s, which is %s", e.ID, x.TokenID, t.status)
	case t.sale != e.Sale || t.shopper != shopper:
		err = a.anomaly(sale, "PurchaseAccepted %s redeems token %s of %s/%s for %s/%s", e.ID, x.TokenID, t.sale, t.shopper, e.Sale, shopper)
	default:
		err = a.closeToken(x.TokenID, t, StatusRedeemed, x.OrderID, at)
	}
	if err != nil {
		return err
	}
	// The cache entry goes first, as for a token (see issue).
	prev, cached := a.ords[x.OrderID]
	o := &ordInfo{orderState: orderState{status: StatusAccepted}, sale: e.Sale, shopper: shopper, found: true, row: -1}
	if !a.exact {
		o.row = len(a.bufs[ordersTable].vals) / tables[ordersTable].cols
	}
	a.ords[x.OrderID] = o
	ok, err := a.insert(ordersTable, x.OrderID, e.Sale, shopper, x.TokenID, e.Request, x.Units, StatusAccepted, at,
		nil, 0, nil, nil, nil)
	if err != nil || ok {
		return err
	}
	if cached {
		a.ords[x.OrderID] = prev
	} else {
		delete(a.ords, x.OrderID)
	}
	return a.anomaly(sale, "PurchaseAccepted %s makes order %s again", e.ID, x.OrderID)
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

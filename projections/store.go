// Package projections folds flashgate's event stream into SQLite views: the
// sales, the requests and the decisions answering them, the token ledger, the
// orders and what became of them at the fulfilment provider, a full audit
// trail, and the anomalies found on the way. The views are derived:
// replaying the stream into an empty database rebuilds them exactly, and the
// last applied stream sequence is stored in the same transaction as the
// rows, so a replay of messages already applied changes nothing.
package projections

import (
	"context"
	"database/sql"
	_ "embed" // schema.sql, schema_v2.sql
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // driver "sqlite"
)

//go:embed schema.sql
var schemaV1 string

// schemaV2 adds the fulfilment outcomes to the orders.
//
//go:embed schema_v2.sql
var schemaV2 string

// migrations are the schema changes in order; migration i brings the
// database to version i+1. A migration, once released, is never edited:
// the schema is schema.sql with every later file applied on top.
var migrations = []string{schemaV1, schemaV2}

// ErrNotFound is returned by the queries for an id the views do not hold.
var ErrNotFound = errors.New("not found")

// Store is the SQLite database holding the views. Apply is its only writer;
// the queries and DB read through a separate pool, which WAL lets run
// alongside a write.
type Store struct {
	w     *sql.DB // one connection; transactions BEGIN IMMEDIATE
	r     *sql.DB // readers
	stmts stmts   // prepared on w
}

// Open opens or creates the database at path and brings its schema up to
// date. The database runs in WAL mode with synchronous=NORMAL: a power cut
// may lose the last transactions, never half of one, and Run re-applies
// them from the stream.
func Open(path string) (*Store, error) {
	const pragmas = "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(0)&_pragma=synchronous(NORMAL)"
	uri := "file:" + uriPath.Replace(path) + "?" + pragmas
	w, err := sql.Open("sqlite", uri+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open projections %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)
	s := &Store{w: w}
	if err := migrate(w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open projections %s: %w", path, err)
	}
	if err := s.stmts.prepare(w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open projections %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", uri)
	if err != nil {
		s.stmts.close()
		w.Close()
		return nil, fmt.Errorf("open projections %s: %w", path, err)
	}
	r.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	s.r = r
	return s, nil
}

// uriPath escapes what a file path may hold that an SQLite URI reads as
// syntax.
var uriPath = strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23")

// migrate applies the migrations the database lacks, each in its own
// transaction together with its row in the migrations table.
func migrate(db *sql.DB) error {
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, applied_at TEXT)`); err != nil {
		return fmt.Errorf("migrations table: %w", err)
	}
	for {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		var v int
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM migrations`).Scan(&v); err != nil {
			tx.Rollback()
			return fmt.Errorf("schema version: %w", err)
		}
		if v > len(migrations) {
			tx.Rollback()
			return fmt.Errorf("schema version %d is newer than this build knows (%d)", v, len(migrations))
		}
		if v == len(migrations) {
			return tx.Rollback()
		}
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to version %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO migrations (version, applied_at) VALUES (?, ?)`,
			v+1, fmtTime(time.Now())); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to version %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate to version %d: %w", v+1, err)
		}
	}
}

// Close closes the database.
func (s *Store) Close() error {
	s.stmts.close()
	return errors.Join(s.r.Close(), s.w.Close())
}

// DB is the read pool, for the auditor's queries. Writing through it races
// with Apply and breaks the views' derivation from the stream.
func (s *Store) DB() *sql.DB { return s.r }

// LastSeq is the stream sequence of the last message applied, 0 if none.
func (s *Store) LastSeq(ctx context.Context) (uint64, error) {
	seq, err := lastSeq(ctx, s.r)
	if err != nil {
		return 0, fmt.Errorf("projections last seq: %w", err)
	}
	return seq, nil
}

type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func lastSeq(ctx context.Context, q queryRower) (uint64, error) {
	var v string
	err := q.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'last_seq'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(v, 10, 64)
}

// Order is one row of the orders view: the order the sale's writer
// accepted and what became of it at the fulfilment provider.
type Order struct {
	ID, Sale, Shopper, TokenID string
	Status                     string // StatusAccepted, StatusRetrying, StatusConfirmed, StatusFailed or StatusPending
	Units                      int64
	CreatedAt                  time.Time
	Reference                  string    // the provider's id, once confirmed
	Attempts                   int       // failed calls since it was accepted or last requeued
	LastError                  string    // the last failure reported, "" if none
	FailedReason               string    // while failed: events.OrderFailedAttempts, ...Deadline or ...Rejected
	UpdatedAt                  time.Time // the time of its last order event; zero before one
}

// Order reads an order by id (the id of the purchase request that made it).
func (s *Store) Order(ctx context.Context, id string) (Order, error) {
	var (
		o                                   Order
		created, shopper, token, status     sql.NullString
		reference, lastErr, reason, updated sql.NullString
		units, attempts                     sql.NullInt64
	)
	err := s.r.QueryRowContext(ctx, `SELECT id, sale, shopper, token_id, status, units, created_at,
		reference, attempts, last_error, failed_reason, updated_at FROM orders WHERE id = ?`, id).
		Scan(&o.ID, &o.Sale, &shopper, &token, &status, &units, &created,
			&reference, &attempts, &lastErr, &reason, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, fmt.Errorf("order %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Order{}, fmt.Errorf("order %s: %w", id, err)
	}
	o.Shopper, o.TokenID, o.Status, o.Units = shopper.String, token.String, status.String, units.Int64
	o.Reference, o.Attempts, o.LastError, o.FailedReason = reference.String, int(attempts.Int64), lastErr.String, reason.String
	var errs [2]error
	o.CreatedAt, errs[0] = parseTime(created.String)
	o.UpdatedAt, errs[1] = parseTime(updated.String)
	if err := errors.Join(errs[:]...); err != nil {
		return Order{}, fmt.Errorf("order %s: %w", id, err)
	}
	return o, nil
}

// OrderCounts are a sale's orders by status.
type OrderCounts struct {
	Accepted  int64 // accepted by the writer, no outcome yet
	Retrying  int64 // a call to the provider failed; retried
	Confirmed int64 // taken by the provider
	Failed    int64 // given up, in the dead-letter stream
	Pending   int64 // requeued by an operator after failing
}

// Total is the orders counted.
func (c OrderCounts) Total() int64 {
	return c.Accepted + c.Retrying + c.Confirmed + c.Failed + c.Pending
}

// InFlight is the orders neither confirmed nor failed: the fulfilment
// worker's to finish.
func (c OrderCounts) InFlight() int64 { return c.Accepted + c.Retrying + c.Pending }

// OrderCounts counts the orders of a sale ("": of every sale) by status.
func (s *Store) OrderCounts(ctx context.Context, sale string) (OrderCounts, error) {
	q, args := `SELECT status, COUNT(*) FROM orders GROUP BY status`, []any(nil)
	if sale != "" {
		q, args = `SELECT status, COUNT(*) FROM orders WHERE sale = ? GROUP BY status`, []any{sale}
	}
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return OrderCounts{}, fmt.Errorf("order counts of %q: %w", sale, err)
	}
	defer rows.Close()
	var c OrderCounts
	for rows.Next() {
		var (
			status sql.NullString
			n      int64
		)
		if err := rows.Scan(&status, &n); err != nil {
			return OrderCounts{}, fmt.Errorf("order counts of %q: %w", sale, err)
		}
		switch status.String {
		case StatusAccepted:
			c.Accepted = n
		case StatusRetrying:
			c.Retrying = n
		case StatusConfirmed:
			c.Confirmed = n
		case StatusFailed:
			c.Failed = n
		case StatusPending:
			c.Pending = n
		default: // the fold writes no other status
			return OrderCounts{}, fmt.Errorf("order counts of %q: %d orders have status %q", sale, n, status.String)
		}
	}
	if err := rows.Err(); err != nil {
		return OrderCounts{}, fmt.Errorf("order counts of %q: %w", sale, err)
	}
	return c, nil
}

// RequestStatus is a request and, once decided, the decision answering it.
type RequestStatus struct {
	ID, Sale, Shopper, Type string
	Seq                     uint64
	ReceivedAt              time.Time
	Decided                 bool
	Decision                DecisionRow
}

// DecisionRow is the decision answering a request. Fields that do not apply
// to its type are zero. IssuedAt, for a TokenIssued, is the issue time of
// its token from the token ledger (for a repeated answer, the first issue).
type DecisionRow struct {
	Type, Reason, TokenID, OrderID string
	AlreadyIssued                  bool
	IssuedAt, ExpiresAt, DecidedAt time.Time
	Version                        uint64
}

// Request reads a request by id and the first decision answering it.
func (s *Store) Request(ctx context.Context, id string) (RequestStatus, error) {
	var (
		rs                                   RequestStatus
		sale, shopper, typ, received         sql.NullString
		seq                                  sql.NullInt64
		dType, reason, token, order, exp, at sql.NullString
		issued                               sql.NullString
		already, version                     sql.NullInt64
	)
	err := s.r.QueryRowContext(ctx, `
		SELECT r.id, r.sale, r.shopper, r.type, r.seq, r.received_at,
		       d.type, d.reason, d.token_id, d.order_id, d.already_issued, d.expires_at, d.decided_at, d.version,
		       t.issued_at
		FROM requests r
		LEFT JOIN decisions d ON d.id = (
			SELECT id FROM decisions WHERE request = r.id ORDER BY seq, idx LIMIT 1)
		LEFT JOIN tokens t ON d.type = 'TokenIssued' AND t.id = d.token_id
		WHERE r.id = ?`, id).
		Scan(&rs.ID, &sale, &shopper, &typ, &seq, &received,
			&dType, &reason, &token, &order, &already, &exp, &at, &version, &issued)
	if errors.Is(err, sql.ErrNoRows) {
		return RequestStatus{}, fmt.Errorf("request %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return RequestStatus{}, fmt.Errorf("request %s: %w", id, err)
	}
	rs.Sale, rs.Shopper, rs.Type, rs.Seq = sale.String, shopper.String, typ.String, uint64(seq.Int64)
	var errs [4]error
	rs.ReceivedAt, errs[0] = parseTime(received.String)
	if dType.Valid {
		rs.Decided = true
		rs.Decision = DecisionRow{Type: dType.String, Reason: reason.String, TokenID: token.String,
			OrderID: order.String, AlreadyIssued: already.Int64 != 0, Version: uint64(version.Int64)}
		rs.Decision.ExpiresAt, errs[1] = parseTime(exp.String)
		rs.Decision.DecidedAt, errs[2] = parseTime(at.String)
		rs.Decision.IssuedAt, errs[3] = parseTime(issued.String)
	}
	if err := errors.Join(errs[:]...); err != nil {
		return RequestStatus{}, fmt.Errorf("request %s: %w", id, err)
	}
	return rs, nil
}

// timeLayout is RFC 3339 with a fixed nine-digit fraction: it parses with
// time.RFC3339Nano, and comparing two such strings compares the times.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// fmtTime is t as stored: UTC text, "" for the zero time.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeLayout)
}

// nullTime is t as stored where the zero time means "does not apply".
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(timeLayout)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("stored time %q: %w", s, err)
	}
	return t, nil
}

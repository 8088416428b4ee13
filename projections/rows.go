package projections

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// The tables Apply writes most: it buffers their rows and inserts them
// many to a statement, since with database/sql and modernc.org/sqlite a
// statement costs more than the row it writes.
const (
	requestsTable = iota
	decisionsTable
	tokensTable
	ordersTable
	auditTable
	numTables
)

// tables holds, for each buffered table, its insert and how many values a
// row has. A row already there is not inserted (ON CONFLICT DO NOTHING):
// that is an anomaly, which Apply records row by row.
var tables = [numTables]struct {
	insert, row, conflict string
	cols                  int
}{
	requestsTable: {`INSERT INTO requests (id, sale, seq, idx, type, shopper, client_request_id, token_id, received_at) VALUES `,
		`(?, ?, ?, ?, ?, ?, ?, ?, ?)`, ` ON CONFLICT DO NOTHING`, 9},
	decisionsTable: {`INSERT INTO decisions (id, sale, version, idx, seq, type, request, shopper, token_id, order_id, reason, already_issued, expires_at, decided_at) VALUES `,
		`(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, ` ON CONFLICT DO NOTHING`, 14},
	tokensTable: {`INSERT INTO tokens (id, sale, shopper, request, issued_at, expires_at, status, order_id, closed_at) VALUES `,
		`(?, ?, ?, ?, ?, ?, ?, ?, ?)`, ` ON CONFLICT DO NOTHING`, 9},
	ordersTable: {`INSERT INTO orders (id, sale, shopper, token_id, request, units, status, created_at,
		reference, attempts, last_error, failed_reason, updated_at) VALUES `,
		`(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, ` ON CONFLICT DO NOTHING`, 13},
	// An audit trail row cannot exist already (Apply skips every sequence
	// it applied before), but ON CONFLICT spares SQLite the statement
	// journal a multi-row insert that may fail half-way needs.
	auditTable: {`INSERT INTO audit_trail (seq, idx, event_id, type, sale, time, body) VALUES `,
		`(?, ?, ?, ?, ?, ?, ?)`, ` ON CONFLICT DO NOTHING`, 7},
}

// insertSizes are the rows one insert statement writes: a full buffer,
// then the powers of two below it for what is left at the end of a
// transaction. The largest (128 rows of 14 values) stays far below
// SQLite's limit of 32766 bound values.
var insertSizes = [...]int{128, 64, 32, 16, 8, 4, 2, 1}

// bufRows is the rows a table buffers before they are inserted.
const bufRows = 128

// errRecheck is the fast path finding a row that was already there: Apply
// then runs the transaction again row by row, to record the anomaly
// exactly where it happened.
var errRecheck = errors.New("a row already exists: apply again row by row")

// inserts are the multi-row insert statements of each table and size,
// prepared once on the writer's connection.
type inserts [numTables][len(insertSizes)]*sql.Stmt

func (in *inserts) prepare(db *sql.DB, all *[]*sql.Stmt) error {
	for t, tb := range tables {
		for k, n := range insertSizes {
			q := tb.insert + strings.Repeat(tb.row+", ", n-1) + tb.row + tb.conflict
			s, err := db.Prepare(q)
			if err != nil {
				return fmt.Errorf("prepare insert of %d rows: %w", n, err)
			}
			in[t][k] = s
			*all = append(*all, s)
		}
	}
	return nil
}

// insert adds a row of table t (its values in order). Row by row (exact),
// it writes the row at once and reports whether it went in. Otherwise it
// buffers the row and reports true: the flush of the buffer checks that
// every row went in, and returns errRecheck if one did not.
func (a *applier) insert(t int, vals ...any) (bool, error) {
	b := &a.bufs[t]
	b.vals = append(b.vals, vals...)
	if a.exact {
		return a.flush(t)
	}
	if len(b.vals) < bufRows*tables[t].cols {
		return true, nil
	}
	return true, a.flushChecked(t)
}

// flushChecked flushes table t's buffer and returns errRecheck unless
// every row went in.
func (a *applier) flushChecked(t int) error {
	all, err := a.flush(t)
	if err == nil && !all {
		err = errRecheck
	}
	return err
}

// flush writes table t's buffered rows and reports whether every one went
// in.
func (a *applier) flush(t int) (bool, error) {
	b, cols := &a.bufs[t], tables[t].cols
	n := len(b.vals) / cols
	var changed int64
	for off, k := 0, 0; off < n; {
		for insertSizes[k] > n-off {
			k++
		}
		s := a.bound[t][k]
		if s == nil {
			s = a.tx.StmtContext(a.ctx, a.ins[t][k])
			a.bound[t][k] = s
		}
		size := insertSizes[k]
		res, err := s.ExecContext(a.ctx, b.vals[off*cols:(off+size)*cols]...)
		if err != nil {
			return false, err
		}
		c, err := res.RowsAffected()
		if err != nil {
			return false, err
		}
		changed += c
		off += size
	}
	// Written: a change to a cached token or order is an UPDATE now.
	switch t {
	case tokensTable:
		for i := 0; i < len(b.vals); i += cols {
			if tok := a.toks[b.vals[i].(string)]; tok != nil {
				tok.row = -1
			}
		}
	case ordersTable:
		for i := 0; i < len(b.vals); i += cols {
			if o := a.ords[b.vals[i].(string)]; o != nil {
				o.row = -1
			}
		}
	}
	clear(b.vals)
	b.vals = b.vals[:0]
	return changed == int64(n), nil
}

// flushAll writes every buffered row.
func (a *applier) flushAll() error {
	for t := range a.bufs {
		if err := a.flushChecked(t); err != nil {
			return err
		}
	}
	return nil
}

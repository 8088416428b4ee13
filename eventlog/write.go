package eventlog

import (
	"bufio"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/flashgate/flashgate/events"
)

// Formats are the names NewWriter knows.
var Formats = []string{"jsonl", "csv", "text"}

// NewWriter returns the Writer of a format: "jsonl" (JSONL), "csv" (CSV) or
// "text" (Text).
func NewWriter(format string, w io.Writer) (Writer, error) {
	switch format {
	case "jsonl":
		return NewJSONL(w), nil
	case "csv":
		return NewCSV(w), nil
	case "text":
		return NewText(w), nil
	}
	return nil, fmt.Errorf("unknown format %q (valid: %s)", format, strings.Join(Formats, ", "))
}

// position is the part of a JSON line that says where the event is stored.
type position struct {
	Seq     uint64    `json:"seq"`
	Idx     int       `json:"idx"`
	Subject string    `json:"subject"`
	Stored  time.Time `json:"stored"`
	Batch   uint64    `json:"batch,omitempty"`
	Writer  string    `json:"writer,omitempty"`
}

// undecodable is the JSON line of a message that did not decode. Raw is its
// payload as text when it is UTF-8, else RawBase64 holds it.
type undecodable struct {
	position
	Type      events.Type `json:"type"`
	Sale      string      `json:"sale,omitempty"`
	Error     string      `json:"error"`
	Raw       *string     `json:"raw,omitempty"`
	RawBase64 string      `json:"rawBase64,omitempty"`
}

// MarshalJSON is the record as one JSON line: its position ("seq", "idx",
// "subject", "stored", and for decisions "batch" and "writer") followed by
// the event in its wire form (events.EncodeEvent). A message that does not
// decode has "type": "undecodable", "error", and its payload in "raw" (or
// "rawBase64" when it is not UTF-8).
func (r Record) MarshalJSON() ([]byte, error) {
	pos := position{Seq: r.Seq, Idx: r.Idx, Subject: r.Subject, Stored: r.Stored.UTC(), Batch: r.Batch, Writer: r.Writer}
	if r.Err != nil {
		u := undecodable{position: pos, Type: TypeUndecodable, Sale: r.Sale(), Error: r.Err.Error()}
		if utf8.Valid(r.Raw) {
			s := string(r.Raw)
			u.Raw = &s
		} else {
			u.RawBase64 = base64.StdEncoding.EncodeToString(r.Raw)
		}
		return json.Marshal(u)
	}
	head, err := json.Marshal(pos)
	if err != nil {
		return nil, err
	}
	ev, err := events.EncodeEvent(r.Event)
	if err != nil {
		return nil, fmt.Errorf("event at %d.%d: %w", r.Seq, r.Idx, err)
	}
	// {"seq":..,"writer":".."} + {"id":..} -> {"seq":..,"writer":"..","id":..}
	out := make([]byte, 0, len(head)+len(ev))
	out = append(out, head[:len(head)-1]...)
	out = append(out, ',')
	return append(out, ev[1:]...), nil
}

// JSONL writes one JSON object per line (Record.MarshalJSON).
type JSONL struct {
	w *bufio.Writer
}

// NewJSONL returns a JSONL writer to w.
func NewJSONL(w io.Writer) *JSONL { return &JSONL{w: bufio.NewWriter(w)} }

// Write implements Writer.
func (j *JSONL) Write(r Record) error {
	b, err := r.MarshalJSON()
	if err != nil {
		return err
	}
	if _, err := j.w.Write(b); err != nil {
		return err
	}
	return j.w.WriteByte('\n')
}

// Flush implements Writer.
func (j *JSONL) Flush() error { return j.w.Flush() }

// Columns is the CSV header. Fields that an event type does not have are
// empty. time is the event's time; stored, when the stream stored its
// message. already_issued is true or false on TokenIssued only. data is the
// event's payload in its wire form (JSON), or the payload of a message that
// does not decode (prefixed "base64:" when it is not UTF-8); error says why
// it does not.
var Columns = []string{
	"seq", "idx", "time", "sale", "type", "id", "shopper", "request", "token_id", "order_id",
	"reason", "already_issued", "expires_at", "client_request_id", "batch", "writer",
	"subject", "stored", "units", "data", "error",
}

// CSV writes a header row (Columns), then one row per record, quoted as RFC
// 4180 says. The header is written with the first row, or by Flush when
// there is none.
type CSV struct {
	w      *csv.Writer
	header bool
	row    []string
}

// NewCSV returns a CSV writer to w.
func NewCSV(w io.Writer) *CSV { return &CSV{w: csv.NewWriter(w), row: make([]string, len(Columns))} }

// Write implements Writer.
func (c *CSV) Write(r Record) error {
	if err := c.writeHeader(); err != nil {
		return err
	}
	if err := Row(r, c.row); err != nil {
		return err
	}
	for i, v := range c.row {
		c.row[i] = neutral(v)
	}
	return c.w.Write(c.row)
}

// neutral keeps a spreadsheet from running a cell as a formula: text that
// starts with = + - @ (or a tab or carriage return) gets a leading quote.
// Client-chosen text (a client request id) reaches the export.
func neutral(v string) string {
	if v == "" {
		return v
	}
	switch v[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + v
	}
	return v
}

func (c *CSV) writeHeader() error {
	if c.header {
		return nil
	}
	c.header = true
	return c.w.Write(Columns)
}

// Flush implements Writer.
func (c *CSV) Flush() error {
	if err := c.writeHeader(); err != nil {
		return err
	}
	c.w.Flush()
	return c.w.Error()
}

// Row fills row (len(Columns) long) with r's fields, in the order of Columns.
func Row(r Record, row []string) error {
	if len(row) != len(Columns) {
		return fmt.Errorf("row has %d fields, want %d", len(row), len(Columns))
	}
	clear(row)
	f := func(col int, v string) { row[col] = v }
	const (
		cSeq = iota
		cIdx
		cTime
		cSale
		cType
		cID
		cShopper
		cRequest
		cTokenID
		cOrderID
		cReason
		cAlreadyIssued
		cExpiresAt
		cClientRequestID
		cBatch
		cWriter
		cSubject
		cStored
		cUnits
		cData
		cError
	)
	f(cSeq, strconv.FormatUint(r.Seq, 10))
	f(cIdx, strconv.Itoa(r.Idx))
	f(cSale, r.Sale())
	f(cType, string(r.Type()))
	f(cSubject, r.Subject)
	f(cStored, stamp(r.Stored))
	if r.Err != nil {
		f(cError, r.Err.Error())
		if utf8.Valid(r.Raw) {
			f(cData, string(r.Raw))
		} else {
			f(cData, "base64:"+base64.StdEncoding.EncodeToString(r.Raw))
		}
		return nil
	}
	e := r.Event
	f(cTime, stamp(e.Time))
	f(cID, e.ID)
	f(cShopper, e.Shopper)
	f(cRequest, e.Request)
	f(cClientRequestID, e.ClientRequestID)
	if r.Batch > 0 {
		f(cBatch, strconv.FormatUint(r.Batch, 10))
	}
	f(cWriter, r.Writer)
	switch d := e.Data.(type) {
	case *events.PurchaseRequested:
		f(cTokenID, d.TokenID)
	case *events.TokenIssued:
		f(cTokenID, d.TokenID)
		f(cAlreadyIssued, strconv.FormatBool(d.AlreadyIssued))
		f(cExpiresAt, stamp(d.ExpiresAt))
	case *events.TokenDenied:
		f(cReason, d.Reason)
	case *events.TokenExpired:
		f(cTokenID, d.TokenID)
		f(cExpiresAt, stamp(d.ExpiresAt))
	case *events.PurchaseAccepted:
		f(cTokenID, d.TokenID)
		f(cOrderID, d.OrderID)
		f(cUnits, strconv.FormatInt(d.Units, 10))
	case *events.PurchaseRefused:
		f(cTokenID, d.TokenID)
		f(cOrderID, d.OrderID)
		f(cReason, d.Reason)
	case *events.OrderAttemptFailed, *events.OrderConfirmed, *events.OrderRequeued:
		f(cOrderID, e.Request)
	case *events.OrderFailed:
		f(cOrderID, e.Request)
		f(cReason, d.Reason)
	}
	data, err := json.Marshal(e.Data)
	if err != nil {
		return fmt.Errorf("event at %d.%d: %w", r.Seq, r.Idx, err)
	}
	f(cData, string(data))
	return nil
}

// stamp is a time in RFC 3339 with nanoseconds, in UTC; "" for the zero time.
func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// Text writes one line per record for a person watching a terminal:
// position, time, sale, type, then the fields the event has as key=value.
type Text struct {
	w *bufio.Writer
}

// NewText returns a Text writer to w.
func NewText(w io.Writer) *Text { return &Text{w: bufio.NewWriter(w)} }

// Write implements Writer.
func (t *Text) Write(r Record) error {
	row := make([]string, len(Columns))
	if err := Row(r, row); err != nil {
		return err
	}
	at := r.Stored
	if r.Err == nil {
		at = r.Event.Time
	}
	fmt.Fprintf(t.w, "%d.%d %s %s %s", r.Seq, r.Idx, at.UTC().Format("2006-01-02T15:04:05.000Z07:00"), r.Sale(), r.Type())
	if r.Err != nil {
		_, err := fmt.Fprintf(t.w, " subject=%s error=%q\n", r.Subject, r.Err.Error())
		return err
	}
	for i, col := range Columns {
		switch col {
		case "seq", "idx", "time", "sale", "type", "subject", "stored":
			continue
		case "data":
			if r.Event.Type != events.TypeSaleCreated {
				continue
			}
		}
		if v := row[i]; v != "" {
			if strings.ContainsAny(v, " \t\n") {
				v = strconv.Quote(v)
			}
			fmt.Fprintf(t.w, " %s=%s", col, v)
		}
	}
	return t.w.WriteByte('\n')
}

// Flush implements Writer.
func (t *Text) Flush() error { return t.w.Flush() }

package events

import (
	"bytes"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
)

// The fast decoder reads exactly the form the encoder writes: no
// whitespace, the keys in the wire structs' order and case, no unknown key,
// strings without escapes or control bytes and in valid UTF-8, integers
// without sign, exponent or fraction where the encoder writes none, times
// as quoted strings. Each function returns false on anything else (and on
// any input the reference decoder would refuse), and the caller then
// decodes the whole message with the reference decoder, which also makes
// the error. On what it accepts, its value is the reference decoder's:
//
//   - encoding/json.Unmarshal accepts such input and, for it, sets each
//     field named once to its value and leaves the others zero;
//   - a string without escapes, control bytes or invalid UTF-8 unquotes to
//     its bytes, copied into a new string as here (no decoded string shares
//     memory with the input, which callers may reuse);
//   - a time is decoded by time.Time.UnmarshalJSON on the quoted bytes, as
//     encoding/json does;
//   - the checks of fromWire and of the batch decoders are made again below
//     (an accepted event passes every one of them).
//
// Old schema versions and SaleCreated payloads always take the reference
// path.

type decoder struct {
	b []byte
	i int
	// Repeated values within a message: a batch names one sale and mostly
	// one time. Strings are immutable, so sharing one between events is
	// invisible; a time is a value.
	sale     string
	lastTime []byte
	lastT    time.Time
}

// lit consumes s.
func (d *decoder) lit(s string) bool {
	if len(d.b)-d.i < len(s) || string(d.b[d.i:d.i+len(s)]) != s {
		return false
	}
	d.i += len(s)
	return true
}

// peek reports whether s comes next, without consuming it.
func (d *decoder) peek(s string) bool {
	return len(d.b)-d.i >= len(s) && string(d.b[d.i:d.i+len(s)]) == s
}

// rawString consumes a string that needs no unquoting and returns its
// contents (aliasing the input: callers copy).
func (d *decoder) rawString() ([]byte, bool) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return nil, false
	}
	start := d.i + 1
	ascii := true
	for j := start; j < len(d.b); j++ {
		c := d.b[j]
		switch {
		case c == '"':
			s := d.b[start:j]
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			d.i = j + 1
			return s, true
		case c < 0x20 || c == '\\':
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

func (d *decoder) str() (string, bool) {
	s, ok := d.rawString()
	if !ok {
		return "", false
	}
	return string(s), true
}

// reason reads a string that is mostly one of the known reasons: those
// come back as the constants, without an allocation.
func (d *decoder) reason() (string, bool) {
	s, ok := d.rawString()
	if !ok {
		return "", false
	}
	switch string(s) {
	case ReasonNotOpen:
		return ReasonNotOpen, true
	case ReasonClosed:
		return ReasonClosed, true
	case ReasonSoldOut:
		return ReasonSoldOut, true
	case ReasonQuotaExhausted:
		return ReasonQuotaExhausted, true
	case ReasonLimitReached:
		return ReasonLimitReached, true
	case ReasonTokenUnknown:
		return ReasonTokenUnknown, true
	case ReasonTokenExpired:
		return ReasonTokenExpired, true
	case ReasonTokenUsed:
		return ReasonTokenUsed, true
	case ReasonTokenNotYours:
		return ReasonTokenNotYours, true
	case LeftByShopper:
		return LeftByShopper, true
	case LeftIdle:
		return LeftIdle, true
	case LeftUnclaimed:
		return LeftUnclaimed, true
	case LeftNothing:
		return LeftNothing, true
	}
	return string(s), true
}

// saleID reads the sale of a batch or an event: the same string for every
// event of the batch that names the same sale.
func (d *decoder) saleID() (string, bool) {
	s, ok := d.rawString()
	if !ok {
		return "", false
	}
	if string(s) != d.sale {
		d.sale = string(s)
	}
	return d.sale, true
}

// time reads a quoted time with time.Time.UnmarshalJSON, as encoding/json
// does for a time.Time field.
func (d *decoder) time() (time.Time, bool) {
	start := d.i
	if _, ok := d.rawString(); !ok {
		return time.Time{}, false
	}
	q := d.b[start:d.i]
	if d.lastTime != nil && bytes.Equal(q, d.lastTime) {
		return d.lastT, true
	}
	var t time.Time
	if err := t.UnmarshalJSON(q); err != nil {
		return time.Time{}, false
	}
	d.lastTime, d.lastT = q, t
	return t, true
}

// digits consumes an unsigned integer in the form strconv writes it: 0 or
// no leading zero.
func (d *decoder) digits() ([]byte, bool) {
	start := d.i
	for d.i < len(d.b) && '0' <= d.b[d.i] && d.b[d.i] <= '9' {
		d.i++
	}
	n := d.b[start:d.i]
	if len(n) == 0 || (n[0] == '0' && len(n) > 1) {
		return nil, false
	}
	return n, true
}

// uint reads a uint64 as strconv.ParseUint would, and fails where it would.
func (d *decoder) uint() (uint64, bool) {
	n, ok := d.digits()
	if !ok {
		return 0, false
	}
	return parseDigits(n, math.MaxUint64)
}

// int reads an int64 as strconv.ParseInt would, and fails where it would;
// -0 is left to the reference decoder.
func (d *decoder) int() (int64, bool) {
	neg := d.lit("-")
	n, ok := d.digits()
	if !ok || (neg && n[0] == '0') {
		return 0, false
	}
	if !neg {
		v, ok := parseDigits(n, math.MaxInt64)
		return int64(v), ok
	}
	v, ok := parseDigits(n, -math.MinInt64)
	return int64(-v), ok
}

// parseDigits returns the value of the decimal digits n if it is at most max.
func parseDigits(n []byte, max uint64) (uint64, bool) {
	var v uint64
	for _, c := range n {
		x := uint64(c - '0')
		if v > (max-x)/10 {
			return 0, false
		}
		v = v*10 + x
	}
	return v, true
}

func (d *decoder) bool() (bool, bool) {
	switch {
	case d.lit("true"):
		return true, true
	case d.lit("false"):
		return false, true
	}
	return false, false
}

// key consumes a key as the encoder writes it, with its separators.
func (d *decoder) key(k string) bool { return d.lit(k) }

var keyVersionSale = `,"v":` + strconv.Itoa(SchemaVersion) + `,"sale":`

func decodeEventFast(b []byte) (Event, bool) {
	d := decoder{b: b}
	var e Event
	if !d.event(&e) || d.i != len(d.b) {
		return Event{}, false
	}
	return e, true
}

func decodeRequestsFast(b []byte) (RequestBatch, bool) {
	d := decoder{b: b}
	if !d.lit(`{"requests":[`) || d.peek("]") {
		return RequestBatch{}, false // an empty batch is an error
	}
	rb := RequestBatch{Requests: make([]Event, 0, bytes.Count(b, []byte(`{"id":`)))}
	for {
		rb.Requests = append(rb.Requests, Event{})
		e := &rb.Requests[len(rb.Requests)-1]
		if !d.event(e) || !e.Type.IsRequest() {
			return RequestBatch{}, false
		}
		if !d.lit(",") {
			break
		}
	}
	if !d.lit("]}") || d.i != len(d.b) {
		return RequestBatch{}, false
	}
	return rb, true
}

func decodeDecisionsFast(b []byte) (DecisionBatch, bool) {
	d := decoder{b: b}
	var db DecisionBatch
	var ok bool
	if !d.key(`{"sale":`) {
		return DecisionBatch{}, false
	}
	if db.Sale, ok = d.saleID(); !ok || !d.key(`,"writer":`) {
		return DecisionBatch{}, false
	}
	if db.Writer, ok = d.str(); !ok || !d.key(`,"decidedAt":`) {
		return DecisionBatch{}, false
	}
	if db.DecidedAt, ok = d.time(); !ok {
		return DecisionBatch{}, false
	}
	if d.key(`,"fromSeq":`) {
		if db.FromSeq, ok = d.uint(); !ok {
			return DecisionBatch{}, false
		}
	}
	if !d.key(`,"head":`) || !d.head(&db.Head) || !d.key(`,"events":[`) {
		return DecisionBatch{}, false
	}
	if !ValidSaleID(db.Sale) || db.Head.Version == 0 || db.DecidedAt.IsZero() {
		return DecisionBatch{}, false
	}
	db.Events = make([]Event, 0, bytes.Count(b, []byte(`{"id":`)))
	if !d.lit("]") {
		for {
			db.Events = append(db.Events, Event{})
			e := &db.Events[len(db.Events)-1]
			if !d.event(e) || e.Type.IsRequest() || e.Type == TypeSaleCreated {
				return DecisionBatch{}, false
			}
			if !d.lit(",") {
				break
			}
		}
		if !d.lit("]") {
			return DecisionBatch{}, false
		}
	}
	if !d.lit("}") || d.i != len(d.b) {
		return DecisionBatch{}, false
	}
	return db, true
}

func (d *decoder) head(h *Head) bool {
	var ok bool
	if !d.key(`{"version":`) {
		return false
	}
	if h.Version, ok = d.uint(); !ok || !d.key(`,"cursor":`) {
		return false
	}
	if h.Cursor, ok = d.uint(); !ok || !d.key(`,"stock":`) {
		return false
	}
	if h.Stock, ok = d.int(); !ok || !d.key(`,"quota":`) {
		return false
	}
	if h.Quota, ok = d.int(); !ok || !d.key(`,"issued":`) {
		return false
	}
	if h.Issued, ok = d.int(); !ok || !d.key(`,"expired":`) {
		return false
	}
	if h.Expired, ok = d.int(); !ok || !d.key(`,"redeemed":`) {
		return false
	}
	if h.Redeemed, ok = d.int(); !ok || !d.key(`,"opensAtNs":`) {
		return false
	}
	if h.OpensAtNs, ok = d.int(); !ok {
		return false
	}
	if d.key(`,"closesAtNs":`) {
		if h.ClosesAtNs, ok = d.int(); !ok {
			return false
		}
	}
	return d.lit("}")
}

// eventType reads a known type name as its constant.
func (d *decoder) eventType() (Type, bool) {
	s, ok := d.rawString()
	if !ok {
		return "", false
	}
	switch t := Type(s); t {
	case TypeTokenRequested:
		return TypeTokenRequested, true
	case TypePurchaseRequested:
		return TypePurchaseRequested, true
	case TypeTokenIssued:
		return TypeTokenIssued, true
	case TypeTokenDenied:
		return TypeTokenDenied, true
	case TypeTokenExpired:
		return TypeTokenExpired, true
	case TypePurchaseAccepted:
		return TypePurchaseAccepted, true
	case TypePurchaseRefused:
		return TypePurchaseRefused, true
	case TypeSaleUpdateRequested:
		return TypeSaleUpdateRequested, true
	case TypeSaleUpdated:
		return TypeSaleUpdated, true
	case TypeQueueJoinRequested:
		return TypeQueueJoinRequested, true
	case TypeQueueLeaveRequested:
		return TypeQueueLeaveRequested, true
	case TypeQueueSeenRequested:
		return TypeQueueSeenRequested, true
	case TypeQueueClaimRequested:
		return TypeQueueClaimRequested, true
	case TypeQueueJoined:
		return TypeQueueJoined, true
	case TypeQueueJoinDenied:
		return TypeQueueJoinDenied, true
	case TypeQueueShuffled:
		return TypeQueueShuffled, true
	case TypeQueueAdmitted:
		return TypeQueueAdmitted, true
	case TypeQueueClaimed:
		return TypeQueueClaimed, true
	case TypeQueueSeen:
		return TypeQueueSeen, true
	case TypeQueueLeft:
		return TypeQueueLeft, true
	case TypeQueueClosed:
		return TypeQueueClosed, true
	}
	return "", false // SaleCreated (left to the reference path) or unknown
}

// event reads a wireEvent of the current version and makes fromWire's
// checks.
func (d *decoder) event(e *Event) bool {
	var ok bool
	if !d.key(`{"id":`) {
		return false
	}
	if e.ID, ok = d.str(); !ok || !d.key(`,"type":`) {
		return false
	}
	if e.Type, ok = d.eventType(); !ok {
		return false
	}
	// Only the current version: older ones are upgraded by the reference path.
	if !d.key(keyVersionSale) {
		return false
	}
	e.Version = SchemaVersion
	if e.Sale, ok = d.saleID(); !ok || !d.key(`,"time":`) {
		return false
	}
	if e.Time, ok = d.time(); !ok {
		return false
	}
	if d.key(`,"shopper":`) {
		if e.Shopper, ok = d.str(); !ok {
			return false
		}
	}
	if d.key(`,"clientRequestId":`) {
		if e.ClientRequestID, ok = d.str(); !ok {
			return false
		}
	}
	if d.key(`,"request":`) {
		if e.Request, ok = d.str(); !ok {
			return false
		}
	}
	if !d.key(`,"data":`) {
		return false
	}
	// fromWire's checks, in its order (only whether one fails matters).
	if _, err := ulid.ParseStrict(e.ID); err != nil {
		return false
	}
	if !ValidSaleID(e.Sale) || e.Time.IsZero() {
		return false
	}
	if e.Type.IsRequest() && e.Shopper == "" {
		return false
	}
	if !e.Type.IsRequest() && !e.Type.AnswersNoRequest() && e.Request == "" { // SaleCreated never gets here
		return false
	}
	if e.Data, ok = d.data(e.Type); !ok {
		return false
	}
	return d.lit("}")
}

// data reads the payload of an event of type t (never SaleCreated); it
// always starts with '{', so it is neither empty nor null.
func (d *decoder) data(t Type) (any, bool) {
	var ok bool
	switch t {
	case TypeTokenRequested:
		return new(TokenRequested), d.lit("{}")
	case TypeQueueJoinRequested:
		return new(QueueJoinRequested), d.lit("{}")
	case TypePurchaseRequested:
		p := new(PurchaseRequested)
		if !d.key(`{"tokenId":`) {
			return nil, false
		}
		if p.TokenID, ok = d.str(); !ok {
			return nil, false
		}
		return p, d.lit("}")
	case TypeTokenIssued:
		p := new(TokenIssued)
		if !d.key(`{"tokenId":`) {
			return nil, false
		}
		if p.TokenID, ok = d.str(); !ok || !d.key(`,"issuedAt":`) {
			return nil, false
		}
		if p.IssuedAt, ok = d.time(); !ok || !d.key(`,"expiresAt":`) {
			return nil, false
		}
		if p.ExpiresAt, ok = d.time(); !ok {
			return nil, false
		}
		if d.key(`,"alreadyIssued":`) {
			if p.AlreadyIssued, ok = d.bool(); !ok {
				return nil, false
			}
		}
		return p, d.lit("}")
	case TypeTokenDenied:
		p := new(TokenDenied)
		if !d.key(`{"reason":`) {
			return nil, false
		}
		if p.Reason, ok = d.reason(); !ok {
			return nil, false
		}
		return p, d.lit("}")
	case TypeTokenExpired:
		p := new(TokenExpired)
		if !d.key(`{"tokenId":`) {
			return nil, false
		}
		if p.TokenID, ok = d.str(); !ok || !d.key(`,"expiresAt":`) {
			return nil, false
		}
		if p.ExpiresAt, ok = d.time(); !ok {
			return nil, false
		}
		return p, d.lit("}")
	case TypePurchaseAccepted:
		p := new(PurchaseAccepted)
		if !d.key(`{"tokenId":`) {
			return nil, false
		}
		if p.TokenID, ok = d.str(); !ok || !d.key(`,"orderId":`) {
			return nil, false
		}
		if p.OrderID, ok = d.str(); !ok || !d.key(`,"units":`) {
			return nil, false
		}
		if p.Units, ok = d.int(); !ok {
			return nil, false
		}
		return p, d.lit("}")
	case TypePurchaseRefused:
		p := new(PurchaseRefused)
		if !d.key(`{"tokenId":`) {
			return nil, false
		}
		if p.TokenID, ok = d.str(); !ok || !d.key(`,"reason":`) {
			return nil, false
		}
		if p.Reason, ok = d.reason(); !ok {
			return nil, false
		}
		if d.key(`,"orderId":`) {
			if p.OrderID, ok = d.str(); !ok {
				return nil, false
			}
		}
		return p, d.lit("}")
	case TypeSaleUpdateRequested:
		p := new(SaleUpdateRequested)
		if !d.key(`{"action":`) {
			return nil, false
		}
		if p.Action, ok = d.str(); !ok {
			return nil, false
		}
		return p, d.lit("}")
	case TypeSaleUpdated:
		p := new(SaleUpdated)
		if !d.key(`{"opensAt":`) {
			return nil, false
		}
		if p.OpensAt, ok = d.time(); !ok {
			return nil, false
		}
		if d.key(`,"closesAt":`) {
			if p.ClosesAt, ok = d.time(); !ok {
				return nil, false
			}
		}
		if p.OpensAt.IsZero() || !ValidScheduleTime(p.OpensAt) || !ValidScheduleTime(p.ClosesAt) {
			return nil, false
		}
		return p, d.lit("}")
	case TypeQueueLeaveRequested:
		p := new(QueueLeaveRequested)
		if p.Ticket, ok = d.ticket(); !ok {
			return nil, false
		}
		return p, true
	case TypeQueueClaimRequested:
		p := new(QueueClaimRequested)
		if p.Ticket, ok = d.ticket(); !ok {
			return nil, false
		}
		return p, true
	case TypeQueueClaimed:
		p := new(QueueClaimed)
		if p.Ticket, ok = d.ticket(); !ok {
			return nil, false
		}
		return p, true
	case TypeQueueSeenRequested:
		p := new(QueueSeenRequested)
		if p.Tickets, ok = d.tickets(); !ok {
			return nil, false
		}
		return p, true
	case TypeQueueSeen:
		p := new(QueueSeen)
		if p.Tickets, ok = d.tickets(); !ok {
			return nil, false
		}
		return p, true
	case TypeQueueJoined:
		p := new(QueueJoined)
		if !d.key(`{"ticket":`) {
			return nil, false
		}
		if p.Ticket, ok = d.str(); !ok || !d.key(`,"place":`) {
			return nil, false
		}
		if p.Place, ok = d.int(); !ok {
			return nil, false
		}
		if d.key(`,"preIndex":`) {
			if p.PreIndex, ok = d.int(); !ok {
				return nil, false
			}
		}
		if d.key(`,"already":`) {
			if p.Already, ok = d.bool(); !ok {
				return nil, false
			}
		}
		return p, d.lit("}")
	case TypeQueueJoinDenied:
		p := new(QueueJoinDenied)
		if !d.key(`{"reason":`) {
			return nil, false
		}
		if p.Reason, ok = d.reason(); !ok {
			return nil, false
		}
		return p, d.lit("}")
	case TypeQueueClosed:
		p := new(QueueClosed)
		if !d.key(`{"reason":`) {
			return nil, false
		}
		if p.Reason, ok = d.reason(); !ok {
			return nil, false
		}
		return p, d.lit("}")
	case TypeQueueShuffled:
		p := new(QueueShuffled)
		if !d.key(`{"seed":`) {
			return nil, false
		}
		if p.Seed, ok = d.uint(); !ok || !d.key(`,"preQueue":`) {
			return nil, false
		}
		if p.PreQueue, ok = d.int(); !ok {
			return nil, false
		}
		return p, d.lit("}")
	case TypeQueueAdmitted:
		p := new(QueueAdmitted)
		if !d.key(`{"ticket":`) {
			return nil, false
		}
		if p.Ticket, ok = d.str(); !ok || !d.key(`,"place":`) {
			return nil, false
		}
		if p.Place, ok = d.int(); !ok || !d.key(`,"tokenId":`) {
			return nil, false
		}
		if p.TokenID, ok = d.str(); !ok || !d.key(`,"claimBy":`) {
			return nil, false
		}
		if p.ClaimBy, ok = d.time(); !ok {
			return nil, false
		}
		return p, d.lit("}")
	case TypeQueueLeft:
		p := new(QueueLeft)
		if !d.key(`{"ticket":`) {
			return nil, false
		}
		if p.Ticket, ok = d.str(); !ok || !d.key(`,"reason":`) {
			return nil, false
		}
		if p.Reason, ok = d.reason(); !ok {
			return nil, false
		}
		return p, d.lit("}")
	}
	return nil, false
}

// ticket reads {"ticket":"..."}.
func (d *decoder) ticket() (string, bool) {
	if !d.key(`{"ticket":`) {
		return "", false
	}
	s, ok := d.str()
	return s, ok && d.lit("}")
}

// tickets reads {"tickets":[...]}: [] is an empty slice, as encoding/json
// makes it; null is left to the reference decoder.
func (d *decoder) tickets() ([]string, bool) {
	if !d.key(`{"tickets":[`) {
		return nil, false
	}
	ts := []string{}
	if !d.lit("]") {
		for {
			s, ok := d.str()
			if !ok {
				return nil, false
			}
			ts = append(ts, s)
			if !d.lit(",") {
				break
			}
		}
		if !d.lit("]") {
			return nil, false
		}
	}
	return ts, d.lit("}")
}

package events

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

// ErrUnknownVersion is returned by Decode for an event whose schema version
// this build does not know. It is loud on purpose: a newer writer's events
// must not be half-understood by an older reader.
var ErrUnknownVersion = errors.New("unknown event schema version")

// ErrMalformed is returned by Decode for a message that is not a valid event.
var ErrMalformed = errors.New("malformed event")

// ErrUnknownType is returned by Decode for an event type this build does not
// know: a newer build's event. Like ErrUnknownVersion it means "too new",
// never "garbage": a reader must stop, not skip it.
var ErrUnknownType = errors.New("unknown event type")

// TooNew reports whether err means the data comes from a newer build.
func TooNew(err error) bool {
	return errors.Is(err, ErrUnknownVersion) || errors.Is(err, ErrUnknownType)
}

// Times a sale's schedule may name: the head keeps them in Unix nanoseconds.
var (
	minScheduleTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) // also keeps clear of Unix 0, "no schedule" in old heads
	maxScheduleTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// ValidScheduleTime reports whether t may be a sale's opening or closing
// time (zero means "none" and is valid).
func ValidScheduleTime(t time.Time) bool {
	return t.IsZero() || (t.After(minScheduleTime) && t.Before(maxScheduleTime))
}

type wireEvent struct {
	ID              string          `json:"id"`
	Type            Type            `json:"type"`
	V               int             `json:"v"`
	Sale            string          `json:"sale"`
	Time            time.Time       `json:"time"`
	Shopper         string          `json:"shopper,omitempty"`
	ClientRequestID string          `json:"clientRequestId,omitempty"`
	Request         string          `json:"request,omitempty"`
	Data            json.RawMessage `json:"data"`
}

type wireRequestBatch struct {
	Requests []wireEvent `json:"requests"`
}

type wireDecisionBatch struct {
	Sale      string      `json:"sale"`
	Writer    string      `json:"writer"`
	DecidedAt time.Time   `json:"decidedAt"`
	FromSeq   uint64      `json:"fromSeq,omitempty"`
	Head      Head        `json:"head"`
	Events    []wireEvent `json:"events"`
}

// newData returns a pointer to the zero payload of t, or nil for an unknown type.
func newData(t Type) any {
	switch t {
	case TypeSaleCreated:
		return new(SaleCreated)
	case TypeTokenRequested:
		return new(TokenRequested)
	case TypePurchaseRequested:
		return new(PurchaseRequested)
	case TypeTokenIssued:
		return new(TokenIssued)
	case TypeTokenDenied:
		return new(TokenDenied)
	case TypeTokenExpired:
		return new(TokenExpired)
	case TypePurchaseAccepted:
		return new(PurchaseAccepted)
	case TypePurchaseRefused:
		return new(PurchaseRefused)
	case TypeSaleUpdateRequested:
		return new(SaleUpdateRequested)
	case TypeSaleUpdated:
		return new(SaleUpdated)
	case TypeQueueJoinRequested:
		return new(QueueJoinRequested)
	case TypeQueueLeaveRequested:
		return new(QueueLeaveRequested)
	case TypeQueueSeenRequested:
		return new(QueueSeenRequested)
	case TypeQueueClaimRequested:
		return new(QueueClaimRequested)
	case TypeQueueJoined:
		return new(QueueJoined)
	case TypeQueueJoinDenied:
		return new(QueueJoinDenied)
	case TypeQueueShuffled:
		return new(QueueShuffled)
	case TypeQueueAdmitted:
		return new(QueueAdmitted)
	case TypeQueueClaimed:
		return new(QueueClaimed)
	case TypeQueueSeen:
		return new(QueueSeen)
	case TypeQueueLeft:
		return new(QueueLeft)
	case TypeQueueClosed:
		return new(QueueClosed)
	case TypeOrderAttemptFailed:
		return new(OrderAttemptFailed)
	case TypeOrderConfirmed:
		return new(OrderConfirmed)
	case TypeOrderFailed:
		return new(OrderFailed)
	case TypeOrderRequeued:
		return new(OrderRequeued)
	}
	return nil
}

func toWire(e Event) (wireEvent, error) {
	want := newData(e.Type)
	if want == nil {
		return wireEvent{}, fmt.Errorf("encode event %s: unknown type %q", e.ID, e.Type)
	}
	if !dataMatches(e.Type, want, e.Data) {
		return wireEvent{}, fmt.Errorf("encode event %s: type %s carries %T", e.ID, e.Type, e.Data)
	}
	data, err := json.Marshal(e.Data)
	if err != nil {
		return wireEvent{}, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	// An event in memory is in the current form (Decode upgrades), so it is
	// always written at the current version.
	return wireEvent{ID: e.ID, Type: e.Type, V: SchemaVersion, Sale: e.Sale, Time: e.Time, Shopper: e.Shopper,
		ClientRequestID: e.ClientRequestID, Request: e.Request, Data: data}, nil
}

// upgrade turns the payload of an older schema version into the current
// one. It is the one place that knows the history of the wire format.
func upgrade(w *wireEvent) error {
	switch w.V {
	case SchemaVersion:
		return nil
	case 2:
		// Version 3 added the sale's front policy (SaleCreated.Challenge and
		// SignedRequests), the waiting room (SaleCreated.Queue and the
		// Queue* types); a version 2 sale has none of them. (A version 2
		// reader would refuse the new fields and types: hence the bump.)
		if strings.HasPrefix(string(w.Type), "Queue") || w.Type.IsOrder() {
			return fmt.Errorf("%w: %s at version 2", ErrMalformed, w.Type)
		}
		return nil
	case 1:
		// Version 2 added SaleUpdateRequested and SaleUpdated; the events of
		// version 1 are unchanged. (A version 1 reader meeting the new
		// types had no way to know they were new: hence the bump.)
		if w.Type == TypeSaleUpdateRequested || w.Type == TypeSaleUpdated || strings.HasPrefix(string(w.Type), "Queue") || w.Type.IsOrder() {
			return fmt.Errorf("%w: %s at version 1", ErrMalformed, w.Type)
		}
		return nil // and as version 2
	default:
		return fmt.Errorf("%w: event %s of type %s has version %d, this build knows 1..%d",
			ErrUnknownVersion, w.ID, w.Type, w.V, SchemaVersion)
	}
}

func fromWire(w wireEvent) (Event, error) {
	bad := func(format string, args ...any) (Event, error) {
		return Event{}, fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	if _, err := ulid.ParseStrict(w.ID); err != nil {
		return bad("id %q is not a ULID", w.ID)
	}
	data := newData(w.Type)
	if data == nil {
		return Event{}, fmt.Errorf("%w: event %s has type %q", ErrUnknownType, w.ID, w.Type)
	}
	if err := upgrade(&w); err != nil {
		return Event{}, err
	}
	if !ValidSaleID(w.Sale) {
		return bad("event %s has invalid sale %q", w.ID, w.Sale)
	}
	if w.Time.IsZero() {
		return bad("event %s has no time", w.ID)
	}
	if w.Type.IsRequest() && w.Shopper == "" {
		return bad("request %s has no shopper", w.ID)
	}
	if !w.Type.IsRequest() && w.Type != TypeSaleCreated && !w.Type.AnswersNoRequest() && w.Request == "" {
		return bad("decision %s names no request", w.ID)
	}
	if len(w.Data) == 0 || bytes.Equal(w.Data, []byte("null")) {
		return bad("event %s has no data", w.ID)
	}
	dec := json.NewDecoder(bytes.NewReader(w.Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(data); err != nil {
		return bad("event %s data: %v", w.ID, err)
	}
	switch d := data.(type) {
	case *SaleCreated:
		if d.OpensAt.IsZero() || !ValidScheduleTime(d.OpensAt) || !ValidScheduleTime(d.ClosesAt) {
			return bad("sale event %s: opening or closing time outside 2000..2200", w.ID)
		}
		if err := d.Challenge.Check(); err != nil {
			return bad("sale event %s: %v", w.ID, err)
		}
		if err := d.Queue.Check(d.OpensAt); err != nil {
			return bad("sale event %s: %v", w.ID, err)
		}
		if w.V < 3 && (d.Challenge != nil || d.SignedRequests || d.Queue != nil) {
			return bad("sale event %s: a front policy at version %d", w.ID, w.V)
		}
	case *OrderAttemptFailed:
		if d.Attempt < 1 || d.RetryAt.IsZero() {
			return bad("order event %s: attempt %d, retryAt %v", w.ID, d.Attempt, d.RetryAt)
		}
	case *OrderConfirmed:
		if d.Attempts < 1 {
			return bad("order event %s: %d attempts", w.ID, d.Attempts)
		}
	case *OrderFailed:
		if d.Reason != OrderFailedAttempts && d.Reason != OrderFailedDeadline && d.Reason != OrderFailedRejected {
			return bad("order event %s: reason %q", w.ID, d.Reason)
		}
	case *SaleUpdated:
		if d.OpensAt.IsZero() || !ValidScheduleTime(d.OpensAt) || !ValidScheduleTime(d.ClosesAt) {
			return bad("schedule event %s: opening or closing time outside 2000..2200", w.ID)
		}
	}
	return Event{ID: w.ID, Type: w.Type, Version: SchemaVersion, Sale: w.Sale, Time: w.Time,
		Shopper: w.Shopper, ClientRequestID: w.ClientRequestID, Request: w.Request, Data: data}, nil
}

// encodeEventRef is the reference encoder of one event: encoding/json.
func encodeEventRef(e Event) ([]byte, error) {
	w, err := toWire(e)
	if err != nil {
		return nil, err
	}
	return json.Marshal(w)
}

// decodeEventRef is the reference decoder of one event: encoding/json.
func decodeEventRef(b []byte) (Event, error) {
	var w wireEvent
	if err := json.Unmarshal(b, &w); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return fromWire(w)
}

// encodeRequestsRef is the reference encoder of a request batch.
func encodeRequestsRef(rb RequestBatch) ([]byte, error) {
	w := wireRequestBatch{Requests: make([]wireEvent, len(rb.Requests))}
	for i, e := range rb.Requests {
		if !e.Type.IsRequest() {
			return nil, fmt.Errorf("encode request batch: event %s is a %s, not a request", e.ID, e.Type)
		}
		var err error
		if w.Requests[i], err = toWire(e); err != nil {
			return nil, err
		}
	}
	return json.Marshal(w)
}

// decodeRequestsRef is the reference decoder of a request batch.
func decodeRequestsRef(b []byte) (RequestBatch, error) {
	var w wireRequestBatch
	if err := json.Unmarshal(b, &w); err != nil {
		return RequestBatch{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(w.Requests) == 0 {
		return RequestBatch{}, fmt.Errorf("%w: empty request batch", ErrMalformed)
	}
	rb := RequestBatch{Requests: make([]Event, len(w.Requests))}
	for i, we := range w.Requests {
		e, err := fromWire(we)
		if err != nil {
			return RequestBatch{}, err
		}
		if !e.Type.IsRequest() {
			return RequestBatch{}, fmt.Errorf("%w: event %s in a request batch is a %s", ErrMalformed, e.ID, e.Type)
		}
		rb.Requests[i] = e
	}
	return rb, nil
}

// encodeDecisionsRef is the reference encoder of a decision batch.
func encodeDecisionsRef(db DecisionBatch) ([]byte, error) {
	w := wireDecisionBatch{Sale: db.Sale, Writer: db.Writer, DecidedAt: db.DecidedAt, FromSeq: db.FromSeq,
		Head: db.Head, Events: make([]wireEvent, len(db.Events))}
	for i, e := range db.Events {
		if e.Type.IsRequest() || e.Type == TypeSaleCreated || e.Type.IsOrder() {
			return nil, fmt.Errorf("encode decision batch: event %s is a %s, not a decision", e.ID, e.Type)
		}
		var err error
		if w.Events[i], err = toWire(e); err != nil {
			return nil, err
		}
	}
	return json.Marshal(w)
}

// decodeDecisionsRef is the reference decoder of a decision batch.
func decodeDecisionsRef(b []byte) (DecisionBatch, error) {
	var w wireDecisionBatch
	if err := json.Unmarshal(b, &w); err != nil {
		return DecisionBatch{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if !ValidSaleID(w.Sale) || w.Head.Version == 0 || w.DecidedAt.IsZero() {
		return DecisionBatch{}, fmt.Errorf("%w: decision batch lacks sale, version or time", ErrMalformed)
	}
	db := DecisionBatch{Sale: w.Sale, Writer: w.Writer, DecidedAt: w.DecidedAt, FromSeq: w.FromSeq,
		Head: w.Head, Events: make([]Event, len(w.Events))}
	for i, we := range w.Events {
		e, err := fromWire(we)
		if err != nil {
			return DecisionBatch{}, err
		}
		if e.Type.IsRequest() || e.Type == TypeSaleCreated || e.Type.IsOrder() {
			return DecisionBatch{}, fmt.Errorf("%w: event %s in a decision batch is a %s", ErrMalformed, e.ID, e.Type)
		}
		db.Events[i] = e
	}
	return db, nil
}

// IDs makes ULIDs: monotonic within a millisecond, safe for concurrent use.
type IDs struct {
	mu      sync.Mutex
	entropy *ulid.MonotonicEntropy
}

// NewIDs returns an ID source backed by crypto/rand.
func NewIDs() *IDs { return &IDs{entropy: ulid.Monotonic(rand.Reader, 0)} }

// New returns a fresh ULID stamped with t.
func (g *IDs) New(t time.Time) string {
	g.mu.Lock()
	id, err := ulid.New(ulid.Timestamp(t), g.entropy)
	g.mu.Unlock()
	if err != nil { // entropy overflow within one millisecond: fall back to fresh randomness
		id = ulid.MustNew(ulid.Timestamp(t), rand.Reader)
	}
	return id.String()
}

// DerivedID returns a ULID stamped with t whose random part is derived from
// seed. Decision events use it so that re-running the decision code yields
// byte-identical events, ids included.
func DerivedID(t time.Time, seed string) string {
	return derivedID(t, sha256.Sum256([]byte(seed)))
}

// DerivedIDOf is DerivedID(t, prefix+id) without building the seed on the
// heap: the writer derives one for each decision.
func DerivedIDOf(t time.Time, prefix, id string) string {
	var buf [96]byte
	return derivedID(t, sha256.Sum256(append(append(buf[:0], prefix...), id...)))
}

func derivedID(t time.Time, sum [sha256.Size]byte) string {
	var id ulid.ULID
	_ = id.SetTime(ulid.Timestamp(t))
	_ = id.SetEntropy(sum[:10])
	return id.String()
}

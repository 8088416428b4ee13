package events

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// The codec has two paths. The reference path (encodeEventRef,
// decodeRequestsRef, ...) is encoding/json over the wire structs: it
// defines the wire format. The fast path writes and reads the one compact
// form the reference encoder writes, by hand and without reflection; the
// moment it meets anything else (another form of the same JSON, an error, a
// payload it does not hand-code) it gives up and the whole message takes the
// reference path. So the fast path only ever has to be right about inputs
// it accepts, and the differential tests in codec_fast_test.go check that
// it is: byte-identical output, equal decoded values.

// Fallbacks to the reference path, counted so that a test notices when the
// fast path stops being taken for what our own encoder writes.
var encodeFallbacks, decodeFallbacks atomic.Uint64

// EncodeEvent writes one event.
func EncodeEvent(e Event) ([]byte, error) {
	buf := getBuf()
	defer putBuf(buf)
	if b, ok := appendEvent(*buf, &e); ok {
		*buf = b
		return clone(b), nil
	}
	encodeFallbacks.Add(1)
	return encodeEventRef(e)
}

// DecodeEvent reads one event.
func DecodeEvent(b []byte) (Event, error) {
	if e, ok := decodeEventFast(b); ok {
		return e, nil
	}
	decodeFallbacks.Add(1)
	return decodeEventRef(b)
}

// EncodeRequests writes a request batch.
func EncodeRequests(rb RequestBatch) ([]byte, error) {
	buf := getBuf()
	defer putBuf(buf)
	if b, ok := appendRequests(*buf, &rb); ok {
		*buf = b
		return clone(b), nil
	}
	encodeFallbacks.Add(1)
	return encodeRequestsRef(rb)
}

// DecodeRequests reads a request batch.
func DecodeRequests(b []byte) (RequestBatch, error) {
	if rb, ok := decodeRequestsFast(b); ok {
		return rb, nil
	}
	decodeFallbacks.Add(1)
	return decodeRequestsRef(b)
}

// EncodeDecisions writes a decision batch.
func EncodeDecisions(db DecisionBatch) ([]byte, error) {
	buf := getBuf()
	defer putBuf(buf)
	if b, ok := appendDecisions(*buf, &db); ok {
		*buf = b
		return clone(b), nil
	}
	encodeFallbacks.Add(1)
	return encodeDecisionsRef(db)
}

// DecodeDecisions reads a decision batch.
func DecodeDecisions(b []byte) (DecisionBatch, error) {
	if db, ok := decodeDecisionsFast(b); ok {
		return db, nil
	}
	decodeFallbacks.Add(1)
	return decodeDecisionsRef(b)
}

// dataMatches reports whether data is of the payload type of t, want being
// newData(t): whether fmt.Sprintf("%T") names the same type for both, which
// is what the codec has always checked. Our own payload types are told by a
// type switch; anything else (another package's type that prints the same,
// say) still gets the %T comparison, so exactly the same values pass.
func dataMatches(t Type, want, data any) bool {
	switch data.(type) {
	case *SaleCreated:
		return t == TypeSaleCreated
	case *TokenRequested:
		return t == TypeTokenRequested
	case *PurchaseRequested:
		return t == TypePurchaseRequested
	case *TokenIssued:
		return t == TypeTokenIssued
	case *TokenDenied:
		return t == TypeTokenDenied
	case *TokenExpired:
		return t == TypeTokenExpired
	case *PurchaseAccepted:
		return t == TypePurchaseAccepted
	case *PurchaseRefused:
		return t == TypePurchaseRefused
	case *SaleUpdateRequested:
		return t == TypeSaleUpdateRequested
	case *SaleUpdated:
		return t == TypeSaleUpdated
	case *QueueJoinRequested:
		return t == TypeQueueJoinRequested
	case *QueueLeaveRequested:
		return t == TypeQueueLeaveRequested
	case *QueueSeenRequested:
		return t == TypeQueueSeenRequested
	case *QueueClaimRequested:
		return t == TypeQueueClaimRequested
	case *QueueJoined:
		return t == TypeQueueJoined
	case *QueueJoinDenied:
		return t == TypeQueueJoinDenied
	case *QueueShuffled:
		return t == TypeQueueShuffled
	case *QueueAdmitted:
		return t == TypeQueueAdmitted
	case *QueueClaimed:
		return t == TypeQueueClaimed
	case *QueueSeen:
		return t == TypeQueueSeen
	case *QueueLeft:
		return t == TypeQueueLeft
	case *QueueClosed:
		return t == TypeQueueClosed
	case *OrderAttemptFailed:
		return t == TypeOrderAttemptFailed
	case *OrderConfirmed:
		return t == TypeOrderConfirmed
	case *OrderFailed:
		return t == TypeOrderFailed
	case *OrderRequeued:
		return t == TypeOrderRequeued
	}
	return fmt.Sprintf("%T", want) == fmt.Sprintf("%T", data)
}

// Scratch buffers of the encoder. The result is copied out at its exact
// size; a buffer that grew past maxPooledBuf is not kept.
const maxPooledBuf = 1 << 20

var encodeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func getBuf() *[]byte { return encodeBufs.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > maxPooledBuf {
		return
	}
	*b = (*b)[:0]
	encodeBufs.Put(b)
}

// clone copies b out of the scratch buffer. (Appending to nil lets the
// runtime skip zeroing the memory the copy overwrites.)
func clone(b []byte) []byte { return append([]byte(nil), b...) }

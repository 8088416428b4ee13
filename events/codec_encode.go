package events

import (
	"strconv"
	"time"

	"github.com/flashgate/flashgate/internal/jsonstr"
)

// The fast encoder writes what json.Marshal writes for the wire structs of
// codec.go, field by field in their order, with their omitempty and
// omitzero. Each append* returns false where the reference encoder would
// fail or where it does not hand-code the value (SaleCreated, a nil
// payload, a time MarshalJSON refuses); the caller then encodes the whole
// message with the reference encoder.

func appendRequests(b []byte, rb *RequestBatch) ([]byte, bool) {
	b = append(b, `{"requests":[`...)
	for i := range rb.Requests {
		e := &rb.Requests[i]
		if !e.Type.IsRequest() {
			return b, false
		}
		if i > 0 {
			b = append(b, ',')
		}
		var ok bool
		if b, ok = appendEvent(b, e); !ok {
			return b, false
		}
	}
	return append(b, "]}"...), true
}

func appendDecisions(b []byte, db *DecisionBatch) ([]byte, bool) {
	var ok bool
	b = append(b, `{"sale":`...)
	b = jsonstr.Append(b, db.Sale)
	b = append(b, `,"writer":`...)
	b = jsonstr.Append(b, db.Writer)
	b = append(b, `,"decidedAt":`...)
	if b, ok = appendTime(b, db.DecidedAt); !ok {
		return b, false
	}
	if db.FromSeq != 0 {
		b = append(b, `,"fromSeq":`...)
		b = strconv.AppendUint(b, db.FromSeq, 10)
	}
	b = append(b, `,"head":`...)
	b = appendHead(b, &db.Head)
	b = append(b, `,"events":[`...)
	for i := range db.Events {
		e := &db.Events[i]
		if e.Type.IsRequest() || e.Type == TypeSaleCreated {
			return b, false
		}
		if i > 0 {
			b = append(b, ',')
		}
		if b, ok = appendEvent(b, e); !ok {
			return b, false
		}
	}
	return append(b, "]}"...), true
}

func appendHead(b []byte, h *Head) []byte {
	b = append(b, `{"version":`...)
	b = strconv.AppendUint(b, h.Version, 10)
	b = append(b, `,"cursor":`...)
	b = strconv.AppendUint(b, h.Cursor, 10)
	b = append(b, `,"stock":`...)
	b = strconv.AppendInt(b, h.Stock, 10)
	b = append(b, `,"quota":`...)
	b = strconv.AppendInt(b, h.Quota, 10)
	b = append(b, `,"issued":`...)
	b = strconv.AppendInt(b, h.Issued, 10)
	b = append(b, `,"expired":`...)
	b = strconv.AppendInt(b, h.Expired, 10)
	b = append(b, `,"redeemed":`...)
	b = strconv.AppendInt(b, h.Redeemed, 10)
	b = append(b, `,"opensAtNs":`...)
	b = strconv.AppendInt(b, h.OpensAtNs, 10)
	if h.ClosesAtNs != 0 {
		b = append(b, `,"closesAtNs":`...)
		b = strconv.AppendInt(b, h.ClosesAtNs, 10)
	}
	return append(b, '}')
}

// appendEvent writes e as toWire and json.Marshal would (wireEvent).
func appendEvent(b []byte, e *Event) ([]byte, bool) {
	var ok bool
	b = append(b, `{"id":`...)
	b = jsonstr.Append(b, e.ID)
	b = append(b, `,"type":`...)
	b = jsonstr.Append(b, string(e.Type))
	b = append(b, `,"v":`...)
	b = strconv.AppendInt(b, SchemaVersion, 10)
	b = append(b, `,"sale":`...)
	b = jsonstr.Append(b, e.Sale)
	b = append(b, `,"time":`...)
	if b, ok = appendTime(b, e.Time); !ok {
		return b, false
	}
	if e.Shopper != "" {
		b = append(b, `,"shopper":`...)
		b = jsonstr.Append(b, e.Shopper)
	}
	if e.ClientRequestID != "" {
		b = append(b, `,"clientRequestId":`...)
		b = jsonstr.Append(b, e.ClientRequestID)
	}
	if e.Request != "" {
		b = append(b, `,"request":`...)
		b = jsonstr.Append(b, e.Request)
	}
	b = append(b, `,"data":`...)
	if b, ok = appendData(b, e.Type, e.Data); !ok {
		return b, false
	}
	return append(b, '}'), true
}

// appendData writes a payload as json.Marshal would, if data is a non-nil
// pointer to the payload type of t and not a SaleCreated (whose floats,
// durations and nested options are left to encoding/json).
func appendData(b []byte, t Type, data any) ([]byte, bool) {
	ok := true
	switch d := data.(type) {
	case *TokenRequested:
		if t != TypeTokenRequested || d == nil {
			return b, false
		}
		b = append(b, "{}"...)
	case *PurchaseRequested:
		if t != TypePurchaseRequested || d == nil {
			return b, false
		}
		b = append(b, `{"tokenId":`...)
		b = jsonstr.Append(b, d.TokenID)
		b = append(b, '}')
	case *TokenIssued:
		if t != TypeTokenIssued || d == nil {
			return b, false
		}
		b = append(b, `{"tokenId":`...)
		b = jsonstr.Append(b, d.TokenID)
		b = append(b, `,"issuedAt":`...)
		if b, ok = appendTime(b, d.IssuedAt); !ok {
			return b, false
		}
		b = append(b, `,"expiresAt":`...)
		if b, ok = appendTime(b, d.ExpiresAt); !ok {
			return b, false
		}
		if d.AlreadyIssued {
			b = append(b, `,"alreadyIssued":true`...)
		}
		b = append(b, '}')
	case *TokenDenied:
		if t != TypeTokenDenied || d == nil {
			return b, false
		}
		b = append(b, `{"reason":`...)
		b = jsonstr.Append(b, d.Reason)
		b = append(b, '}')
	case *TokenExpired:
		if t != TypeTokenExpired || d == nil {
			return b, false
		}
		b = append(b, `{"tokenId":`...)
		b = jsonstr.Append(b, d.TokenID)
		b = append(b, `,"expiresAt":`...)
		if b, ok = appendTime(b, d.ExpiresAt); !ok {
			return b, false
		}
		b = append(b, '}')
	case *PurchaseAccepted:
		if t != TypePurchaseAccepted || d == nil {
			return b, false
		}
		b = append(b, `{"tokenId":`...)
		b = jsonstr.Append(b, d.TokenID)
		b = append(b, `,"orderId":`...)
		b = jsonstr.Append(b, d.OrderID)
		b = append(b, `,"units":`...)
		b = strconv.AppendInt(b, d.Units, 10)
		b = append(b, '}')
	case *PurchaseRefused:
		if t != TypePurchaseRefused || d == nil {
			return b, false
		}
		b = append(b, `{"tokenId":`...)
		b = jsonstr.Append(b, d.TokenID)
		b = append(b, `,"reason":`...)
		b = jsonstr.Append(b, d.Reason)
		if d.OrderID != "" {
			b = append(b, `,"orderId":`...)
			b = jsonstr.Append(b, d.OrderID)
		}
		b = append(b, '}')
	case *SaleUpdateRequested:
		if t != TypeSaleUpdateRequested || d == nil {
			return b, false
		}
		b = append(b, `{"action":`...)
		b = jsonstr.Append(b, d.Action)
		b = append(b, '}')
	case *SaleUpdated:
		if t != TypeSaleUpdated || d == nil {
			return b, false
		}
		b = append(b, `{"opensAt":`...)
		if b, ok = appendTime(b, d.OpensAt); !ok {
			return b, false
		}
		if !d.ClosesAt.IsZero() { // omitzero calls IsZero
			b = append(b, `,"closesAt":`...)
			if b, ok = appendTime(b, d.ClosesAt); !ok {
				return b, false
			}
		}
		b = append(b, '}')
	case *QueueJoinRequested:
		if t != TypeQueueJoinRequested || d == nil {
			return b, false
		}
		b = append(b, "{}"...)
	case *QueueLeaveRequested:
		if t != TypeQueueLeaveRequested || d == nil {
			return b, false
		}
		b = appendTicket(b, d.Ticket)
	case *QueueSeenRequested:
		if t != TypeQueueSeenRequested || d == nil {
			return b, false
		}
		b = appendTickets(b, d.Tickets)
	case *QueueClaimRequested:
		if t != TypeQueueClaimRequested || d == nil {
			return b, false
		}
		b = appendTicket(b, d.Ticket)
	case *QueueJoined:
		if t != TypeQueueJoined || d == nil {
			return b, false
		}
		b = append(b, `{"ticket":`...)
		b = jsonstr.Append(b, d.Ticket)
		b = append(b, `,"place":`...)
		b = strconv.AppendInt(b, d.Place, 10)
		if d.PreIndex != 0 {
			b = append(b, `,"preIndex":`...)
			b = strconv.AppendInt(b, d.PreIndex, 10)
		}
		if d.Already {
			b = append(b, `,"already":true`...)
		}
		b = append(b, '}')
	case *QueueJoinDenied:
		if t != TypeQueueJoinDenied || d == nil {
			return b, false
		}
		b = appendReason(b, d.Reason)
	case *QueueShuffled:
		if t != TypeQueueShuffled || d == nil {
			return b, false
		}
		b = append(b, `{"seed":`...)
		b = strconv.AppendUint(b, d.Seed, 10)
		b = append(b, `,"preQueue":`...)
		b = strconv.AppendInt(b, d.PreQueue, 10)
		b = append(b, '}')
	case *QueueAdmitted:
		if t != TypeQueueAdmitted || d == nil {
			return b, false
		}
		b = append(b, `{"ticket":`...)
		b = jsonstr.Append(b, d.Ticket)
		b = append(b, `,"place":`...)
		b = strconv.AppendInt(b, d.Place, 10)
		b = append(b, `,"tokenId":`...)
		b = jsonstr.Append(b, d.TokenID)
		b = append(b, `,"claimBy":`...)
		if b, ok = appendTime(b, d.ClaimBy); !ok {
			return b, false
		}
		b = append(b, '}')
	case *QueueClaimed:
		if t != TypeQueueClaimed || d == nil {
			return b, false
		}
		b = appendTicket(b, d.Ticket)
	case *QueueSeen:
		if t != TypeQueueSeen || d == nil {
			return b, false
		}
		b = appendTickets(b, d.Tickets)
	case *QueueLeft:
		if t != TypeQueueLeft || d == nil {
			return b, false
		}
		b = append(b, `{"ticket":`...)
		b = jsonstr.Append(b, d.Ticket)
		b = append(b, `,"reason":`...)
		b = jsonstr.Append(b, d.Reason)
		b = append(b, '}')
	case *QueueClosed:
		if t != TypeQueueClosed || d == nil {
			return b, false
		}
		b = appendReason(b, d.Reason)
	default:
		return b, false
	}
	return b, true
}

func appendTicket(b []byte, ticket string) []byte {
	b = append(b, `{"ticket":`...)
	b = jsonstr.Append(b, ticket)
	return append(b, '}')
}

func appendReason(b []byte, reason string) []byte {
	b = append(b, `{"reason":`...)
	b = jsonstr.Append(b, reason)
	return append(b, '}')
}

// appendTickets writes {"tickets":[...]}; a nil slice is null, as
// encoding/json writes it.
func appendTickets(b []byte, tickets []string) []byte {
	b = append(b, `{"tickets":`...)
	if tickets == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, s := range tickets {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonstr.Append(b, s)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// appendTime writes t as time.Time.MarshalJSON does: AppendFormat with
// RFC3339Nano is the same appendFormatRFC3339(b, true) that MarshalJSON
// calls, followed here by the same two checks its appendStrictRFC3339 makes.
// Where those checks fail MarshalJSON returns an error: false, so that the
// reference encoder returns it.
func appendTime(b []byte, t time.Time) ([]byte, bool) {
	b = append(b, '"')
	n0 := len(b)
	b = t.AppendFormat(b, time.RFC3339Nano)
	num2 := func(b []byte) byte { return 10*(b[0]-'0') + (b[1] - '0') }
	switch {
	case b[n0+len("9999")] != '-': // year must be exactly 4 digits wide
		return b, false
	case b[len(b)-1] != 'Z':
		c := b[len(b)-len("Z07:00")]
		if ('0' <= c && c <= '9') || num2(b[len(b)-len("07:00"):]) >= 24 {
			return b, false
		}
	}
	return append(b, '"'), true
}

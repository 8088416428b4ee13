// Package eventlog reads flashgate's event stream as a flat list of events:
// request and decision batches are opened up, so that every event is one
// Record with its position (the stream sequence of its message and its index
// inside it). It holds the logic behind `flashgate events tail` and
// `flashgate events export`: a Reader that yields the records a filter
// selects from a jetstream.Stream, and Writers for JSON lines, CSV and text.
package eventlog

import (
	"fmt"
	"strings"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/nats-io/nats.go/jetstream"
)

// TypeUndecodable is the type of the record that stands for a message that
// does not decode. It is not an event type: no such event is ever written.
const TypeUndecodable events.Type = "undecodable"

// Types lists the event types, in the order a sale's life meets them.
var Types = []events.Type{
	events.TypeSaleCreated,
	events.TypeTokenRequested,
	events.TypeTokenIssued,
	events.TypeTokenDenied,
	events.TypeTokenExpired,
	events.TypePurchaseRequested,
	events.TypePurchaseAccepted,
	events.TypePurchaseRefused,
	events.TypeSaleUpdateRequested,
	events.TypeSaleUpdated,
	events.TypeQueueJoinRequested,
	events.TypeQueueJoined,
	events.TypeQueueJoinDenied,
	events.TypeQueueShuffled,
	events.TypeQueueSeenRequested,
	events.TypeQueueSeen,
	events.TypeQueueAdmitted,
	events.TypeQueueClaimRequested,
	events.TypeQueueClaimed,
	events.TypeQueueLeaveRequested,
	events.TypeQueueLeft,
	events.TypeQueueClosed,
	events.TypeOrderAttemptFailed,
	events.TypeOrderConfirmed,
	events.TypeOrderFailed,
	events.TypeOrderRequeued,
}

// Record is one event and where it is stored. A message that does not decode
// is one Record with Err set, Raw its payload and Event zero.
type Record struct {
	Seq     uint64       // stream sequence of the message holding the event
	Idx     int          // index of the event inside its message (0 for a sale's event)
	Subject string       // subject of the message
	Stored  time.Time    // when the stream stored the message
	Event   events.Event // the event (zero when Err is set)
	Batch   uint64       // decisions: the version of their batch (0 otherwise)
	Writer  string       // decisions: the writer incarnation that committed the batch
	Err     error        // the message did not decode
	Raw     []byte       // the payload of a message that did not decode
}

// Type is the event's type, or TypeUndecodable.
func (r Record) Type() events.Type {
	if r.Err != nil {
		return TypeUndecodable
	}
	return r.Event.Type
}

// Sale is the event's sale; for a message that does not decode, the sale its
// subject names ("" if none).
func (r Record) Sale() string {
	if r.Err == nil {
		return r.Event.Sale
	}
	s, _ := events.SaleOfSubject(r.Subject)
	return s
}

// Flatten decodes one stream message into its records, in order: a sale's
// event, the requests of a request batch, the decisions of a decision batch,
// or an order's outcome. A message that does not decode is one record with
// Err set. A decision batch with no events yields nothing.
func Flatten(m *jetstream.RawStreamMsg) []Record {
	bad := func(err error) []Record {
		return []Record{{Seq: m.Sequence, Subject: m.Subject, Stored: m.Time, Err: err, Raw: m.Data}}
	}
	switch {
	case strings.HasPrefix(m.Subject, events.SubjectSalePfx):
		e, err := events.DecodeEvent(m.Data)
		if err != nil {
			return bad(err)
		}
		if e.Type != events.TypeSaleCreated {
			return bad(fmt.Errorf("%w: %s on a sale subject", events.ErrMalformed, e.Type))
		}
		return []Record{{Seq: m.Sequence, Subject: m.Subject, Stored: m.Time, Event: e}}
	case strings.HasPrefix(m.Subject, events.SubjectReqPfx):
		rb, err := events.DecodeRequests(m.Data)
		if err != nil {
			return bad(err)
		}
		recs := make([]Record, len(rb.Requests))
		for i, e := range rb.Requests {
			recs[i] = Record{Seq: m.Sequence, Idx: i, Subject: m.Subject, Stored: m.Time, Event: e}
		}
		return recs
	case strings.HasPrefix(m.Subject, events.SubjectDecPfx):
		db, err := events.DecodeDecisions(m.Data)
		if err != nil {
			return bad(err)
		}
		recs := make([]Record, len(db.Events))
		for i, e := range db.Events {
			recs[i] = Record{Seq: m.Sequence, Idx: i, Subject: m.Subject, Stored: m.Time, Event: e,
				Batch: db.Head.Version, Writer: db.Writer}
		}
		return recs
	case strings.HasPrefix(m.Subject, events.SubjectOrdPfx):
		e, err := events.DecodeEvent(m.Data)
		if err != nil {
			return bad(err)
		}
		if !e.Type.IsOrder() || m.Subject != events.OrderSubject(e.Sale, e.Request) {
			return bad(fmt.Errorf("%w: %s of %s on %s", events.ErrMalformed, e.Type, e.Request, m.Subject))
		}
		return []Record{{Seq: m.Sequence, Subject: m.Subject, Stored: m.Time, Event: e}}
	}
	return bad(fmt.Errorf("%w: subject %s is not flashgate's", events.ErrMalformed, m.Subject))
}

// ParseTypes reads --type values: each a type name or a comma-separated list
// of them, matched without regard to case. TypeUndecodable is accepted too.
// An unknown name is an error that lists the valid ones.
func ParseTypes(vals []string) ([]events.Type, error) {
	var out []events.Type
	seen := map[events.Type]bool{}
	for _, v := range vals {
		for name := range strings.SplitSeq(v, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			t, ok := lookupType(name)
			if !ok {
				valid := make([]string, 0, len(Types)+1)
				for _, t := range Types {
					valid = append(valid, string(t))
				}
				valid = append(valid, string(TypeUndecodable))
				return nil, fmt.Errorf("unknown event type %q (valid: %s)", name, strings.Join(valid, ", "))
			}
			if !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		}
	}
	return out, nil
}

func lookupType(name string) (events.Type, bool) {
	for _, t := range append(Types[:len(Types):len(Types)], TypeUndecodable) {
		if strings.EqualFold(name, string(t)) {
			return t, true
		}
	}
	return "", false
}

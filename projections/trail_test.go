package projections

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
)

// TestAppendEventIsEncodeEvent wants appendEvent to write every event of
// the test workloads, and events with strings and times encoding/json
// treats specially, as events.EncodeEvent does, or to decline.
func TestAppendEventIsEncodeEvent(t *testing.T) {
	var (
		evs   []events.Event
		plain int // the events of benchWorkload, which appendEvent must write
	)
	msgs, _ := benchWorkload(t, 2)
	for i, m := range append(msgs, anomalyWorkload(t)...) {
		if i == len(msgs) {
			plain = len(evs)
		}
		switch {
		case strings.HasPrefix(m.Subject, events.SubjectReqPfx):
			if rb, err := events.DecodeRequests(m.Data); err == nil {
				evs = append(evs, rb.Requests...)
			}
		case strings.HasPrefix(m.Subject, events.SubjectDecPfx):
			if db, err := events.DecodeDecisions(m.Data); err == nil {
				evs = append(evs, db.Events...)
			}
		default:
			if e, err := events.DecodeEvent(m.Data); err == nil {
				evs = append(evs, e)
			}
		}
	}
	s := newSale("s9")
	for _, shopper := range []string{"<b>", "a&b", `q"q`, `back\slash`, "tab\t", "ünï", "line\u2028sep", "\x7f"} {
		evs = append(evs, s.tokenReq(shopper))
	}
	for _, tm := range []time.Time{
		time.Date(2030, 1, 2, 3, 4, 5, 600, time.FixedZone("", 5*3600+1800)),
		time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("", -23*3600-59*60)),
		time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("", 24*3600)),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		{},
	} {
		e := s.tokenReq("tm")
		e.Time = tm
		evs = append(evs, e)
	}
	for i, e := range evs {
		want, err := events.EncodeEvent(e)
		got, ok := appendEvent([]byte("x"), e)
		switch {
		case !ok && i < plain:
			t.Errorf("appendEvent declined %s %s", e.Type, e.ID)
		case !ok:
		case err != nil:
			t.Errorf("appendEvent wrote %s, EncodeEvent fails: %v", got, err)
		case !bytes.Equal(got, append([]byte("x"), want...)):
			t.Errorf("appendEvent wrote\n%s\nEncodeEvent\n%s", got[1:], want)
		}
	}
}

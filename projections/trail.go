package projections

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/flashgate/flashgate/events"
)

// appendEvent appends e as events.EncodeEvent writes it, the body of its
// audit trail row, and reports whether it could. It writes the envelope
// itself and leaves only the payload to encoding/json, which is most of the
// cost of EncodeEvent saved; for what it does not write exactly as
// encoding/json would (a string to escape, a time outside RFC 3339) it
// reports false, and the caller uses EncodeEvent.
func appendEvent(b []byte, e events.Event) ([]byte, bool) {
	if !plain(e.ID) || !plain(string(e.Type)) || !plain(e.Sale) || !plain(e.Shopper) ||
		!plain(e.ClientRequestID) || !plain(e.Request) {
		return b, false
	}
	data, err := json.Marshal(e.Data)
	if err != nil {
		return b, false
	}
	b = append(b, `{"id":"`...)
	b = append(b, e.ID...)
	b = append(b, `","type":"`...)
	b = append(b, e.Type...)
	b = append(b, `","v":`...)
	b = strconv.AppendInt(b, events.SchemaVersion, 10)
	b = append(b, `,"sale":"`...)
	b = append(b, e.Sale...)
	b = append(b, `","time":"`...)
	var ok bool
	if b, ok = appendTime(b, e.Time); !ok {
		return b, false
	}
	b = append(b, '"')
	for _, f := range [...]struct{ key, val string }{
		{`,"shopper":"`, e.Shopper}, {`,"clientRequestId":"`, e.ClientRequestID}, {`,"request":"`, e.Request},
	} {
		if f.val != "" {
			b = append(b, f.key...)
			b = append(b, f.val...)
			b = append(b, '"')
		}
	}
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}'), true
}

// plain reports whether encoding/json writes s as it is, between quotes.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// appendTime appends t as time.Time.MarshalJSON writes it, without the
// quotes, and reports false where MarshalJSON fails: a year of other than
// four digits, a zone offset of 24 hours or more.
func appendTime(b []byte, t time.Time) ([]byte, bool) {
	if y := t.Year(); y < 0 || y > 9999 {
		return b, false
	}
	if _, off := t.Zone(); off <= -24*60*60 || off >= 24*60*60 {
		return b, false
	}
	return t.AppendFormat(b, time.RFC3339Nano), true
}

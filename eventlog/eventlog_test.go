package eventlog_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/eventlog"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/fgtest"
	"github.com/nats-io/nats.go/jetstream"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// header is the CSV header, written out here so that a change of the
// columns is a change of this test.
var header = []string{"seq", "idx", "time", "sale", "type", "id", "shopper", "request", "token_id", "order_id",
	"reason", "already_issued", "expires_at", "client_request_id", "batch", "writer",
	"subject", "stored", "units", "data", "error"}

// row is one expected record: its CSV fields by column (unnamed ones are
// empty) and its JSON line.
type row struct {
	csv  map[string]string
	json string
}

func (r row) fields() []string {
	out := make([]string, len(header))
	for i, c := range header {
		out[i] = r.csv[c]
	}
	return out
}

// fixture is a stream with two sales, their requests and decisions, and one
// message that does not decode, and the rows an export of it must give.
type fixture struct {
	env  *fgtest.Env
	rows []row
}

func publish(t *testing.T, env *fgtest.Env, subject string, data []byte) (seq uint64, stored string) {
	t.Helper()
	ctx := context.Background()
	ack, err := env.JS.Publish(ctx, subject, data)
	if err != nil {
		t.Fatal(err)
	}
	m, err := env.Stream.GetMsg(ctx, ack.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence, m.Time.UTC().Format(time.RFC3339Nano)
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	env := fgtest.New(t)
	f := &fixture{env: env}
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ids := events.NewIDs()
	t1, t2 := t0.Add(time.Second), t0.Add(2*time.Second)
	exp := t0.Add(5 * time.Minute)
	ts := func(t time.Time) string { return t.Format(time.RFC3339Nano) }

	// 1, 2: the sales.
	for _, sale := range []string{"a", "b"} {
		e := events.Event{ID: ids.New(t0), Type: events.TypeSaleCreated, Version: events.SchemaVersion, Sale: sale, Time: t0,
			Data: &events.SaleCreated{Stock: 10, QuotaBuffer: 1.2, Quota: 12, PerUserLimit: 1,
				TokenTTL: events.Duration(5 * time.Minute), OpensAt: t0}}
		seq, stored := publish(t, env, events.SaleSubject(sale), must(events.EncodeEvent(e)))
		data := `{"stock":10,"quotaBuffer":1.2,"quota":12,"perUserLimit":1,"tokenTTL":"5m0s","opensAt":"2026-05-01T12:00:00Z"}`
		f.rows = append(f.rows, row{
			csv: map[string]string{"seq": fmt.Sprint(seq), "idx": "0", "time": ts(t0), "sale": sale, "type": "SaleCreated",
				"id": e.ID, "subject": "fg.sale." + sale, "stored": stored, "data": data},
			json: fmt.Sprintf(`{"seq":%d,"idx":0,"subject":"fg.sale.%s","stored":%q,"id":%q,"type":"SaleCreated","v":3,"sale":%q,"time":%q,"data":%s}`,
				seq, sale, stored, e.ID, sale, ts(t0), data),
		})
	}

	// 3: two token requests for a, the second with an idempotency key.
	r1 := events.Event{ID: ids.New(t1), Type: events.TypeTokenRequested, Version: events.SchemaVersion, Sale: "a", Time: t1, Shopper: "s1", Data: &events.TokenRequested{}}
	r2 := events.Event{ID: ids.New(t1), Type: events.TypeTokenRequested, Version: events.SchemaVersion, Sale: "a", Time: t1, Shopper: "s2",
		ClientRequestID: `key "1", quoted`, Data: &events.TokenRequested{}}
	seq, stored := publish(t, env, events.RequestSubject("a"), must(events.EncodeRequests(events.RequestBatch{Requests: []events.Event{r1, r2}})))
	f.rows = append(f.rows,
		row{csv: map[string]string{"seq": fmt.Sprint(seq), "idx": "0", "time": ts(t1), "sale": "a", "type": "TokenRequested",
			"id": r1.ID, "shopper": "s1", "subject": "fg.req.a", "stored": stored, "data": "{}"},
			json: fmt.Sprintf(`{"seq":%d,"idx":0,"subject":"fg.req.a","stored":%q,"id":%q,"type":"TokenRequested","v":3,"sale":"a","time":%q,"shopper":"s1","data":{}}`,
				seq, stored, r1.ID, ts(t1))},
		row{csv: map[string]string{"seq": fmt.Sprint(seq), "idx": "1", "time": ts(t1), "sale": "a", "type": "TokenRequested",
			"id": r2.ID, "shopper": "s2", "client_request_id": `key "1", quoted`, "subject": "fg.req.a", "stored": stored, "data": "{}"},
			json: fmt.Sprintf(`{"seq":%d,"idx":1,"subject":"fg.req.a","stored":%q,"id":%q,"type":"TokenRequested","v":3,"sale":"a","time":%q,"shopper":"s2","clientRequestId":"key \"1\", quoted","data":{}}`,
				seq, stored, r2.ID, ts(t1))},
	)

	// 4: a token request for b.
	r3 := events.Event{ID: ids.New(t1), Type: events.TypeTokenRequested, Version: events.SchemaVersion, Sale: "b", Time: t1, Shopper: "s3", Data: &events.TokenRequested{}}
	seq, stored = publish(t, env, events.RequestSubject("b"), must(events.EncodeRequests(events.RequestBatch{Requests: []events.Event{r3}})))
	f.rows = append(f.rows, row{csv: map[string]string{"seq": fmt.Sprint(seq), "idx": "0", "time": ts(t1), "sale": "b", "type": "TokenRequested",
		"id": r3.ID, "shopper": "s3", "subject": "fg.req.b", "stored": stored, "data": "{}"},
		json: fmt.Sprintf(`{"seq":%d,"idx":0,"subject":"fg.req.b","stored":%q,"id":%q,"type":"TokenRequested","v":3,"sale":"b","time":%q,"shopper":"s3","data":{}}`,
			seq, stored, r3.ID, ts(t1))})

	// 5: a's first decision batch: s1 gets a token, s2 is refused.
	d1 := events.Event{ID: events.DerivedID(t2, "d1"), Type: events.TypeTokenIssued, Version: events.SchemaVersion, Sale: "a", Time: t2, Shopper: "s1", Request: r1.ID,
		Data: &events.TokenIssued{TokenID: r1.ID, IssuedAt: t2, ExpiresAt: exp}}
	d2 := events.Event{ID: events.DerivedID(t2, "d2"), Type: events.TypeTokenDenied, Version: events.SchemaVersion, Sale: "a", Time: t2, Shopper: "s2", Request: r2.ID,
		Data: &events.TokenDenied{Reason: events.ReasonQuotaExhausted}}
	seq, stored = publish(t, env, events.DecisionSubject("a"), must(events.EncodeDecisions(events.DecisionBatch{
		Sale: "a", Writer: "node-1/1", DecidedAt: t2, FromSeq: 3, Head: events.Head{Version: 1, Cursor: 3, Stock: 10, Quota: 12, Issued: 1},
		Events: []events.Event{d1, d2}})))
	issued := fmt.Sprintf(`{"tokenId":%q,"issuedAt":%q,"expiresAt":%q}`, r1.ID, ts(t2), ts(exp))
	f.rows = append(f.rows,
		row{csv: map[string]string{"seq": fmt.Sprint(seq), "idx": "0", "time": ts(t2), "sale": "a", "type": "TokenIssued",
			"id": d1.ID, "shopper": "s1", "request": r1.ID, "token_id": r1.ID, "already_issued": "false", "expires_at": ts(exp),
			"batch": "1", "writer": "node-1/1", "subject": "fg.dec.a", "stored": stored, "data": issued},
			json: fmt.Sprintf(`{"seq":%d,"idx":0,"subject":"fg.dec.a","stored":%q,"batch":1,"writer":"node-1/1","id":%q,"type":"TokenIssued","v":3,"sale":"a","time":%q,"shopper":"s1","request":%q,"data":%s}`,
				seq, stored, d1.ID, ts(t2), r1.ID, issued)},
		row{csv: map[string]string{"seq": fmt.Sprint(seq), "idx": "1", "time": ts(t2), "sale": "a", "type": "TokenDenied",
			"id": d2.ID, "shopper": "s2", "request": r2.ID, "reason": "quota_exhausted",
			"batch": "1", "writer": "node-1/1", "subject": "fg.dec.a", "stored": stored, "data": `{"reason":"quota_exhausted"}`},
			json: fmt.Sprintf(`{"seq":%d,"idx":1,"subject":"fg.dec.a","stored":%q,"batch":1,"writer":"node-1/1","id":%q,"type":"TokenDenied","v":3,"sale":"a","time":%q,"shopper":"s2","request":%q,"data":{"reason":"quota_exhausted"}}`,
				seq, stored, d2.ID, ts(t2), r2.ID)},
	)

	// 6: s1 buys with its token.
	p1 := events.Event{ID: ids.New(t2), Type: events.TypePurchaseRequested, Version: events.SchemaVersion, Sale: "a", Time: t2, Shopper: "s1",
		Data: &events.PurchaseRequested{TokenID: r1.ID}}
	seq, stored = publish(t, env, events.RequestSubject("a"), must(events.EncodeRequests(events.RequestBatch{Requests: []events.Event{p1}})))
	f.rows = append(f.rows, row{csv: map[string]string{"seq": fmt.Sprint(seq), "idx": "0", "time": ts(t2), "sale": "a", "type": "PurchaseRequested",
		"id": p1.ID, "shopper": "s1", "token_id": r1.ID, "subject": "fg.req.a", "stored": stored, "data": fmt.Sprintf(`{"tokenId":%q}`, r1.ID)},
		json: fmt.Sprintf(`{"seq":%d,"idx":0,"subject":"fg.req.a","stored":%q,"id":%q,"type":"PurchaseRequested","v":3,"sale":"a","time":%q,"shopper":"s1","data":{"tokenId":%q}}`,
			seq, stored, p1.ID, ts(t2), r1.ID)})

	// 7: b's first batch of the day is a token of someone expiring; then a's
	// second batch accepts the purchase.
	x1 := events.Event{ID: events.DerivedID(t2, "x1"), Type: events.TypeTokenExpired, Version: events.SchemaVersion, Sale: "a", Time: t2, Shopper: "s0",
		Data: &events.TokenExpired{TokenID: "tok-0", ExpiresAt: t1}}
	a1 := events.Event{ID: events.DerivedID(t2, "a1"), Type: events.TypePurchaseAccepted, Version: events.SchemaVersion, Sale: "a", Time: t2, Shopper: "s1", Request: p1.ID,
		Data: &events.PurchaseAccepted{TokenID: r1.ID, OrderID: p1.ID, Units: 1}}
	seq, stored = publish(t, env, events.DecisionSubject("a"), must(events.EncodeDecisions(events.DecisionBatch{
		Sale: "a", Writer: "node-2/7", DecidedAt: t2, FromSeq: 6, Head: events.Head{Version: 2, Cursor: 6, Stock: 10, Quota: 12, Issued: 1, Expired: 1, Redeemed: 1},
		Events: []events.Event{x1, a1}})))
	accepted := fmt.Sprintf(`{"tokenId":%q,"orderId":%q,"units":1}`, r1.ID, p1.ID)
	f.rows = append(f.rows,
		row{csv: map[string]string{"seq": fmt.Sprint(seq), "idx": "0", "time": ts(t2), "sale": "a", "type": "TokenExpired",
			"id": x1.ID, "shopper": "s0", "token_id": "tok-0", "expires_at": ts(t1),
			"batch": "2", "writer": "node-2/7", "subject": "fg.dec.a", "stored": stored, "data": fmt.Sprintf(`{"tokenId":"tok-0","expiresAt":%q}`, ts(t1))},
			json: fmt.Sprintf(`{"seq":%d,"idx":0,"subject":"fg.dec.a","stored":%q,"batch":2,"writer":"node-2/7","id":%q,"type":"TokenExpired","v":3,"sale":"a","time":%q,"shopper":"s0","data":{"tokenId":"tok-0","expiresAt":%q}}`,
				seq, stored, x1.ID, ts(t2), ts(t1))},
		row{csv: map[string]string{"seq": fmt.Sprint(seq), "idx": "1", "time": ts(t2), "sale": "a", "type": "PurchaseAccepted",
			"id": a1.ID, "shopper": "s1", "request": p1.ID, "token_id": r1.ID, "order_id": p1.ID, "units": "1",
			"batch": "2", "writer": "node-2/7", "subject": "fg.dec.a", "stored": stored, "data": accepted},
			json: fmt.Sprintf(`{"seq":%d,"idx":1,"subject":"fg.dec.a","stored":%q,"batch":2,"writer":"node-2/7","id":%q,"type":"PurchaseAccepted","v":3,"sale":"a","time":%q,"shopper":"s1","request":%q,"data":%s}`,
				seq, stored, a1.ID, ts(t2), p1.ID, accepted)},
	)

	// 8: something on b's decision subject that is no decision batch.
	garbage := `{"sale":"b","head":{"version":0}, "not": "a batch"}`
	seq, stored = publish(t, env, events.DecisionSubject("b"), []byte(garbage))
	f.rows = append(f.rows, row{csv: map[string]string{"seq": fmt.Sprint(seq), "idx": "0", "sale": "b", "type": "undecodable",
		"subject": "fg.dec.b", "stored": stored, "data": garbage,
		"error": "malformed event: decision batch lacks sale, version or time"},
		json: fmt.Sprintf(`{"seq":%d,"idx":0,"subject":"fg.dec.b","stored":%q,"type":"undecodable","sale":"b","error":"malformed event: decision batch lacks sale, version or time","raw":%q}`,
			seq, stored, garbage)})
	return f
}

func seq(c map[string]string) int {
	n, err := strconv.Atoi(c["seq"])
	if err != nil {
		panic(err)
	}
	return n
}

// where keeps the rows match selects.
func (f *fixture) where(match func(map[string]string) bool) []row {
	var out []row
	for _, r := range f.rows {
		if match(r.csv) {
			out = append(out, r)
		}
	}
	return out
}

// export reads with o into a fresh writer of format and returns the output.
func export(t *testing.T, env *fgtest.Env, o eventlog.Options, format string) (string, eventlog.Stats) {
	t.Helper()
	r, err := eventlog.NewReader(env.Stream, o)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := eventlog.NewWriter(format, &buf)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := r.Read(ctx, w); err != nil {
		t.Fatalf("read: %v", err)
	}
	return buf.String(), r.Stats()
}

func checkJSONL(t *testing.T, got string, want []row) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if got == "" {
		lines = nil
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), got)
	}
	for i, l := range lines {
		var g, w any
		if err := json.Unmarshal([]byte(l), &g); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, l)
		}
		if err := json.Unmarshal([]byte(want[i].json), &w); err != nil {
			t.Fatalf("expected line %d: %v: %s", i+1, err, want[i].json)
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("line %d:\n got %s\nwant %s", i+1, l, want[i].json)
		}
	}
}

func checkCSV(t *testing.T, got string, want []row) {
	t.Helper()
	recs, err := csv.NewReader(strings.NewReader(got)).ReadAll()
	if err != nil {
		t.Fatalf("CSV does not parse: %v\n%s", err, got)
	}
	if len(recs) == 0 || !reflect.DeepEqual(recs[0], header) {
		t.Fatalf("header %q, want %q", recs, header)
	}
	recs = recs[1:]
	if len(recs) != len(want) {
		t.Fatalf("%d rows, want %d:\n%s", len(recs), len(want), got)
	}
	for i, rec := range recs {
		if w := want[i].fields(); !reflect.DeepEqual(rec, w) {
			for j := range header {
				if rec[j] != w[j] {
					t.Errorf("row %d column %s: got %q, want %q", i+1, header[j], rec[j], w[j])
				}
			}
		}
	}
}

func TestExport(t *testing.T) {
	f := newFixture(t)
	all := func(map[string]string) bool { return true }
	for _, tc := range []struct {
		name  string
		o     eventlog.Options
		match func(map[string]string) bool
		stats eventlog.Stats
	}{
		{"everything", eventlog.Options{}, all,
			eventlog.Stats{Events: 11, Undecodable: 1, Messages: 8, Sales: 2, FirstSeq: 1, LastSeq: 8}},
		{"one sale", eventlog.Options{Sale: "a"}, func(c map[string]string) bool { return c["sale"] == "a" },
			eventlog.Stats{Events: 8, Messages: 5, Sales: 1, FirstSeq: 1, LastSeq: 7}},
		// The undecodable message is on a decision subject: it may have held a
		// TokenIssued, so it is shown.
		{"one type", eventlog.Options{Types: []events.Type{events.TypeTokenIssued}},
			func(c map[string]string) bool { return c["type"] == "TokenIssued" || c["type"] == "undecodable" },
			eventlog.Stats{Events: 2, Undecodable: 1, Messages: 2, Sales: 2, FirstSeq: 5, LastSeq: 8}},
		{"requests of b", eventlog.Options{Sale: "b", Types: []events.Type{events.TypeTokenRequested, events.TypePurchaseRequested}},
			func(c map[string]string) bool { return c["sale"] == "b" && strings.HasSuffix(c["type"], "Requested") },
			eventlog.Stats{Events: 1, Messages: 1, Sales: 1, FirstSeq: 4, LastSeq: 4}},
		{"from sequence 5", eventlog.Options{FromSeq: 5}, func(c map[string]string) bool { return seq(c) >= 5 },
			eventlog.Stats{Events: 6, Undecodable: 1, Messages: 4, Sales: 2, FirstSeq: 5, LastSeq: 8}},
		{"up to sequence 3", eventlog.Options{ToSeq: 3}, func(c map[string]string) bool { return seq(c) <= 3 },
			eventlog.Stats{Events: 4, Messages: 3, Sales: 2, FirstSeq: 1, LastSeq: 3}},
		{"since the future", eventlog.Options{Since: time.Now().Add(time.Hour)}, func(map[string]string) bool { return false },
			eventlog.Stats{}},
		{"since the past", eventlog.Options{Since: time.Now().Add(-time.Hour)}, all,
			eventlog.Stats{Events: 11, Undecodable: 1, Messages: 8, Sales: 2, FirstSeq: 1, LastSeq: 8}},
		// The last 3 events of a: 6.0, 7.0, 7.1.
		{"last 3 of a", eventlog.Options{Sale: "a", Last: 3}, func(c map[string]string) bool { return c["sale"] == "a" && seq(c) >= 6 },
			eventlog.Stats{Events: 3, Messages: 2, Sales: 1, FirstSeq: 6, LastSeq: 7}},
		// TokenRequested events are 3.0, 3.1 and 4.0.
		{"last 1 request", eventlog.Options{Last: 1, Types: []events.Type{events.TypeTokenRequested}},
			func(c map[string]string) bool { return seq(c) == 4 },
			eventlog.Stats{Events: 1, Messages: 1, Sales: 1, FirstSeq: 4, LastSeq: 4}},
		{"last 2 requests of a", eventlog.Options{Sale: "a", Last: 2, Types: []events.Type{events.TypeTokenRequested}},
			func(c map[string]string) bool { return c["sale"] == "a" && c["type"] == "TokenRequested" },
			eventlog.Stats{Events: 2, Messages: 1, Sales: 1, FirstSeq: 3, LastSeq: 3}},
		{"last 1 of a starts inside a message", eventlog.Options{Sale: "a", Last: 1, Types: []events.Type{events.TypeTokenRequested}},
			func(c map[string]string) bool { return seq(c) == 3 && c["idx"] == "1" },
			eventlog.Stats{Events: 1, Messages: 1, Sales: 1, FirstSeq: 3, LastSeq: 3}},
		{"last more than there is", eventlog.Options{Last: 1000}, all,
			eventlog.Stats{Events: 11, Undecodable: 1, Messages: 8, Sales: 2, FirstSeq: 1, LastSeq: 8}},
		{"no such sale", eventlog.Options{Sale: "zz"}, func(map[string]string) bool { return false }, eventlog.Stats{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := f.where(tc.match)
			got, stats := export(t, f.env, tc.o, "jsonl")
			checkJSONL(t, got, want)
			if stats != tc.stats {
				t.Errorf("stats %+v, want %+v", stats, tc.stats)
			}
			got, _ = export(t, f.env, tc.o, "csv")
			checkCSV(t, got, want)
		})
	}
}

// TestJSONLIsTheWireForm: every decodable line, without its position, is an
// event events.DecodeEvent reads.
func TestJSONLIsTheWireForm(t *testing.T) {
	f := newFixture(t)
	got, _ := export(t, f.env, eventlog.Options{}, "jsonl")
	for l := range strings.SplitSeq(strings.TrimSpace(got), "\n") {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		if string(m["type"]) == `"undecodable"` {
			continue
		}
		for _, k := range []string{"seq", "idx", "subject", "stored", "batch", "writer"} {
			delete(m, k)
		}
		b, _ := json.Marshal(m)
		if _, err := events.DecodeEvent(b); err != nil {
			t.Errorf("%v: %s", err, l)
		}
	}
}

func TestExportEmptyStream(t *testing.T) {
	env := fgtest.New(t)
	got, stats := export(t, env, eventlog.Options{}, "csv")
	if got != strings.Join(header, ",")+"\n" {
		t.Errorf("got %q, want the header alone", got)
	}
	if stats != (eventlog.Stats{}) {
		t.Errorf("stats %+v", stats)
	}
	if got, _ := export(t, env, eventlog.Options{Last: 5}, "jsonl"); got != "" {
		t.Errorf("got %q", got)
	}
}

// TestLastReadsBackInWindows: the events of a sale lie far back behind
// another sale's messages, so --last must widen its window several times.
func TestLastReadsBackInWindows(t *testing.T) {
	env := fgtest.New(t)
	env.CreateSale(t, "x", 10, time.Minute, t0)
	xs := env.AppendTokenRequests(t, "x", "x", 3, 3, t0) // seqs 2..4, 3 requests each
	env.CreateSale(t, "y", 10, time.Minute, t0)
	env.AppendTokenRequests(t, "y", "y", 300, 1, t0) // seqs 6..305
	got, stats := export(t, env, eventlog.Options{Sale: "x", Last: 4}, "jsonl")
	var ids []string
	var pos []string
	for l := range strings.SplitSeq(strings.TrimSpace(got), "\n") {
		var m struct {
			Seq uint64 `json:"seq"`
			Idx int    `json:"idx"`
			ID  string `json:"id"`
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
		pos = append(pos, fmt.Sprintf("%d.%d", m.Seq, m.Idx))
	}
	if !reflect.DeepEqual(ids, xs[5:]) || !reflect.DeepEqual(pos, []string{"3.2", "4.0", "4.1", "4.2"}) {
		t.Errorf("got %v at %v, want the last 4 requests of x at 3.2 4.0 4.1 4.2", ids, pos)
	}
	if stats.Events != 4 || stats.Messages != 2 {
		t.Errorf("stats %+v", stats)
	}
}

// TestTail follows the stream from new events on: an event stored after it
// started reaches the output (flushed, since the reader caught up), one
// stored before does not, and cancelling ends it.
func TestTail(t *testing.T) {
	env := fgtest.New(t)
	env.CreateSale(t, "a", 10, time.Minute, t0)
	before := env.AppendTokenRequests(t, "a", "before", 1, 1, t0)
	r, err := eventlog.NewReader(env.Stream, eventlog.Options{Sale: "a", New: true, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	var out fgtest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Read(ctx, eventlog.NewJSONL(&out)) }()
	// Publish once the reader's consumer exists, so the event is new to it.
	fgtest.WaitFor(t, 10*time.Second, func() error {
		info, err := env.Stream.Info(context.Background())
		if err != nil {
			return err
		}
		if info.State.Consumers == 0 {
			return errors.New("no consumer yet")
		}
		return nil
	})
	after := env.AppendTokenRequests(t, "a", "after", 1, 2, t0)
	fgtest.WaitFor(t, 10*time.Second, func() error {
		if got := strings.Count(out.String(), "\n"); got != 2 {
			return fmt.Errorf("%d lines: %q", got, out.String())
		}
		return nil
	})
	got := out.String()
	if strings.Contains(got, before[0]) || !strings.Contains(got, after[0]) || !strings.Contains(got, after[1]) {
		t.Errorf("tail printed %s", got)
	}
	if !strings.Contains(got, `"seq":3,"idx":0`) || !strings.Contains(got, `"seq":3,"idx":1`) {
		t.Errorf("positions: %s", got)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Read returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not stop on cancel")
	}
}

// TestTailFromStartThenWaits: with a start in the past a follower prints
// what is stored, then keeps waiting.
func TestTailFromStartThenWaits(t *testing.T) {
	f := newFixture(t)
	r, err := eventlog.NewReader(f.env.Stream, eventlog.Options{FromSeq: 7, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	var out fgtest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Read(ctx, eventlog.NewCSV(&out)) }()
	want := f.where(func(c map[string]string) bool { return seq(c) >= 7 })
	fgtest.WaitFor(t, 10*time.Second, func() error {
		if got := strings.Count(out.String(), "\n"); got != 1+len(want) {
			return fmt.Errorf("%d lines", got)
		}
		return nil
	})
	select {
	case err := <-done:
		t.Fatalf("Read returned %v while following", err)
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	checkCSV(t, out.String(), want)
}

// failing is a Writer whose Write fails.
type failing struct{ n int }

func (f *failing) Write(eventlog.Record) error {
	f.n++
	return errors.New("disk full")
}
func (f *failing) Flush() error { return nil }

func TestWriterErrorStopsRead(t *testing.T) {
	f := newFixture(t)
	r, err := eventlog.NewReader(f.env.Stream, eventlog.Options{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	w := &failing{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Read(ctx, w); err == nil || err.Error() != "disk full" || w.n != 1 {
		t.Fatalf("Read: %v after %d writes", err, w.n)
	}
}

func TestUndecodableRecord(t *testing.T) {
	for _, tc := range []struct {
		subject string
		data    []byte
		json    string
		csvData string
	}{
		{"fg.req.a", []byte("\xff\xfe"), `{"seq":9,"idx":0,"subject":"fg.req.a","stored":"2026-05-01T12:00:00Z","type":"undecodable","sale":"a","error":"%s","rawBase64":"//4="}`, "base64://4="},
		{"fg.sale.a", []byte(`{}`), `{"seq":9,"idx":0,"subject":"fg.sale.a","stored":"2026-05-01T12:00:00Z","type":"undecodable","sale":"a","error":"%s","raw":"{}"}`, "{}"},
		{"fg.other", []byte(`x`), `{"seq":9,"idx":0,"subject":"fg.other","stored":"2026-05-01T12:00:00Z","type":"undecodable","error":"%s","raw":"x"}`, "x"},
	} {
		recs := eventlog.Flatten(&jetstream.RawStreamMsg{Subject: tc.subject, Sequence: 9, Data: tc.data, Time: t0})
		if len(recs) != 1 || recs[0].Err == nil || recs[0].Type() != eventlog.TypeUndecodable {
			t.Fatalf("%s: %+v", tc.subject, recs)
		}
		if !errors.Is(recs[0].Err, events.ErrMalformed) {
			t.Errorf("%s: error %v", tc.subject, recs[0].Err)
		}
		b, err := json.Marshal(recs[0])
		if err != nil {
			t.Fatal(err)
		}
		errJSON, _ := json.Marshal(recs[0].Err.Error())
		if want := fmt.Sprintf(tc.json, errJSON[1:len(errJSON)-1]); string(b) != want {
			t.Errorf("%s:\n got %s\nwant %s", tc.subject, b, want)
		}
		row := make([]string, len(eventlog.Columns))
		if err := eventlog.Row(recs[0], row); err != nil {
			t.Fatal(err)
		}
		if row[19] != tc.csvData || row[20] != recs[0].Err.Error() || row[4] != "undecodable" {
			t.Errorf("%s: row %q", tc.subject, row)
		}
	}
}

func TestParseTypes(t *testing.T) {
	got, err := eventlog.ParseTypes([]string{"TokenIssued, tokendenied", "PurchaseAccepted", "TokenIssued"})
	if err != nil {
		t.Fatal(err)
	}
	want := []events.Type{events.TypeTokenIssued, events.TypeTokenDenied, events.TypePurchaseAccepted}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	_, err = eventlog.ParseTypes([]string{"TokenIssued,TokenStolen"})
	if err == nil || !strings.Contains(err.Error(), `"TokenStolen"`) {
		t.Fatalf("error %v", err)
	}
	for _, ty := range append(eventlog.Types, eventlog.TypeUndecodable) {
		if !strings.Contains(err.Error(), string(ty)) {
			t.Errorf("error %q does not list %s", err, ty)
		}
	}
}

func TestOptionsChecked(t *testing.T) {
	env := fgtest.New(t)
	for _, o := range []eventlog.Options{
		{FromSeq: 3, Last: 2},
		{Since: t0, New: true},
		{Last: -1},
		{Sale: "fg.>"},
		{Sale: "*"},
		{Types: []events.Type{"TokenStolen"}},
	} {
		if _, err := eventlog.NewReader(env.Stream, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	r, err := eventlog.NewReader(env.Stream, eventlog.Options{Sale: "a", Types: []events.Type{events.TypePurchaseAccepted, events.TypeSaleCreated}})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Subjects(); !reflect.DeepEqual(got, []string{"fg.sale.a", "fg.dec.a"}) {
		t.Errorf("subjects %v", got)
	}
}

func TestTextFormat(t *testing.T) {
	f := newFixture(t)
	got, _ := export(t, f.env, eventlog.Options{FromSeq: 5, ToSeq: 5}, "text")
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "5.0 2026-05-01T12:00:02.000Z a TokenIssued id=") ||
		!strings.Contains(lines[0], " already_issued=false ") || !strings.HasSuffix(lines[0], " batch=1 writer=node-1/1") ||
		!strings.Contains(lines[1], " reason=quota_exhausted ") {
		t.Errorf("text:\n%s", got)
	}
}

// TestOrderEvents: the orders' outcomes are read like every other event, by
// sale and by type, with their order id.
func TestOrderEvents(t *testing.T) {
	env := fgtest.New(t)
	ids := events.NewIDs()
	t1 := t0.Add(time.Second)
	for _, sale := range []string{"a", "b"} {
		e := events.Event{ID: ids.New(t0), Type: events.TypeSaleCreated, Version: events.SchemaVersion, Sale: sale, Time: t0,
			Data: &events.SaleCreated{Stock: 10, QuotaBuffer: 1.2, Quota: 12, PerUserLimit: 1, TokenTTL: events.Duration(5 * time.Minute), OpensAt: t0}}
		b, err := events.EncodeEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		publish(t, env, events.SaleSubject(sale), b)
	}
	order := func(sale, id string, e events.Event) {
		t.Helper()
		e.ID, e.Version, e.Sale, e.Time, e.Shopper, e.Request = ids.New(t1), events.SchemaVersion, sale, t1, "s1", id
		b, err := events.EncodeEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		publish(t, env, events.OrderSubject(sale, id), b)
	}
	oa, ob := ids.New(t1), ids.New(t1)
	order("a", oa, events.Event{Type: events.TypeOrderAttemptFailed, Data: &events.OrderAttemptFailed{Attempt: 1, Status: 503, Error: "busy", RetryAt: t1.Add(time.Second)}})
	order("a", oa, events.Event{Type: events.TypeOrderConfirmed, Data: &events.OrderConfirmed{Reference: "P-1", Attempts: 2}})
	order("b", ob, events.Event{Type: events.TypeOrderFailed, Data: &events.OrderFailed{Reason: events.OrderFailedAttempts, Attempts: 8, Error: "busy"}})
	// An order event on a subject naming another order is malformed.
	bad, err := events.EncodeEvent(events.Event{ID: ids.New(t1), Type: events.TypeOrderConfirmed, Version: events.SchemaVersion, Sale: "a", Time: t1,
		Shopper: "s1", Request: oa, Data: &events.OrderConfirmed{Reference: "P-2", Attempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	publish(t, env, events.OrderSubject("a", ob), bad)

	for _, tc := range []struct {
		name string
		o    eventlog.Options
		want []string // type order_id reason, one per record after the sales
	}{
		{"everything", eventlog.Options{}, []string{"OrderAttemptFailed " + oa + " ", "OrderConfirmed " + oa + " ", "OrderFailed " + ob + " attempts", "undecodable  "}},
		{"sale a", eventlog.Options{Sale: "a"}, []string{"OrderAttemptFailed " + oa + " ", "OrderConfirmed " + oa + " ", "undecodable  "}},
		{"failed ones", eventlog.Options{Types: []events.Type{events.TypeOrderFailed}}, []string{"OrderFailed " + ob + " attempts", "undecodable  "}},
		{"confirmed of b", eventlog.Options{Sale: "b", Types: []events.Type{events.TypeOrderConfirmed}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := export(t, env, tc.o, "csv")
			recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			col := map[string]int{}
			for i, c := range recs[0] {
				col[c] = i
			}
			var got []string
			for _, r := range recs[1:] {
				if r[col["type"]] == "SaleCreated" {
					continue
				}
				got = append(got, r[col["type"]]+" "+r[col["order_id"]]+" "+r[col["reason"]])
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("records %q, want %q", got, tc.want)
			}
		})
	}
	types, err := eventlog.ParseTypes([]string{"orderconfirmed,QueueAdmitted"})
	if err != nil || !reflect.DeepEqual(types, []events.Type{events.TypeOrderConfirmed, events.TypeQueueAdmitted}) {
		t.Errorf("ParseTypes: %v %v", types, err)
	}
}

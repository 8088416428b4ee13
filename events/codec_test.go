package events

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var at = time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)

func sampleRequests() RequestBatch {
	return RequestBatch{Requests: []Event{
		{ID: "01JE2W6N2X7Q8V9B0C1D2E3F4G", Type: TypeTokenRequested, Version: SchemaVersion, Sale: "demo", Time: at,
			Shopper: "01JE2W6N2X7Q8V9B0C1D2E3F40", ClientRequestID: "click-1", Data: &TokenRequested{}},
		{ID: "01JE2W6N2X7Q8V9B0C1D2E3F4H", Type: TypePurchaseRequested, Version: SchemaVersion, Sale: "demo", Time: at,
			Shopper: "01JE2W6N2X7Q8V9B0C1D2E3F41", Data: &PurchaseRequested{TokenID: "01JE2W6N2X7Q8V9B0C1D2E3F4A"}},
		{ID: "01JE2W6N2X7Q8V9B0C1D2E3F4K", Type: TypeSaleUpdateRequested, Version: SchemaVersion, Sale: "demo", Time: at,
			Shopper: "operator", Data: &SaleUpdateRequested{Action: ActionClose}},
	}}
}

func sampleDecisions() DecisionBatch {
	return DecisionBatch{Sale: "demo", Writer: "node-1/1", DecidedAt: at, FromSeq: 7,
		Head: Head{Version: 3, Cursor: 9, Stock: 100, Quota: 120, Issued: 5, Expired: 1, Redeemed: 2,
			OpensAtNs: at.UnixNano(), ClosesAtNs: at.Add(time.Hour).UnixNano()},
		Events: []Event{
			{ID: DerivedID(at, "expire:x"), Type: TypeTokenExpired, Version: SchemaVersion, Sale: "demo", Time: at, Shopper: "s0",
				Data: &TokenExpired{TokenID: "01JE2W6N2X7Q8V9B0C1D2E3F4B", ExpiresAt: at.Truncate(time.Second)}},
			{ID: DerivedID(at, "decide:a"), Type: TypeTokenIssued, Version: SchemaVersion, Sale: "demo", Time: at, Shopper: "s1",
				Request: "01JE2W6N2X7Q8V9B0C1D2E3F4G", Data: &TokenIssued{TokenID: "01JE2W6N2X7Q8V9B0C1D2E3F4G", IssuedAt: at, ExpiresAt: at.Add(5 * time.Minute).Truncate(time.Second)}},
			{ID: DerivedID(at, "decide:b"), Type: TypeTokenDenied, Version: SchemaVersion, Sale: "demo", Time: at, Shopper: "s2",
				Request: "01JE2W6N2X7Q8V9B0C1D2E3F4C", Data: &TokenDenied{Reason: ReasonSoldOut}},
			{ID: DerivedID(at, "decide:c"), Type: TypePurchaseAccepted, Version: SchemaVersion, Sale: "demo", Time: at, Shopper: "s3",
				Request: "01JE2W6N2X7Q8V9B0C1D2E3F4H", Data: &PurchaseAccepted{TokenID: "01JE2W6N2X7Q8V9B0C1D2E3F4A", OrderID: "01JE2W6N2X7Q8V9B0C1D2E3F4H", Units: 1}},
			{ID: DerivedID(at, "decide:e"), Type: TypeSaleUpdated, Version: SchemaVersion, Sale: "demo", Time: at, Shopper: "operator",
				Request: "01JE2W6N2X7Q8V9B0C1D2E3F4K", Data: &SaleUpdated{OpensAt: at, ClosesAt: at.Add(time.Hour)}},
			{ID: DerivedID(at, "decide:d"), Type: TypePurchaseRefused, Version: SchemaVersion, Sale: "demo", Time: at, Shopper: "s4",
				Request: "01JE2W6N2X7Q8V9B0C1D2E3F4D", Data: &PurchaseRefused{TokenID: "01JE2W6N2X7Q8V9B0C1D2E3F4E", Reason: ReasonTokenUsed, OrderID: "01JE2W6N2X7Q8V9B0C1D2E3F4F"}},
		}}
}

func sampleSale() Event {
	return Event{ID: "01JE2W6N2X7Q8V9B0C1D2E3F4J", Type: TypeSaleCreated, Version: SchemaVersion, Sale: "demo", Time: at,
		Data: &SaleCreated{Stock: 100, QuotaBuffer: 1.2, Quota: 120, PerUserLimit: 1, TokenTTL: Duration(5 * time.Minute), OpensAt: at,
			Challenge: &Challenge{Kind: ChallengePoW, Difficulty: 18}, SignedRequests: true,
			Queue: &Queue{PreQueueOpensAt: at.Add(-time.Hour), AdmissionRate: 50, ClaimWindow: Duration(2 * time.Minute), IdleTimeout: Duration(time.Minute)}}}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./events -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("wire format of %s changed:\n got %s\nwant %s\nA change of the wire format needs a new schema version and an upgrade in upgrade().", name, got, want)
	}
}

func TestWireFormatIsFrozen(t *testing.T) {
	rb, err := EncodeRequests(sampleRequests())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "requests.golden.json", rb)
	db, err := EncodeDecisions(sampleDecisions())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "decisions.golden.json", db)
	sb, err := EncodeEvent(sampleSale())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "sale.golden.json", sb)
}

func TestRoundTrip(t *testing.T) {
	rb, _ := EncodeRequests(sampleRequests())
	gotR, err := DecodeRequests(rb)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotR, sampleRequests()) {
		t.Errorf("requests round trip:\n got %+v\nwant %+v", gotR, sampleRequests())
	}
	db, _ := EncodeDecisions(sampleDecisions())
	gotD, err := DecodeDecisions(db)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotD, sampleDecisions()) {
		t.Errorf("decisions round trip:\n got %+v\nwant %+v", gotD, sampleDecisions())
	}
	sb, _ := EncodeEvent(sampleSale())
	gotS, err := DecodeEvent(sb)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotS, sampleSale()) {
		t.Errorf("sale round trip:\n got %+v\nwant %+v", gotS, sampleSale())
	}
}

func TestDecodeRefuses(t *testing.T) {
	good, _ := EncodeEvent(sampleSale())
	mut := func(old, new string) []byte { return []byte(strings.Replace(string(good), old, new, 1)) }
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"future version", mut(`"v":3`, `"v":4`), ErrUnknownVersion},
		{"version zero", mut(`"v":3`, `"v":0`), ErrUnknownVersion},
		{"unknown type", mut(`"SaleCreated"`, `"SaleDeleted"`), ErrUnknownType},
		{"bad id", mut(`01JE2W6N2X7Q8V9B0C1D2E3F4J`, `not-a-ulid`), ErrMalformed},
		{"bad sale", mut(`"sale":"demo"`, `"sale":"De.mo"`), ErrMalformed},
		{"no time", mut(`"time":"2026-12-01T10:00:00.123456789Z"`, `"time":"0001-01-01T00:00:00Z"`), ErrMalformed},
		{"unknown data field", mut(`"stock":100`, `"stock":100,"extra":1`), ErrMalformed},
		{"null data", mut(`"data":{`, `"data":null,"x":{`), ErrMalformed},
		{"not json", []byte("{"), ErrMalformed},
		{"data of wrong shape", mut(`"stock":100`, `"stock":"many"`), ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := DecodeEvent(c.in); !errors.Is(err, c.want) {
				t.Fatalf("DecodeEvent(%s) = %v, want %v", c.in, err, c.want)
			}
		})
	}
	if _, err := DecodeRequests([]byte(`{"requests":[]}`)); !errors.Is(err, ErrMalformed) {
		t.Errorf("empty request batch: %v", err)
	}
	db, _ := EncodeDecisions(sampleDecisions())
	if _, err := DecodeRequests(db); err == nil {
		t.Error("a decision batch decoded as requests")
	}
	rb, _ := EncodeRequests(sampleRequests())
	if _, err := DecodeDecisions(rb); err == nil {
		t.Error("a request batch decoded as decisions")
	}
	if _, err := EncodeRequests(RequestBatch{Requests: []Event{sampleSale()}}); err == nil {
		t.Error("a sale encoded as a request")
	}
	e := sampleSale()
	e.Data = &TokenDenied{}
	if _, err := EncodeEvent(e); err == nil {
		t.Error("an event whose data does not match its type encoded")
	}
}

func TestDerivedIDIsStable(t *testing.T) {
	a, b := DerivedID(at, "x"), DerivedID(at, "x")
	if a != b || a == DerivedID(at, "y") || len(a) != 26 {
		t.Fatalf("DerivedID: %s %s", a, b)
	}
}

// TestDerivedIDOf: the writer's allocation-free form derives exactly the id
// DerivedID does (recorded decisions are re-derived by the audit), for ids
// short and longer than its stack buffer.
func TestDerivedIDOf(t *testing.T) {
	for _, id := range []string{"", "01JE2W6N2X7Q8V9B0C1D2E3F4G", strings.Repeat("x", 200)} {
		if got, want := DerivedIDOf(at, "decide:", id), DerivedID(at, "decide:"+id); got != want {
			t.Fatalf("DerivedIDOf(%q) = %s, DerivedID = %s", id, got, want)
		}
	}
	// Pinned: ids already in streams must stay the same.
	if got := DerivedID(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "decide:01JE2W6N2X7Q8V9B0C1D2E3F4G"); got != "01KDYAK348VSAM823CTYXAB0Z2" {
		t.Fatalf("DerivedID changed: %s", got)
	}
}

func TestIDsAreUniqueAndOrdered(t *testing.T) {
	g := NewIDs()
	prev := ""
	for i := 0; i < 10000; i++ {
		id := g.New(at)
		if id <= prev {
			t.Fatalf("id %s after %s", id, prev)
		}
		prev = id
	}
}

func TestValidSaleID(t *testing.T) {
	for id, ok := range map[string]bool{"demo": true, "a": true, "sale-2026_01": true, "": false, "-x": false,
		"Demo": false, "a.b": false, "a b": false, "a*": false, "a>": false, strings.Repeat("a", 64): true, strings.Repeat("a", 65): false} {
		if ValidSaleID(id) != ok {
			t.Errorf("ValidSaleID(%q) = %v", id, !ok)
		}
	}
}

// FuzzDecode feeds the decoders arbitrary bytes: they must never panic, and
// whatever decodes must encode again and decode to the same value.
func FuzzDecode(f *testing.F) {
	rb, _ := EncodeRequests(sampleRequests())
	db, _ := EncodeDecisions(sampleDecisions())
	sb, _ := EncodeEvent(sampleSale())
	for _, s := range [][]byte{rb, db, sb, []byte(`{}`), []byte(`{"requests":[{}]}`), []byte(`null`), []byte(`{"events":null}`)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if e, err := DecodeEvent(b); err == nil {
			again, err := EncodeEvent(e)
			if err != nil {
				t.Fatalf("decoded event does not encode: %v", err)
			}
			e2, err := DecodeEvent(again)
			if err != nil || !reflect.DeepEqual(e, e2) {
				t.Fatalf("event round trip: %v\n%+v\n%+v", err, e, e2)
			}
		}
		if r, err := DecodeRequests(b); err == nil {
			again, err := EncodeRequests(r)
			if err != nil {
				t.Fatalf("decoded requests do not encode: %v", err)
			}
			if _, err := DecodeRequests(again); err != nil {
				t.Fatalf("requests round trip: %v", err)
			}
		}
		if d, err := DecodeDecisions(b); err == nil {
			again, err := EncodeDecisions(d)
			if err != nil {
				t.Fatalf("decoded decisions do not encode: %v", err)
			}
			if _, err := DecodeDecisions(again); err != nil {
				t.Fatalf("decisions round trip: %v", err)
			}
		}
	})
}

func TestHeadSame(t *testing.T) {
	a := Head{Version: 1, Issued: 2, OpensAtNs: 10, ClosesAtNs: 20}
	b := a
	if !a.Same(b) {
		t.Fatal("equal heads differ")
	}
	b.ClosesAtNs = 30
	if a.Same(b) {
		t.Fatal("a schedule change is not seen")
	}
	old := Head{Version: 1, Issued: 2} // written before heads recorded the schedule
	if !a.Same(old) || !old.Same(a) {
		t.Fatal("an older head without a schedule does not compare on the rest")
	}
	old.Issued = 3
	if a.Same(old) {
		t.Fatal("counters ignored")
	}
}

// TestVersion2StillDecodes: the wire files of schema version 2 decode
// (upgraded) into the same events, with no front policy on the sale.
func TestVersion2StillDecodes(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", "v2", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rb, err := DecodeRequests(read("requests.json"))
	if err != nil || len(rb.Requests) != 3 || rb.Requests[0].Version != SchemaVersion {
		t.Fatalf("v2 requests: %v %+v", err, rb)
	}
	db, err := DecodeDecisions(read("decisions.json"))
	if err != nil || len(db.Events) != 6 {
		t.Fatalf("v2 decisions: %v %+v", err, db)
	}
	e, err := DecodeEvent(read("sale.json"))
	if err != nil {
		t.Fatalf("v2 sale: %v", err)
	}
	if sc := e.Data.(*SaleCreated); sc.Challenge != nil || sc.SignedRequests {
		t.Fatalf("v2 sale has a front policy: %+v", sc)
	}
	// The fields version 3 added cannot appear at version 2.
	b := []byte(strings.Replace(string(read("sale.json")), `"perUserLimit":1`, `"perUserLimit":1,"signedRequests":true`, 1))
	if _, err := DecodeEvent(b); err == nil {
		t.Fatal("a version 2 sale with signedRequests decoded")
	}
}

func TestSaleChallengeChecked(t *testing.T) {
	good, _ := EncodeEvent(sampleSale())
	for _, bad := range []string{`"difficulty":0`, `"difficulty":23`, `"difficulty":-1`} {
		b := []byte(strings.Replace(string(good), `"difficulty":18`, bad, 1))
		if _, err := DecodeEvent(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("challenge with %s: %v, want ErrMalformed", bad, err)
		}
	}
	b := []byte(strings.Replace(string(good), `"kind":"pow"`, `"kind":"riddle"`, 1))
	if _, err := DecodeEvent(b); !errors.Is(err, ErrMalformed) {
		t.Errorf("unknown challenge kind: %v", err)
	}
}

// TestVersion1StillDecodes: the wire files of schema version 1, as the first
// release wrote them, decode (upgraded) into the same events.
func TestVersion1StillDecodes(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", "v1", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	rb, err := DecodeRequests(read("requests.json"))
	if err != nil || len(rb.Requests) != 2 || rb.Requests[0].Version != SchemaVersion {
		t.Fatalf("v1 requests: %v %+v", err, rb)
	}
	db, err := DecodeDecisions(read("decisions.json"))
	if err != nil || len(db.Events) != 5 || db.Head.OpensAtNs != 0 {
		t.Fatalf("v1 decisions: %v %+v", err, db)
	}
	if _, err := DecodeEvent(read("sale.json")); err != nil {
		t.Fatalf("v1 sale: %v", err)
	}
	// The types version 2 added cannot appear at version 1.
	b := []byte(strings.Replace(string(read("requests.json")), `"type":"TokenRequested","v":1`, `"type":"SaleUpdateRequested","v":1`, 1))
	if _, err := DecodeRequests(b); err == nil {
		t.Fatal("a version 1 SaleUpdateRequested decoded")
	}
}

func TestTooNewIsNotGarbage(t *testing.T) {
	good, _ := EncodeEvent(sampleSale())
	newer := []byte(strings.Replace(string(good), `"v":3`, `"v":4`, 1))
	_, err := DecodeEvent(newer)
	if !TooNew(err) {
		t.Fatalf("a version 4 event: %v, want TooNew", err)
	}
	newType := []byte(strings.Replace(string(good), `"SaleCreated"`, `"SaleArchived"`, 1))
	if _, err := DecodeEvent(newType); !TooNew(err) {
		t.Fatalf("an unknown type: %v, want TooNew", err)
	}
	if _, err := DecodeEvent([]byte(`{`)); TooNew(err) {
		t.Fatal("garbage taken for a newer build")
	}
	far := []byte(strings.Replace(string(good), `"opensAt":"2026-12-01T10:00:00.123456789Z"`, `"opensAt":"9999-12-31T00:00:00Z"`, 1))
	if _, err := DecodeEvent(far); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a sale opening in 9999: %v, want ErrMalformed", err)
	}
}

// TestQueueWireFormat freezes the waiting room's events and checks that
// each decodes back to itself.
func TestQueueWireFormat(t *testing.T) {
	req := func(id string, typ Type, shopper string, data any) Event {
		return Event{ID: id, Type: typ, Version: SchemaVersion, Sale: "demo", Time: at, Shopper: shopper, Data: data}
	}
	rb := RequestBatch{Requests: []Event{
		req("01JE2W6N2X7Q8V9B0C1D2E3F5A", TypeQueueJoinRequested, "s1", &QueueJoinRequested{}),
		req("01JE2W6N2X7Q8V9B0C1D2E3F5B", TypeQueueLeaveRequested, "s2", &QueueLeaveRequested{Ticket: "01JE2W6N2X7Q8V9B0C1D2E3F5C"}),
		req("01JE2W6N2X7Q8V9B0C1D2E3F5D", TypeQueueSeenRequested, "front", &QueueSeenRequested{Tickets: []string{"01JE2W6N2X7Q8V9B0C1D2E3F5A"}}),
		req("01JE2W6N2X7Q8V9B0C1D2E3F5E", TypeQueueClaimRequested, "s3", &QueueClaimRequested{Ticket: "01JE2W6N2X7Q8V9B0C1D2E3F5F"}),
	}}
	dec := func(key string, typ Type, shopper, request string, data any) Event {
		return Event{ID: DerivedID(at, key), Type: typ, Version: SchemaVersion, Sale: "demo", Time: at, Shopper: shopper, Request: request, Data: data}
	}
	db := DecisionBatch{Sale: "demo", Writer: "node-1/1", DecidedAt: at, Head: Head{Version: 3, Cursor: 12, Stock: 100, Quota: 120, Issued: 1, OpensAtNs: at.UnixNano()},
		Events: []Event{
			dec("q1", TypeQueueShuffled, "", "", &QueueShuffled{Seed: 42, PreQueue: 7}),
			dec("q2", TypeQueueJoined, "s1", "01JE2W6N2X7Q8V9B0C1D2E3F5A", &QueueJoined{Ticket: "01JE2W6N2X7Q8V9B0C1D2E3F5A", Place: 7}),
			dec("q3", TypeQueueJoinDenied, "s9", "01JE2W6N2X7Q8V9B0C1D2E3F5G", &QueueJoinDenied{Reason: ReasonSoldOut}),
			dec("q4", TypeQueueSeen, "front", "01JE2W6N2X7Q8V9B0C1D2E3F5D", &QueueSeen{Tickets: []string{"01JE2W6N2X7Q8V9B0C1D2E3F5A"}}),
			dec("q5", TypeQueueAdmitted, "s4", "01JE2W6N2X7Q8V9B0C1D2E3F5H", &QueueAdmitted{Ticket: "01JE2W6N2X7Q8V9B0C1D2E3F5H", Place: 0, TokenID: "01JE2W6N2X7Q8V9B0C1D2E3F5H", ClaimBy: at.Add(2 * time.Minute)}),
			dec("q6", TypeQueueClaimed, "s3", "01JE2W6N2X7Q8V9B0C1D2E3F5E", &QueueClaimed{Ticket: "01JE2W6N2X7Q8V9B0C1D2E3F5F"}),
			dec("q7", TypeQueueLeft, "s5", "", &QueueLeft{Ticket: "01JE2W6N2X7Q8V9B0C1D2E3F5J", Reason: LeftIdle}),
			dec("q8", TypeQueueClosed, "", "", &QueueClosed{Reason: ReasonSoldOut}),
		}}
	b, err := EncodeRequests(rb)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "queue-requests.golden.json", b)
	if got, err := DecodeRequests(b); err != nil || !reflect.DeepEqual(got, rb) {
		t.Fatalf("queue requests round trip: %v\n%+v", err, got)
	}
	b, err = EncodeDecisions(db)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "queue-decisions.golden.json", b)
	if got, err := DecodeDecisions(b); err != nil || !reflect.DeepEqual(got, db) {
		t.Fatalf("queue decisions round trip: %v\n%+v", err, got)
	}
	// A queue decision that must answer a request refuses to name none.
	bad := strings.Replace(string(b), `"request":"01JE2W6N2X7Q8V9B0C1D2E3F5A",`, ``, 1)
	if _, err := DecodeDecisions([]byte(bad)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a QueueJoined without its request: %v", err)
	}
}

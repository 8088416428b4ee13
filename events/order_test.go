package events

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sampleOrderEvents() []Event {
	const order = "01JE2W6N2X7Q8V9B0C1D2E3F4H"
	mk := func(name string, t Type, data any) Event {
		return Event{ID: DerivedID(at, name), Type: t, Version: SchemaVersion, Sale: "demo", Time: at,
			Shopper: "s3", Request: order, Data: data}
	}
	return []Event{
		mk("o1", TypeOrderAttemptFailed, &OrderAttemptFailed{Attempt: 1, Status: 503, Error: "provider: 503 Service Unavailable", RetryAt: at.Add(time.Second)}),
		mk("o2", TypeOrderFailed, &OrderFailed{Reason: OrderFailedAttempts, Attempts: 5, Error: "timeout"}),
		mk("o3", TypeOrderRequeued, &OrderRequeued{By: "operator"}),
		mk("o4", TypeOrderConfirmed, &OrderConfirmed{Reference: "P-1", Attempts: 1}),
	}
}

// TestOrderWireFormat freezes the order events and checks they round-trip.
func TestOrderWireFormat(t *testing.T) {
	var all []byte
	for _, e := range sampleOrderEvents() {
		b, err := EncodeEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeEvent(b)
		if err != nil {
			t.Fatalf("%s: %v", e.Type, err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("%s round trip:\n got %+v\nwant %+v", e.Type, got, e)
		}
		all = append(append(all, b...), '\n')
	}
	golden(t, "orders.golden.json", all)
}

func TestOrderEventsRefused(t *testing.T) {
	ev := sampleOrderEvents()
	good, _ := EncodeEvent(ev[0])
	for name, b := range map[string]string{
		"no order":      strings.Replace(string(good), `"request":"01JE2W6N2X7Q8V9B0C1D2E3F4H",`, "", 1),
		"attempt 0":     strings.Replace(string(good), `"attempt":1`, `"attempt":0`, 1),
		"at version 2":  strings.Replace(string(good), `"v":3`, `"v":2`, 1),
		"unknown field": strings.Replace(string(good), `"attempt":1`, `"attempt":1,"x":1`, 1),
	} {
		if _, err := DecodeEvent([]byte(b)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	failed, _ := EncodeEvent(ev[1])
	if _, err := DecodeEvent([]byte(strings.Replace(string(failed), `"reason":"attempts"`, `"reason":"bored"`, 1))); !errors.Is(err, ErrMalformed) {
		t.Errorf("unknown failure reason: %v", err)
	}
	// Order events never travel in a decision batch.
	db := sampleDecisions()
	db.Events = append(db.Events, ev[3])
	if _, err := EncodeDecisions(db); err == nil {
		t.Error("a decision batch carried an order event")
	}
}

func TestOrderSubject(t *testing.T) {
	const order = "01JE2W6N2X7Q8V9B0C1D2E3F4H"
	subj := OrderSubject("demo", order)
	if subj != "fg.ord.demo."+order {
		t.Fatalf("subject %q", subj)
	}
	if sale, err := SaleOfSubject(subj); err != nil || sale != "demo" {
		t.Fatalf("SaleOfSubject(%q) = %q, %v", subj, sale, err)
	}
	for _, bad := range []string{"fg.ord.demo", "fg.ord.demo.", "fg.ord.demo.x", "fg.ord.Demo." + order, "fg.ord.demo." + strings.ToLower(order)} {
		if _, err := SaleOfSubject(bad); err == nil {
			t.Errorf("SaleOfSubject(%q) accepted", bad)
		}
	}
	for id, want := range map[string]bool{order: true, "": false, strings.ToLower(order): false, order + "0": false, "81JE2W6N2X7Q8V9B0C1D2E3F4H": false} {
		if ValidOrderID(id) != want {
			t.Errorf("ValidOrderID(%q) = %v", id, !want)
		}
	}
}

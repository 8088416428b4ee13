package api

import (
	"errors"
	"testing"
	"time"
)

func TestSaleRequestValidate(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	f := func(v float64) *float64 { return &v }
	i := func(v int64) *int64 { return &v }
	ok := []struct {
		name string
		in   SaleRequest
	}{
		{"defaults", SaleRequest{ID: "demo", Stock: 100}},
		{"all set", SaleRequest{ID: "a-b_1", Stock: 10, QuotaBuffer: f(1.5), PerUserLimit: i(2), TokenTTL: "1s",
			OpensAt: "2026-12-01T11:00:00Z", ClosesAt: "2026-12-01T13:00:00+01:00"}},
	}
	for _, c := range ok {
		if _, err := c.in.Validate(now); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	s, _ := SaleRequest{ID: "demo", Stock: 100}.Validate(now)
	if s.Quota != 120 || s.QuotaBuffer != 1.2 || s.PerUserLimit != 1 || s.TokenTTL != 5*time.Minute || !s.OpensAt.Equal(now) || !s.ClosesAt.IsZero() {
		t.Errorf("defaults: %+v", s)
	}
	q, err := SaleRequest{ID: "q", Stock: 10, OpensAt: "2026-12-01T11:00:00Z",
		Queue: &QueueRequest{Enabled: true, PreQueueOpensAt: "2026-12-01T10:30:00+00:00"}}.Validate(now)
	if err != nil || q.Queue == nil || q.Queue.AdmissionRate != 10 || time.Duration(q.Queue.ClaimWindow) != 2*time.Minute ||
		time.Duration(q.Queue.IdleTimeout) != time.Minute || !q.Queue.PreQueueOpensAt.Equal(now.Add(30*time.Minute)) {
		t.Errorf("queue defaults: %+v, %v", q.Queue, err)
	}
	if off, _ := (SaleRequest{ID: "q", Stock: 10, Queue: &QueueRequest{Enabled: false, AdmissionRate: f(5)}}).Validate(now); off.Queue != nil {
		t.Errorf("a queue not enabled was set: %+v", off.Queue)
	}
	bad := []struct {
		in    SaleRequest
		field string
	}{
		{SaleRequest{ID: "", Stock: 1}, "id"},
		{SaleRequest{ID: "Caps", Stock: 1}, "id"},
		{SaleRequest{ID: "x", Stock: 0}, "stock"},
		{SaleRequest{ID: "x", Stock: -5}, "stock"},
		{SaleRequest{ID: "x", Stock: MaxStock + 1}, "stock"},
		{SaleRequest{ID: "x", Stock: 1, QuotaBuffer: f(0.9)}, "quotaBuffer"},
		{SaleRequest{ID: "x", Stock: 1, QuotaBuffer: f(11)}, "quotaBuffer"},
		{SaleRequest{ID: "x", Stock: 1, PerUserLimit: i(0)}, "perUserLimit"},
		{SaleRequest{ID: "x", Stock: 1, PerUserLimit: i(2)}, "perUserLimit"},
		{SaleRequest{ID: "x", Stock: 1, TokenTTL: "500ms"}, "tokenTTL"},
		{SaleRequest{ID: "x", Stock: 1, TokenTTL: "25h"}, "tokenTTL"},
		{SaleRequest{ID: "x", Stock: 1, TokenTTL: "soon"}, "tokenTTL"},
		{SaleRequest{ID: "x", Stock: 1, OpensAt: "tomorrow"}, "opensAt"},
		{SaleRequest{ID: "x", Stock: 1, OpensAt: "1970-01-01T00:00:00Z"}, "opensAt"},
		{SaleRequest{ID: "x", Stock: 1, ClosesAt: "9999-12-31T23:59:59Z"}, "closesAt"},
		{SaleRequest{ID: "x", Stock: 1, ClosesAt: "2026-12-01T09:00:00Z"}, "closesAt"},
		{SaleRequest{ID: "x", Stock: 1, OpensAt: "2026-12-01T11:00:00Z", ClosesAt: "2026-12-01T11:00:00Z"}, "closesAt"},
		{SaleRequest{ID: "x", Stock: 1, Queue: &QueueRequest{Enabled: true, AdmissionRate: f(0)}}, "queue.admissionRate"},
		{SaleRequest{ID: "x", Stock: 1, Queue: &QueueRequest{Enabled: true, AdmissionRate: f(1e6)}}, "queue.admissionRate"},
		{SaleRequest{ID: "x", Stock: 1, Queue: &QueueRequest{Enabled: true, ClaimWindow: "500ms"}}, "queue.claimWindow"},
		{SaleRequest{ID: "x", Stock: 1, Queue: &QueueRequest{Enabled: true, ClaimWindow: "two minutes"}}, "queue.claimWindow"},
		{SaleRequest{ID: "x", Stock: 1, TokenTTL: "1m", Queue: &QueueRequest{Enabled: true}}, "queue.claimWindow"}, // 2m > the token's 1m
		{SaleRequest{ID: "x", Stock: 1, Queue: &QueueRequest{Enabled: true, IdleTimeout: "25h"}}, "queue.idleTimeout"},
		{SaleRequest{ID: "x", Stock: 1, Queue: &QueueRequest{Enabled: true, PreQueueOpensAt: "soon"}}, "queue.preQueueOpensAt"},
		{SaleRequest{ID: "x", Stock: 1, OpensAt: "2026-12-01T11:00:00Z",
			Queue: &QueueRequest{Enabled: true, PreQueueOpensAt: "2026-12-01T11:00:00Z"}}, "queue.preQueueOpensAt"},
	}
	for _, c := range bad {
		_, err := c.in.Validate(now)
		var e *Error
		if !errors.As(err, &e) || e.Status != 400 || e.Fields["field"] != c.field {
			t.Errorf("%+v: got %v, want 400 naming %s", c.in, err, c.field)
		}
	}
}

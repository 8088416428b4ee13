package handlers_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/handlers"
)

func joins(n, from int, at time.Time) []events.Event {
	reqs := make([]events.Event, n)
	for i := range reqs {
		id := events.DerivedID(at, fmt.Sprint("join:", from+i))
		reqs[i] = events.Event{ID: id, Type: events.TypeQueueJoinRequested, Version: events.SchemaVersion, Sale: "q", Time: at,
			Shopper: fmt.Sprintf("shopper-%08d", from+i), Data: &events.QueueJoinRequested{}}
	}
	return reqs
}

// BenchmarkQueueJoin is the writer's cost of deciding joins, in batches of
// 1,024 (the writer's largest batch), into a queue already holding many.
func BenchmarkQueueJoin(b *testing.B) {
	sale := queueSale(1, qt0, events.Queue{AdmissionRate: 0.01, ClaimWindow: events.Duration(time.Hour), IdleTimeout: events.Duration(time.Hour)})
	s := handlers.NewState(sale)
	s.SetSeed(func() uint64 { return 1 })
	const batch = 1024
	all := joins(b.N+batch, 0, qt0)
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		s.Decide(qt0, all[i:min(i+batch, b.N)])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "joins/s")
}

// BenchmarkQueueAdmit is the writer's cost of admitting: b.N shoppers join
// before the opening; from the opening (the shuffle included) they are
// admitted at 100,000/s in batches of at most 512.
func BenchmarkQueueAdmit(b *testing.B) {
	sale := queueSale(int64(b.N)+1, qt0.Add(time.Second), events.Queue{PreQueueOpensAt: qt0, AdmissionRate: 100_000,
		ClaimWindow: events.Duration(time.Hour), IdleTimeout: events.Duration(time.Hour)})
	s := handlers.NewState(sale)
	s.SetSeed(func() uint64 { return 1 })
	all := joins(b.N, 0, qt0)
	for i := 0; i < len(all); i += 1024 {
		s.Decide(qt0, all[i:min(i+1024, len(all))])
	}
	b.ResetTimer()
	now := qt0.Add(time.Second - 10*time.Millisecond)
	admitted := 0
	for admitted < b.N {
		now = now.Add(10 * time.Millisecond)
		for _, e := range s.Decide(now, nil) {
			if e.Type == events.TypeQueueAdmitted {
				admitted++
			}
		}
	}
	b.ReportMetric(float64(admitted)/b.Elapsed().Seconds(), "admissions/s")
}

// TestQueueMemoryPerShopper measures the writer's memory per waiting
// shopper with 1,000,000 queued (skipped with -short).
func TestQueueMemoryPerShopper(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("1,000,000 joins (not under -short or the race detector)")
	}
	const n = 1_000_000
	sale := queueSale(1, qt0, events.Queue{AdmissionRate: 0.01, ClaimWindow: events.Duration(time.Hour), IdleTimeout: events.Duration(time.Hour)})
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before) // before the requests: what stays of them (the ids) counts
	reqs := joins(n, 0, qt0)
	s := handlers.NewState(sale)
	s.SetSeed(func() uint64 { return 1 })
	for i := 0; i < n; i += 1024 {
		s.Decide(qt0, reqs[i:min(i+1024, n)])
	}
	reqs = nil
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	runtime.KeepAlive(s)
	if w := s.Room().Waiting(); w < n-1 {
		t.Fatalf("%d waiting", w)
	}
	t.Logf("writer memory per waiting shopper at %d queued: %.0f bytes (ticket and shopper ids of 26 and 15 bytes included)", n, per)
	if per > 400 {
		t.Fatalf("%.0f bytes per waiting shopper", per)
	}
	// A position lookup at this size.
	tk, _ := s.Room().Active(fmt.Sprintf("shopper-%08d", n-1))
	start := time.Now()
	const lookups = 100_000
	for range lookups {
		_ = s.Room().Ahead(tk)
	}
	t.Logf("position lookup at %d queued: %v", n, time.Since(start)/lookups)
}

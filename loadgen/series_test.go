package loadgen

import (
	"testing"
	"time"
)

// TestSeriesBuckets: answers land in the second they arrived in, from two
// workers and out of order, with their errors and percentiles.
func TestSeriesBuckets(t *testing.T) {
	var s series
	a, b := newSecBuf(), newSecBuf()
	ms := time.Millisecond
	a.record(&s, 100*ms, 2*ms, true, false)
	a.record(&s, 900*ms, 4*ms, true, false)
	b.record(&s, 999*ms, 6*ms, true, false)
	a.record(&s, 1200*ms, 10*ms, true, false)
	b.record(&s, 3500*ms, 0, false, true) // no answer: an error, no latency
	b.record(&s, 3600*ms, 8*ms, true, true)
	a.record(&s, 800*ms, 100*ms, true, false) // late: back in second 0
	a.flush(&s)
	b.flush(&s)
	got := s.seconds()
	want := []Second{
		{T: 0, Requests: 4, P50: 4, P99: 100},
		{T: 1, Requests: 1, P50: 10, P99: 10},
		{T: 2},
		{T: 3, Requests: 2, Errors: 2, P50: 8, P99: 8},
	}
	if len(got) != len(want) {
		t.Fatalf("series %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.T != w.T || g.Requests != w.Requests || g.Errors != w.Errors || !within(g.P50, w.P50, 0.01) || !within(g.P99, w.P99, 0.01) {
			t.Errorf("second %d: %+v, want %+v", i, g, w)
		}
	}
	if e := new(series).seconds(); len(e) != 0 {
		t.Errorf("empty series: %+v", e)
	}
}

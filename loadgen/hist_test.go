package loadgen

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// within reports whether got is within rel (relative) of want.
func within(got, want, rel float64) bool { return math.Abs(got-want) <= rel*math.Abs(want) }

func TestHistUniform(t *testing.T) {
	h := newHist()
	for us := 1; us <= 10000; us++ {
		h.record(time.Duration(us) * time.Microsecond)
	}
	l := h.latency()
	for _, c := range []struct {
		name      string
		got, want float64 // ms
	}{
		{"p50", l.P50, 5}, {"p90", l.P90, 9}, {"p99", l.P99, 9.9}, {"p99.9", l.P999, 9.99},
		{"max", l.Max, 10}, {"mean", l.Mean, 5.0005},
	} {
		if !within(c.got, c.want, 0.001) { // 3 significant digits
			t.Errorf("%s = %v ms, want %v within 0.1%%", c.name, c.got, c.want)
		}
	}
	if l.Count != 10000 {
		t.Errorf("count %d", l.Count)
	}
}

// TestHistSkewed: a known bimodal distribution (99% at 1 ms, 1% at 1 s)
// puts p99 at 1 ms and p99.9 at 1 s.
func TestHistSkewed(t *testing.T) {
	h := newHist()
	for i := range 10000 {
		d := time.Millisecond
		if i%100 == 0 {
			d = time.Second
		}
		h.record(d)
	}
	l := h.latency()
	if !within(l.P50, 1, 0.001) || !within(l.P99, 1, 0.001) || !within(l.P999, 1000, 0.001) || l.Max != 1000 {
		t.Errorf("bimodal: %+v", l)
	}
	if !within(l.Mean, 0.99*1+0.01*1000, 0.001) {
		t.Errorf("mean %v", l.Mean)
	}
}

// TestHistRange: values outside 1 µs .. 60 s are clamped, not lost.
func TestHistRange(t *testing.T) {
	h := newHist()
	h.record(0)
	h.record(-time.Second)
	h.record(2 * time.Minute)
	if l := h.latency(); l.Count != 3 || l.Max != 60000 || l.P50 != 0.001 {
		t.Errorf("clamped: %+v", l)
	}
	if l := newHist().latency(); l != (Latency{}) {
		t.Errorf("empty: %+v", l)
	}
}

// TestHistMerge: per-worker histograms merged give the same figures as one
// histogram of every value.
func TestHistMerge(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	all := newHist()
	workers := []*hist{newHist(), newHist(), newHist(), newHist()}
	for range 100000 {
		d := time.Duration(rnd.ExpFloat64() * float64(3*time.Millisecond))
		all.record(d)
		workers[rnd.IntN(len(workers))].record(d)
	}
	merged := newHist()
	for _, w := range workers {
		merged.merge(w)
	}
	merged.merge(nil)
	if got, want := merged.latency(), all.latency(); got != want {
		t.Errorf("merged %+v\nwant   %+v", got, want)
	}
	// An exponential distribution's quantiles: -mean*ln(1-q).
	l := merged.latency()
	for q, got := range map[float64]float64{0.5: l.P50, 0.9: l.P90, 0.99: l.P99} {
		if want := -3 * math.Log(1-q); !within(got, want, 0.03) {
			t.Errorf("p%v = %v ms, want about %v", q*100, got, want)
		}
	}
}

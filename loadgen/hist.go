package loadgen

import (
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// The range and precision of every latency histogram: 1 µs to 60 s with 3
// significant digits (a value is off by at most 0.1%). Values are recorded
// in microseconds; longer ones count as 60 s.
const (
	histMin    = 1
	histMax    = 60_000_000
	histDigits = 3
	// seriesDigits is the precision of the per-second histograms behind
	// the time series: 2 digits (1%) keeps one at 20 KiB instead of 136.
	seriesDigits = 2
)

// hist is a latency histogram: an HDR histogram for the percentiles, with
// the exact count, sum and maximum beside it. It is not safe for
// concurrent use; every worker records into its own and they are merged at
// the end.
type hist struct {
	h          *hdr.Histogram
	count, sum int64 // µs
	max        int64 // µs
}

func newHist() *hist { return &hist{h: hdr.New(histMin, histMax, histDigits)} }

func newSeriesHist() *hist { return &hist{h: hdr.New(histMin, histMax, seriesDigits)} }

// record adds one latency.
func (h *hist) record(d time.Duration) {
	us := d.Microseconds()
	if us < histMin {
		us = histMin
	}
	if us > histMax {
		us = histMax
	}
	_ = h.h.RecordValue(us) // in range: cannot fail
	h.count++
	h.sum += us
	h.max = max(h.max, us)
}

// merge adds every value of o.
func (h *hist) merge(o *hist) {
	if o == nil {
		return
	}
	h.h.Merge(o.h)
	h.count += o.count
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// reset empties h, keeping its memory.
func (h *hist) reset() {
	h.h.Reset()
	h.count, h.sum, h.max = 0, 0, 0
}

// quantile is the latency at q (0..1): the highest value equivalent to the
// one at that rank, so it never reads lower than what was recorded.
func (h *hist) quantile(q float64) time.Duration {
	if h.count == 0 {
		return 0
	}
	v := h.h.ValueAtQuantile(q * 100)
	return time.Duration(min(v, h.max)) * time.Microsecond
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
}

// latency summarises h.
func (h *hist) latency() Latency {
	if h == nil || h.count == 0 {
		return Latency{}
	}
	return Latency{
		Count: h.count,
		P50:   ms(h.quantile(0.50)),
		P90:   ms(h.quantile(0.90)),
		P99:   ms(h.quantile(0.99)),
		P999:  ms(h.quantile(0.999)),
		Max:   float64(h.max) / 1000,
		Mean:  float64(h.sum) / float64(h.count) / 1000,
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

package loadgen

import (
	"sync"
	"time"
)

// Second is one second of the measured phase in the time series: the main
// request kind's answers that arrived in it (requests, errors: no answer or
// a 5xx) and their latency percentiles in milliseconds.
type Second struct {
	T        int     `json:"t"` // seconds since the measured phase began
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	P50      float64 `json:"p50"`
	P99      float64 `json:"p99"`
}

// series is the time series of a run. Workers gather the current second in
// a secBuf of their own and add it here when the second changes (once a
// second per worker, under the lock), so the hot path takes no lock.
type series struct {
	mu   sync.Mutex
	secs []*secAgg
}

type secAgg struct {
	requests, errors int64
	h                *hist
}

// add merges one worker's second sec.
func (s *series) add(sec int, b *secBuf) {
	if sec < 0 || b.requests == 0 && b.errors == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.secs) <= sec {
		s.secs = append(s.secs, nil)
	}
	a := s.secs[sec]
	if a == nil {
		a = &secAgg{h: newSeriesHist()}
		s.secs[sec] = a
	}
	a.requests += b.requests
	a.errors += b.errors
	a.h.merge(b.h)
}

// seconds is the series, one entry per second up to the last with data
// (seconds without answers are zero).
func (s *series) seconds() []Second {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Second, len(s.secs))
	for i, a := range s.secs {
		out[i].T = i
		if a == nil {
			continue
		}
		out[i].Requests, out[i].Errors = a.requests, a.errors
		out[i].P50, out[i].P99 = ms(a.h.quantile(0.5)), ms(a.h.quantile(0.99))
	}
	return out
}

// secBuf is one worker's current second.
type secBuf struct {
	sec              int // -1: empty
	requests, errors int64
	h                *hist
}

func newSecBuf() *secBuf { return &secBuf{sec: -1, h: newSeriesHist()} }

// record counts one answer of the main kind that arrived at offset at (from
// the start of the measured phase), with latency d; answered is false for
// a request that got no answer, failed for that or a 5xx.
func (b *secBuf) record(s *series, at, d time.Duration, answered, failed bool) {
	sec := int(at / time.Second)
	if at < 0 {
		sec = 0
	}
	if sec != b.sec {
		b.flush(s)
		b.sec = sec
	}
	b.requests++
	if failed {
		b.errors++
	}
	if answered {
		b.h.record(d)
	}
}

// flush adds the buffered second to s and empties the buffer.
func (b *secBuf) flush(s *series) {
	if b.sec >= 0 {
		s.add(b.sec, b)
	}
	b.sec, b.requests, b.errors = -1, 0, 0
	b.h.reset()
}

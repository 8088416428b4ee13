package loadgen

import (
	"testing"
	"time"
)

// fakeClock is a clock that moves only when slept on, by the time slept
// plus oversleep.
type fakeClock struct {
	now       time.Time
	oversleep time.Duration
	sleeps    int
}

func (c *fakeClock) Now() time.Time { return c.now }
func (c *fakeClock) Sleep(d time.Duration) {
	c.sleeps++
	c.now = c.now.Add(d + c.oversleep)
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// TestDispatchOnSchedule: at 1000/s for one second, exactly 1000 starts,
// iteration i due at i ms, each started no earlier than its time.
func TestDispatchOnSchedule(t *testing.T) {
	c := &fakeClock{now: t0}
	s := scheduler{start: t0, rate: 1000}
	var ats []time.Time
	started, dropped := s.dispatch(c, 0, t0.Add(time.Second), func() bool { return false }, func(i int64, at time.Time) bool {
		if int64(len(ats)) != i {
			t.Fatalf("iteration %d started out of turn", i)
		}
		if c.now.Before(at) {
			t.Fatalf("iteration %d started at %v, before its time %v", i, c.now.Sub(t0), at.Sub(t0))
		}
		ats = append(ats, at)
		return true
	})
	if started != 1000 || dropped != 0 || len(ats) != 1000 {
		t.Fatalf("started %d dropped %d", started, dropped)
	}
	for i, at := range ats {
		if want := t0.Add(time.Duration(i) * time.Millisecond); !at.Equal(want) {
			t.Fatalf("iteration %d due at %v, want %v", i, at.Sub(t0), want.Sub(t0))
		}
	}
}

// TestDispatchLate: a dispatcher that wakes late starts what came due
// meanwhile at once, each with its own intended time (latency is measured
// from it, so the lateness is not hidden), and the lag is counted.
func TestDispatchLate(t *testing.T) {
	c := &fakeClock{now: t0, oversleep: 5 * time.Millisecond}
	s := scheduler{start: t0, rate: 2000} // one every 0.5 ms
	rec := newRecorder(true)
	r := &runner{main: kindToken, start: t0}
	var n int64
	started, _ := s.dispatch(c, 0, t0.Add(100*time.Millisecond), func() bool { return false }, func(i int64, at time.Time) bool {
		if want := t0.Add(time.Duration(i) * 500 * time.Microsecond); !at.Equal(want) {
			t.Fatalf("iteration %d due at %v, want %v", i, at.Sub(t0), want.Sub(t0))
		}
		// The request goes out now and takes 1 ms.
		rec.add(r, sample{kind: kindToken, intended: at, sent: c.now, done: c.now.Add(time.Millisecond), status: 201}, true)
		n++
		return true
	})
	if started != 200 || n != 200 {
		t.Fatalf("started %d of 200", started)
	}
	if c.sleeps > 30 {
		t.Errorf("%d sleeps: the dispatcher did not catch up in batches", c.sleeps)
	}
	lag := rec.lag.latency()
	if lag.Count != 200 || lag.Max < 4.5 || rec.late < 120 || rec.late == 200 {
		t.Errorf("lag %+v, %d late", lag, rec.late)
	}
	if l := rec.kinds[kindToken].lat.latency(); l.Max < 5.5 || l.P50 < 1 {
		t.Errorf("latency from intended start %+v: the lag is not in it", l)
	}
	if s := rec.kinds[kindToken].svc.latency(); s.Max != 1 {
		t.Errorf("service time %+v, want 1 ms each", s)
	}
	rep := &Report{NumCPU: 2, Schedule: &Schedule{Started: 200, Late: rec.late, Lag: lag}}
	if judge(rep) == "" {
		t.Error("a run 5 ms behind its schedule is not called out")
	}
}

// TestDispatchDropsAndLimits: starts that are refused count as dropped,
// and a limit of iterations stops the dispatcher.
func TestDispatchDropsAndLimits(t *testing.T) {
	c := &fakeClock{now: t0}
	s := scheduler{start: t0, rate: 100}
	inFlight := 0
	started, dropped := s.dispatch(c, 50, time.Time{}, func() bool { return false }, func(i int64, at time.Time) bool {
		if inFlight >= 10 {
			return false
		}
		inFlight++
		return true
	})
	if started != 10 || dropped != 40 {
		t.Errorf("started %d dropped %d, want 10 and 40", started, dropped)
	}
	if end := c.now.Sub(t0); end != 490*time.Millisecond {
		t.Errorf("the 50th iteration went at %v, want 490ms", end)
	}
	stops := 0
	started, _ = s.dispatch(&fakeClock{now: t0}, 0, time.Time{}, func() bool { stops++; return stops > 20 }, func(int64, time.Time) bool { return true })
	if started == 0 || started > 20 {
		t.Errorf("stop: %d started", started)
	}
}

func TestSchedulerIndex(t *testing.T) {
	s := scheduler{start: t0, rate: 3}
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{{0, 0}, {-time.Second, 0}, {time.Second, 3}, {time.Second + time.Nanosecond, 4}, {2 * time.Second / 3, 2}} {
		if got := s.index(t0.Add(tc.d)); got != tc.want {
			t.Errorf("index(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

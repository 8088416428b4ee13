package loadgen

import (
	"context"
	"math"
	"runtime"
	"time"
)

// clock is what the open model's dispatcher reads and waits on; tests
// bring a fake one.
type clock interface {
	Now() time.Time
	Sleep(time.Duration)
}

type realClock struct{}

func (realClock) Now() time.Time        { return time.Now() }
func (realClock) Sleep(d time.Duration) { time.Sleep(d) }

// maxSleep bounds one wait of the dispatcher, so it notices the end of
// the run soon at a low rate too.
const maxSleep = 50 * time.Millisecond

// scheduler says when each iteration of an open-model run is due:
// iteration i at start + i/rate, whatever became of the ones before.
type scheduler struct {
	start time.Time
	rate  float64 // per second
}

// at is when iteration i is due.
func (s scheduler) at(i int64) time.Time {
	return s.start.Add(time.Duration(float64(i) * float64(time.Second) / s.rate))
}

// index is the first iteration due at or after t.
func (s scheduler) index(t time.Time) int64 {
	d := t.Sub(s.start)
	if d <= 0 {
		return 0
	}
	i := int64(math.Ceil(d.Seconds() * s.rate))
	for i > 0 && !s.at(i-1).Before(t) {
		i--
	}
	for s.at(i).Before(t) {
		i++
	}
	return i
}

// dispatch starts every iteration when it is due, from iteration 0, until
// stop reports true, limit iterations were due (if limit > 0) or one is
// due at or after until (if not zero). An iteration whose time has come
// while the dispatcher slept is started at once with its own due time (it
// is late, not lost). start starts iteration i due at `at` and reports
// whether it did (false: dropped, e.g. too many in flight); dispatch
// returns how many were started and dropped.
func (s scheduler) dispatch(c clock, limit int64, until time.Time, stop func() bool, start func(i int64, at time.Time) bool) (started, dropped int64) {
	var i int64
	for !stop() {
		now := c.Now()
		for {
			if limit > 0 && i >= limit {
				return started, dropped
			}
			at := s.at(i)
			if !until.IsZero() && !at.Before(until) {
				return started, dropped
			}
			if at.After(now) {
				break
			}
			if start(i, at) {
				started++
			} else {
				dropped++
			}
			i++
			if stop() {
				return started, dropped
			}
		}
		if wait := s.at(i).Sub(c.Now()); wait > 0 {
			c.Sleep(min(wait, maxSleep))
		}
	}
	return started, dropped
}

// runOpen runs the open model: iterations started at Rate per second by
// one dispatcher, each handed to an idle worker goroutine or to a new one,
// at most MaxInFlight at once; a start beyond that is dropped and counted.
// Workers record into a few shared recorders (shards, each with a lock
// taken only by its own workers), not one each: the number of workers
// follows the load.
func (r *runner) runOpen(ctx context.Context) {
	n := max(4, 2*runtime.GOMAXPROCS(0))
	r.shards = make([]*recorder, n)
	for i := range r.shards {
		r.shards[i] = newRecorder(true)
		r.register(r.shards[i])
	}
	r.work = make(chan job)
	t0 := r.o.now()
	s := scheduler{start: t0, rate: r.o.Rate}
	warmEnd := t0.Add(r.o.Warmup)
	var limit int64
	var until time.Time
	if r.o.Requests > 0 {
		limit = s.index(warmEnd) + r.o.Requests
	} else {
		until = warmEnd.Add(r.o.Duration)
	}
	stopped := func() bool { return r.phase.Load() == phaseDone || ctx.Err() != nil }
	capInFlight := int64(r.o.MaxInFlight)
	s.dispatch(realClock{}, limit, until, stopped, func(i int64, at time.Time) bool {
		measured := !at.Before(warmEnd)
		if measured && r.phase.Load() == phaseWarmup {
			r.beginMeasured()
		}
		if r.inFlight.Load() >= capInFlight {
			if measured {
				r.sched.dropped++
			}
			return false
		}
		j := job{intended: at, measured: measured, class: r.classOf(i), shopper: -1, n: i}
		if j.class == classHonest {
			idx, ok := r.pool.take()
			if !ok {
				r.exhausted()
				return false
			}
			j.shopper = idx
		}
		if measured {
			r.sched.started++
		}
		r.inFlight.Add(1)
		select {
		case r.work <- j: // an idle worker took it
		default:
			r.workers.Add(1)
			go r.openWorker(j)
		}
		return true
	})
	close(r.work)
	r.workers.Wait()
	r.endMeasured()
}

// openWorker runs j, then whatever the dispatcher hands it, until the
// dispatcher is done.
func (r *runner) openWorker(j job) {
	defer r.workers.Done()
	id := r.nextID.Add(1) - 1
	w := r.newWorker(r.shards[id%int64(len(r.shards))], true)
	for {
		w.iterate(j)
		r.inFlight.Add(-1)
		var ok bool
		if j, ok = <-r.work; !ok {
			return
		}
	}
}

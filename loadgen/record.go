package loadgen

import (
	"errors"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// kind is a kind of request the generator makes, or for kindAdmission the
// wait it times (from the join's answer to the admitted event).
type kind int

const (
	kindToken kind = iota
	kindJoin
	kindAdmission
	kindPurchase
	kindNoSession
	kindBadToken
	kindTooFast
	numKinds
)

// kindNames are the kinds' names in the report.
var kindNames = [numKinds]string{"token", "join", "admission", "purchase", "no-session", "bad-token", "too-fast"}

// mainKind is the request kind a scenario's throughput and latency are of.
func mainKind(scenario string) kind {
	switch scenario {
	case ScenarioPurchase, ScenarioMixed:
		return kindPurchase
	case ScenarioQueue:
		return kindJoin
	}
	return kindToken
}

// class is what an iteration does: an honest shopper's scenario or one of
// the abusive clients of the mixed scenario.
type class int

const (
	classHonest    class = iota
	classNoSession       // a token request without a session: 401
	classBadToken        // a purchase with a forged or garbage token: 401 token_invalid
	classTooFast         // one session asking for tokens again and again: 429 under rate limits
)

var abusiveClasses = []class{classNoSession, classBadToken, classTooFast}

// maxStatus bounds the status codes counted in an array; others are
// counted as 0 ("other").
const maxStatus = 600

// kindRec is what a recorder gathered about one kind of request.
type kindRec struct {
	lat      *hist // latency: from the intended start in the open model
	svc      *hist // open model: service time, from the actual send
	status   [maxStatus]int64
	noAnswer int64
	outcomes map[string]int64
}

// recorder gathers samples: one per virtual user in the closed model (no
// lock), one per shard of workers in the open model (mu held by them).
type recorder struct {
	mu     sync.Mutex
	open   bool
	kinds  [numKinds]*kindRec
	sec    *secBuf
	lag    *hist // open model: actual send - intended start, of iterations' first requests
	late   int64 // of those, later than lateStart
	seen   []seenToken
	orders int64 // purchases answered with an orderId (whole run)

	errCounts map[string]int64
	firstErrs []string

	// For the progress line, read while the run goes on.
	reqs, errs, iters, busy atomic.Int64
}

// seenToken is a token id the generator saw handed to a shopper.
type seenToken struct {
	shopper int32 // index into the pool
	id      string
}

// lateStart is how late an open-model start may be before it counts as
// late.
const lateStart = time.Millisecond

// maxFirstErrors is how many error messages a report keeps verbatim.
const maxFirstErrors = 5

func newRecorder(open bool) *recorder {
	return &recorder{open: open, sec: newSecBuf(), errCounts: map[string]int64{}}
}

func (rec *recorder) kind(k kind) *kindRec {
	kr := rec.kinds[k]
	if kr == nil {
		kr = &kindRec{lat: newHist()}
		if rec.open {
			kr.svc = newHist()
		}
		rec.kinds[k] = kr
	}
	return kr
}

// sample is one request's figures.
type sample struct {
	kind     kind
	intended time.Time // open model, an iteration's first request: when it was due; zero: timed from sent
	sent     time.Time
	done     time.Time
	status   int    // 0: no answer
	err      error  // why there was no answer
	outcome  string // kindAdmission: admitted, done:<status>, ended
}

// failed reports whether s counts as an error in the progress line and the
// time series: no answer, or a 5xx.
func (s sample) failed() bool { return s.status == 0 || s.status >= 500 }

// add records s into rec; measured is false for warm-up samples, which only
// count for the progress line. The caller holds rec.mu if rec is shared.
func (rec *recorder) add(r *runner, s sample, measured bool) {
	rec.reqs.Add(1)
	if s.failed() {
		rec.errs.Add(1)
	}
	if !measured {
		return
	}
	kr := rec.kind(s.kind)
	svc := s.done.Sub(s.sent)
	lat := svc
	if !s.intended.IsZero() {
		lat = s.done.Sub(s.intended)
		lag := s.sent.Sub(s.intended)
		if rec.lag == nil {
			rec.lag = newHist()
		}
		rec.lag.record(lag)
		if lag > lateStart {
			rec.late++
		}
	}
	if s.outcome != "" {
		if kr.outcomes == nil {
			kr.outcomes = map[string]int64{}
		}
		kr.outcomes[s.outcome]++
	}
	switch {
	case s.status == 0:
		kr.noAnswer++
		rec.errorSeen(s.err)
	default:
		if s.status > 0 && s.status < maxStatus {
			kr.status[s.status]++
		} else {
			kr.status[0]++
		}
		if s.outcome == "" || s.outcome == outcomeAdmitted {
			kr.lat.record(lat)
			if kr.svc != nil {
				kr.svc.record(svc)
			}
		}
	}
	if s.kind == r.main {
		rec.sec.record(&r.ser, s.done.Sub(r.start), lat, s.status != 0, s.failed())
	}
}

// errorSeen counts a transport error by its message, without the URL.
func (rec *recorder) errorSeen(err error) {
	if err == nil {
		err = errors.New("no answer")
	}
	var ue *url.Error
	msg := err.Error()
	if errors.As(err, &ue) {
		msg = ue.Err.Error()
	}
	if len(msg) > 200 {
		msg = msg[:200]
	}
	rec.errCounts[msg]++
	if len(rec.firstErrs) < maxFirstErrors {
		rec.firstErrs = append(rec.firstErrs, err.Error())
	}
}

package loadgen

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Report is the result of a run; flashgate bench --json writes it whole.
// Latencies are in milliseconds, shares of the machine from 0 to 1.
//
//	scenario         tokens, purchase, queue or mixed
//	model            "closed" (vus virtual users back to back) or "open" (rate iterations/s on schedule)
//	url, sale        the server and the sale; embedded: the server ran inside the generator's process
//	vus, rate, maxInFlight   the model's settings
//	mainKind         the request kind the top-level figures are of: token (tokens),
//	                 purchase (purchase, mixed: the honest shoppers'), join (queue)
//	requests         main-kind requests in the measured phase (answered or not)
//	iterations       iterations started in the measured phase
//	durationSeconds  the measured phase, from its start until its last answer
//	warmupSeconds    the warm-up (load, not measured)
//	throughput       requests / durationSeconds
//	latency          main kind: {count, p50, p90, p99, p999, max, mean}; in the open model
//	                 measured from each iteration's intended start (coordinated-omission safe)
//	serviceTime      open model, main kind: the same from the actual send
//	status           main kind: HTTP status -> count (0: a status outside 1..599)
//	errors           requests of every kind that got no answer (transport errors, timeouts)
//	errorCounts      their messages -> count; firstErrors: the first few in full
//	generatorCPU     this process's CPU (user+sys) over the measured phase / wall time / numCPU;
//	                 with embedded, the server's CPU is in it too
//	serverCPU        with ServerPIDs: {pids, cores: their CPU over the measured phase / wall time,
//	                 share: cores / numCPU, perRequestMicros: their CPU / the measured main-kind
//	                 requests (set once the requests are counted)}
//	machineCPU       the whole machine's busy share over the measured phase (Linux; -1 unknown)
//	bottleneck       why the generator, not the server, likely limited the run; "" if nothing says so
//	schedule         open model: {started, dropped (max-in-flight was reached), late (started
//	                 more than 1 ms after their time), lag: start lag distribution}
//	shoppers         {pool: sessions made before the run, used, setupSeconds, exhausted}
//	verdict          {checked, ok, problems}: the server's figures against the invariants
//	figures          the server's figures after the run (stock, quota, sold, tokensIssued, ...)
//	ordersAcknowledged  purchases answered 202 with an order id (whole run)
//	notes            plain statements about the run (pool ran out, interrupted, ...)
//	kinds            per request kind: {requests, throughput, status, errors, latency,
//	                 serviceTime, outcomes (admission: admitted, done:<status>, ...)}
//	series           per second of the measured phase, main kind: {t, requests, errors
//	                 (no answer or 5xx), p50, p99}
type Report struct {
	Scenario    string  `json:"scenario"`
	Model       string  `json:"model"`
	URL         string  `json:"url"`
	Embedded    bool    `json:"embedded"`
	Sale        string  `json:"sale"`
	VUs         int     `json:"vus,omitempty"`
	Rate        float64 `json:"rate,omitempty"`
	MaxInFlight int     `json:"maxInFlight,omitempty"`
	MainKind    string  `json:"mainKind"`

	Requests        int64         `json:"requests"`
	Iterations      int64         `json:"iterations"`
	DurationSeconds float64       `json:"durationSeconds"`
	WarmupSeconds   float64       `json:"warmupSeconds"`
	Throughput      float64       `json:"throughput"`
	Latency         Latency       `json:"latency"`
	ServiceTime     *Latency      `json:"serviceTime,omitempty"`
	Status          map[int]int64 `json:"status"`

	Errors      int64            `json:"errors"`
	ErrorCounts map[string]int64 `json:"errorCounts"`
	FirstErrors []string         `json:"firstErrors"`

	GeneratorCPU float64    `json:"generatorCPU"`
	ServerCPU    *ServerCPU `json:"serverCPU,omitempty"`
	MachineCPU   float64    `json:"machineCPU"`
	NumCPU       int        `json:"numCPU"`
	Bottleneck   string     `json:"bottleneck"`
	Schedule     *Schedule  `json:"schedule,omitempty"`
	Shoppers     Shoppers   `json:"shoppers"`

	Verdict Verdict  `json:"verdict"`
	Figures *Figures `json:"figures,omitempty"`
	Orders  int64    `json:"ordersAcknowledged"`
	Notes   []string `json:"notes"`

	Kinds  map[string]*KindReport `json:"kinds"`
	Series []Second               `json:"series"`
}

// KindReport is one kind of request in the measured phase.
type KindReport struct {
	Requests    int64            `json:"requests"`
	Throughput  float64          `json:"throughput"`
	Status      map[int]int64    `json:"status"`
	Errors      int64            `json:"errors"`
	Latency     Latency          `json:"latency"`
	ServiceTime *Latency         `json:"serviceTime,omitempty"`
	Outcomes    map[string]int64 `json:"outcomes,omitempty"`
}

// Schedule is how well an open-model run kept its schedule.
type Schedule struct {
	Started int64   `json:"started"`
	Dropped int64   `json:"dropped"`
	Late    int64   `json:"late"`
	Lag     Latency `json:"lag"`
}

// ServerCPU is the CPU the server's processes used over the measured phase
// (user and system time; a child a process has not waited for is not in
// it): next to the throughput, what a request cost the server.
type ServerCPU struct {
	PIDs             []int   `json:"pids"`
	Seconds          float64 `json:"seconds"`          // CPU seconds over the phase
	Cores            float64 `json:"cores"`            // CPU seconds per second of the phase
	Share            float64 `json:"share"`            // Cores / numCPU
	PerRequestMicros float64 `json:"perRequestMicros"` // Seconds per measured main-kind request, µs (all of the server's work)
}

// serverCPU is the server processes' CPU between a and b, over requests
// measured main-kind requests; nil without pids, when one of them could not
// be read at either end (gone, not Linux), or when the phase measured no
// request (a run that ended in its warm-up).
func serverCPU(pids []int, a, b cpuSample, numCPU int, requests int64) *ServerCPU {
	wall := b.at.Sub(a.at)
	if len(pids) == 0 || !a.srvOK || !b.srvOK || wall <= 0 || numCPU <= 0 || requests <= 0 {
		return nil
	}
	used := b.servers - a.servers
	cores := used.Seconds() / wall.Seconds()
	return &ServerCPU{PIDs: pids, Seconds: used.Seconds(), Cores: cores, Share: cores / float64(numCPU),
		PerRequestMicros: float64(used) / float64(time.Microsecond) / float64(requests)}
}

// Shoppers is the pool of sessions made before the run.
type Shoppers struct {
	Pool         int     `json:"pool"`
	Used         int64   `json:"used"`
	SetupSeconds float64 `json:"setupSeconds"`
	Exhausted    bool    `json:"exhausted"`
}

// The generator is taken for the bottleneck when it kept this many CPUs
// busy (on the 2-core machine the server shares, about half of it), or
// when its open-model starts were late by more than maxLagP99 at p99.
const (
	busyCPUs  = 0.9
	maxLagP99 = time.Millisecond
)

// report gathers the recorders into a Report.
func (r *runner) report(setup time.Duration) *Report {
	cpu1 := r.cpu1
	rep := &Report{
		Scenario: r.o.Scenario, URL: r.o.URL, Embedded: r.o.Embedded, Sale: r.sale,
		MainKind: kindNames[r.main], WarmupSeconds: r.o.Warmup.Seconds(),
		ErrorCounts: map[string]int64{}, FirstErrors: []string{}, Notes: []string{},
		NumCPU: runtime.NumCPU(), Kinds: map[string]*KindReport{},
		Shoppers: Shoppers{Pool: r.plan.shoppers, Used: r.pool.used(), SetupSeconds: setup.Seconds(), Exhausted: r.exhaustedN.Load()},
	}
	if r.plan.open {
		rep.Model, rep.Rate, rep.MaxInFlight = "open", r.o.Rate, r.o.MaxInFlight
	} else {
		rep.Model, rep.VUs = "closed", r.o.VUs
	}
	dur := r.end.Sub(r.start)
	rep.DurationSeconds = dur.Seconds()
	rep.GeneratorCPU, rep.MachineCPU = cpuShares(r.cpu0, cpu1, rep.NumCPU)
	if len(r.o.ServerPIDs) > 0 && (!r.cpu0.srvOK || !cpu1.srvOK) {
		r.note("the CPU of the server's processes (pids %s) could not be read at both ends of the measured phase (one gone, or not Linux)", intsText(r.o.ServerPIDs))
	}

	var kinds [numKinds]*kindRec
	lag := newHist()
	var late int64
	for _, rec := range r.recs {
		rec.sec.flush(&r.ser)
		rep.Iterations += rec.iters.Load()
		rep.Orders += rec.orders
		late += rec.late
		lag.merge(rec.lag)
		for msg, n := range rec.errCounts {
			rep.ErrorCounts[msg] += n
		}
		for _, m := range rec.firstErrs {
			if len(rep.FirstErrors) < maxFirstErrors {
				rep.FirstErrors = append(rep.FirstErrors, m)
			}
		}
		for k, kr := range rec.kinds {
			if kr == nil {
				continue
			}
			if kinds[k] == nil {
				kinds[k] = &kindRec{lat: newHist()}
				if r.plan.open {
					kinds[k].svc = newHist()
				}
			}
			m := kinds[k]
			m.lat.merge(kr.lat)
			if m.svc != nil {
				m.svc.merge(kr.svc)
			}
			for code, n := range kr.status {
				m.status[code] += n
			}
			m.noAnswer += kr.noAnswer
			for o, n := range kr.outcomes {
				if m.outcomes == nil {
					m.outcomes = map[string]int64{}
				}
				m.outcomes[o] += n
			}
		}
	}
	for k, kr := range kinds {
		if kr == nil {
			continue
		}
		kp := &KindReport{Status: map[int]int64{}, Errors: kr.noAnswer, Latency: kr.lat.latency(), Outcomes: kr.outcomes}
		for code, n := range kr.status {
			if n > 0 {
				kp.Status[code] = n
				kp.Requests += n
			}
		}
		kp.Requests += kr.noAnswer
		if dur > 0 {
			kp.Throughput = float64(kp.Requests) / dur.Seconds()
		}
		if kr.svc != nil {
			l := kr.svc.latency()
			kp.ServiceTime = &l
		}
		rep.Kinds[kindNames[k]] = kp
		rep.Errors += kr.noAnswer
	}
	if m := rep.Kinds[rep.MainKind]; m != nil {
		rep.Requests, rep.Throughput, rep.Latency, rep.ServiceTime, rep.Status = m.Requests, m.Throughput, m.Latency, m.ServiceTime, m.Status
	} else {
		rep.Status = map[int]int64{}
	}
	rep.ServerCPU = serverCPU(r.o.ServerPIDs, r.cpu0, cpu1, rep.NumCPU, rep.Requests)
	rep.Series = r.ser.seconds()
	if r.plan.open {
		rep.Schedule = &Schedule{Started: r.sched.started, Dropped: r.sched.dropped, Late: late, Lag: lag.latency()}
	}
	rep.Bottleneck = judge(rep)
	r.notesMu.Lock()
	rep.Notes = append(rep.Notes, r.notes...)
	r.notesMu.Unlock()
	if r.o.Embedded {
		rep.Notes = append(rep.Notes, "the server ran embedded in the generator's process: generatorCPU is both together, and they shared the machine")
	}
	if rep.Iterations == 0 {
		rep.Notes = append(rep.Notes, "no iteration was measured")
	}
	if n := tooFastNote(rep.Kinds[kindNames[kindTooFast]]); n != "" {
		rep.Notes = append(rep.Notes, n)
	}
	rep.Verdict = Verdict{Problems: []string{}}
	return rep
}

// tooFastNote says when the mixed scenario's too-fast shopper was never
// refused though it asked often and fast: the server's per-shopper limits
// are off (or generous), and the run does not show them at work. "" when
// there is nothing to say.
func tooFastNote(k *KindReport) string {
	if k == nil || k.Throughput < 10 || k.Status[http.StatusTooManyRequests] > 0 {
		return ""
	}
	answered := int64(0) // 2xx: the server let it through
	for code, n := range k.Status {
		if code >= 200 && code < 300 {
			answered += n
		}
	}
	if answered < 50 {
		return ""
	}
	return fmt.Sprintf("the too-fast shopper asked %d times (%.0f a second) and was never refused 429: the server's per-shopper "+
		"rate limits look off or generous (flashgate serve --rate-limit=shopper enforces them for a load test from one machine)",
		k.Requests, k.Throughput)
}

// judge says why the generator rather than the server likely limited the
// run, or "" when nothing says so: its CPU (unless the server shares its
// process, when the CPU cannot be told apart), and in the open model a
// schedule it could not keep.
func judge(rep *Report) string {
	var why []string
	if cores := rep.GeneratorCPU * float64(rep.NumCPU); !rep.Embedded && cores >= busyCPUs {
		why = append(why, fmt.Sprintf("the generator itself used %.0f%% of the machine (%.2f of %d CPUs), CPU the server could not have",
			rep.GeneratorCPU*100, cores, rep.NumCPU))
	}
	if s := rep.Schedule; s != nil {
		if lag := time.Duration(s.Lag.P99 * float64(time.Millisecond)); lag > maxLagP99 {
			why = append(why, fmt.Sprintf("it fell behind its schedule: starts were %.1f ms late at p99 (%d of %d later than 1 ms)",
				s.Lag.P99, s.Late, s.Started))
		}
		if s.Dropped > 0 {
			why = append(why, fmt.Sprintf("max-in-flight (%d) was reached: %d starts were dropped, not made", rep.MaxInFlight, s.Dropped))
		}
	}
	return strings.Join(why, "; ")
}

// WriteText writes the report for people.
func (rep *Report) WriteText(w io.Writer) {
	model := fmt.Sprintf("closed model, %d virtual users", rep.VUs)
	if rep.Model == "open" {
		model = fmt.Sprintf("open model, %g iterations/s (at most %d in flight)", rep.Rate, rep.MaxInFlight)
	}
	where := rep.URL
	if rep.Embedded {
		where += " (embedded in this process)"
	}
	fmt.Fprintf(w, "scenario %s, %s, against %s, sale %s\n", rep.Scenario, model, where, rep.Sale)
	fmt.Fprintf(w, "shoppers: %d sessions made in %.1fs before the run, %d used\n", rep.Shoppers.Pool, rep.Shoppers.SetupSeconds, rep.Shoppers.Used)
	cpu := "generator"
	if rep.Embedded {
		cpu = "generator and server"
	}
	fmt.Fprintf(w, "measured: %d iterations in %.2fs after a %gs warm-up: %.0f %s requests/s (%s CPU %.0f%% of the machine)\n",
		rep.Iterations, rep.DurationSeconds, rep.WarmupSeconds, rep.Throughput, rep.MainKind, cpu, rep.GeneratorCPU*100)
	names := make([]string, 0, len(rep.Kinds))
	for k := range rep.Kinds {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return kindOrder(names[i]) < kindOrder(names[j]) })
	for _, k := range names {
		kr := rep.Kinds[k]
		what := "latency"
		if rep.Model == "open" {
			what = "latency from intended start"
		}
		if k == "admission" {
			what = "time to admission"
		}
		fmt.Fprintf(w, "  %-10s %8d  %8.0f/s  %s %s\n", k, kr.Requests, kr.Throughput, what, kr.Latency.text())
		if kr.ServiceTime != nil {
			fmt.Fprintf(w, "  %-10s %8s  %10s  service time %s\n", "", "", "", kr.ServiceTime.text())
		}
		fmt.Fprintf(w, "  %-10s status %s", "", statusText(kr.Status))
		if kr.Errors > 0 {
			fmt.Fprintf(w, ", no answer x%d", kr.Errors)
		}
		if len(kr.Outcomes) > 0 {
			fmt.Fprintf(w, "; %s", countsText(kr.Outcomes))
		}
		fmt.Fprintln(w)
	}
	if rep.Errors > 0 {
		fmt.Fprintf(w, "errors: %d requests got no answer: %s\n", rep.Errors, countsText(rep.ErrorCounts))
	}
	if s := rep.Schedule; s != nil {
		fmt.Fprintf(w, "schedule: %d started, %d dropped at max-in-flight, %d started more than 1 ms late; start lag %s\n",
			s.Started, s.Dropped, s.Late, s.Lag.text())
	}
	machine := ""
	if rep.MachineCPU >= 0 {
		machine = fmt.Sprintf("; the machine was %.0f%% busy", rep.MachineCPU*100)
	}
	who := "generator CPU"
	if rep.Embedded {
		who = "process CPU (generator and embedded server)"
	}
	fmt.Fprintf(w, "%s: %.0f%% of %d CPUs over the measured phase (%.2f CPUs)%s\n",
		who, rep.GeneratorCPU*100, rep.NumCPU, rep.GeneratorCPU*float64(rep.NumCPU), machine)
	if sc := rep.ServerCPU; sc != nil {
		also := ""
		if len(rep.Kinds) > 1 {
			also = ", its work for the other kinds included"
		}
		fmt.Fprintf(w, "server CPU (pids %s): %.2f CPUs over the measured phase, %.1f µs per %s request measured%s\n",
			intsText(sc.PIDs), sc.Cores, sc.PerRequestMicros, rep.MainKind, also)
	}
	if rep.Bottleneck != "" {
		fmt.Fprintf(w, "BOTTLENECK: the generator likely limited this run: %s\n", rep.Bottleneck)
	} else if !rep.Embedded {
		fmt.Fprintln(w, "bottleneck: nothing says the generator limited this run")
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if f := rep.Figures; f != nil {
		fmt.Fprintf(w, "server: stock %d, quota %d, sold %d, tokens issued %d, expired %d, outstanding %d; %d orders acknowledged\n",
			f.Stock, f.Quota, f.Sold, f.TokensIssued, f.TokensExpired, f.TokensOutstanding, rep.Orders)
	}
	switch {
	case !rep.Verdict.Checked:
		fmt.Fprintln(w, "verdict: not checked")
	case rep.Verdict.OK:
		fmt.Fprintln(w, "verdict: correct (sold <= stock, tokens held <= quota, no shopper with two tokens, no token to two shoppers, nothing acknowledged lost)")
	default:
		fmt.Fprintf(w, "verdict: WRONG:\n  %s\n", strings.Join(rep.Verdict.Problems, "\n  "))
	}
}

func (l Latency) text() string {
	if l.Count == 0 {
		return "-"
	}
	return fmt.Sprintf("p50 %s p90 %s p99 %s p99.9 %s max %s mean %s",
		msText(l.P50), msText(l.P90), msText(l.P99), msText(l.P999), msText(l.Max), msText(l.Mean))
}

// msText writes a latency in ms with 3 significant digits.
func msText(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0fms", v)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	}
	return fmt.Sprintf("%.2fms", v)
}

func statusText(m map[int]int64) string {
	codes := make([]int, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%d x%d", c, m[c])
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func countsText(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] || m[keys[i]] == m[keys[j]] && keys[i] < keys[j] })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s x%d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// kindOrder orders kinds as an iteration makes them.
func kindOrder(name string) int {
	for i, n := range kindNames {
		if n == name {
			return i
		}
	}
	return len(kindNames)
}

func intsText(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

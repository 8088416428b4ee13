package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// The servers, in the order they run and print.
const (
	Flashgate = "flashgate"
	Redis     = "redis"
	Bare      = "bare"
)

// GenResult is the part of `flashgate bench --json` the comparison reads.
// Fields whose shape the comparison does not depend on are kept raw.
type GenResult struct {
	Throughput float64          `json:"throughput"` // requests a second over the measured window
	Latency    Latency          `json:"latency"`
	Status     map[string]int64 `json:"status"` // HTTP status code -> count
	Errors     json.RawMessage  `json:"errors"`
	// GeneratorCPU is the generator's own CPU over the measured phase as
	// a share of the whole machine (0.5: one of two cores).
	GeneratorCPU json.RawMessage `json:"generatorCPU"`
	Bottleneck   json.RawMessage `json:"bottleneck"` // why the generator likely limited the run; "" if nothing says so
	NumCPU       int             `json:"numCPU"`
	Requests     int64           `json:"requests"` // measured
	// ServerCPU is the CPU of the server's processes over the measured
	// phase (nil: not read).
	ServerCPU *struct {
		Cores            float64 `json:"cores"`
		PerRequestMicros float64 `json:"perRequestMicros"`
	} `json:"serverCPU"`
	Verdict         Verdict `json:"verdict"`
	DurationSeconds float64 `json:"durationSeconds"` // the measured phase
	Shoppers        struct {
		Pool         int64   `json:"pool"` // sessions made before the run
		Used         int64   `json:"used"`
		SetupSeconds float64 `json:"setupSeconds"`
		Exhausted    bool    `json:"exhausted"` // the pool ran out and ended the run early
	} `json:"shoppers"`
	Notes []string `json:"notes"`
}

// Latency is a run's latency summary in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Verdict is the generator's check of the server's own figures.
type Verdict struct {
	Checked  bool     `json:"checked"`
	OK       bool     `json:"ok"`
	Problems []string `json:"problems"`
}

// ParseGenResult reads a generator's JSON result.
func ParseGenResult(b []byte) (*GenResult, error) {
	var g GenResult
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, fmt.Errorf("generator result: %w", err)
	}
	return &g, nil
}

// ErrorCount is the number of transport errors: errors as a number, the
// length of a list, or the sum of a map of counts.
func (g *GenResult) ErrorCount() int64 {
	raw := g.Errors
	if len(raw) == 0 || string(raw) == "null" {
		return 0
	}
	var n float64
	if json.Unmarshal(raw, &n) == nil {
		return int64(n)
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil {
		return int64(len(list))
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) == nil {
		var sum int64
		for _, v := range m {
			if json.Unmarshal(v, &n) == nil {
				sum += int64(n)
			} else {
				sum++
			}
		}
		return sum
	}
	return 0
}

// Pending counts the 202 answers: requests stored but not decided within
// the server's decision wait (flashgate's 202 pending). They are 2xx, but
// not the success the targets count.
func (g *GenResult) Pending() int64 { return g.Status["202"] }

// Non2xx counts the answers with an HTTP status outside 200..299. A status
// that is not a positive number (a transport error, if the generator counts
// it there) is left to ErrorCount.
func (g *GenResult) Non2xx() int64 {
	var n int64
	for k, c := range g.Status {
		code, err := strconv.Atoi(k)
		if err != nil || code <= 0 {
			continue
		}
		if code < 200 || code > 299 {
			n += c
		}
	}
	return n
}

// CPU is the generator's own CPU use as a share of the machine, and whether
// it is a plain number.
func (g *GenResult) CPU() (float64, bool) {
	var n float64
	if len(g.GeneratorCPU) > 0 && json.Unmarshal(g.GeneratorCPU, &n) == nil {
		return n, true
	}
	return 0, false
}

// CPUPerRequest is the server's and the generator's CPU per measured
// request in µs; 0 where unknown.
func (g *GenResult) CPUPerRequest() (server, generator float64) {
	if g.ServerCPU != nil {
		server = g.ServerCPU.PerRequestMicros
	}
	if c, ok := g.CPU(); ok && g.Requests > 0 && g.NumCPU > 0 {
		generator = c * float64(g.NumCPU) * g.DurationSeconds * 1e6 / float64(g.Requests)
	}
	return server, generator
}

// compact renders a raw JSON value on one short line: strings unquoted,
// objects as k=v pairs.
func compact(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) == nil {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%v", k, m[k]))
		}
		return strings.Join(parts, " ")
	}
	return string(raw)
}

// Run is one measured run of one server.
type Run struct {
	Server string     `json:"server"`
	N      int        `json:"run"` // 1-based
	Result *GenResult `json:"result,omitempty"`
	// Failed says why the run gave no result (the server did not start,
	// the generator failed); VerdictWrong that the server's figures broke
	// an invariant.
	Failed       string `json:"failed,omitempty"`
	VerdictWrong bool   `json:"verdictWrong,omitempty"`
	// BusyBefore is the share of the machine's CPU busy just before the
	// server started (other processes); -1 unknown.
	BusyBefore float64 `json:"busyBefore"`
	// ServerLog is the end of what the server wrote to its standard error
	// (it runs at log level warn, so anything there is worth reading).
	ServerLog string `json:"serverLog,omitempty"`
}

// BusyWarn is the share of the machine other processes may take before a
// run is said to be disturbed.
const BusyWarn = 0.15

// Summary is one server over its runs: throughput as the median with the
// range, latencies as medians of the runs' percentiles, counts summed.
type Summary struct {
	Server        string  `json:"server"`
	Runs          int     `json:"runs"`   // with a result
	Failed        int     `json:"failed"` // without one
	VerdictWrong  int     `json:"verdictWrong"`
	Throughput    float64 `json:"throughput"`
	ThroughputMin float64 `json:"throughputMin"`
	ThroughputMax float64 `json:"throughputMax"`
	P50           float64 `json:"p50"`
	P99           float64 `json:"p99"`
	P999          float64 `json:"p999"`
	Errors        int64   `json:"errors"`
	Non2xx        int64   `json:"non2xx"`
	Pending       int64   `json:"pending"`      // 202 answers
	GeneratorCPU  string  `json:"generatorCPU"` // the median share of the machine, else each run's value
	// The median CPU per measured request, µs, of the server's processes
	// and of the generator (0: unknown): which side a request's cost is on.
	ServerMicros    float64 `json:"serverMicrosPerRequest"`
	GeneratorMicros float64 `json:"generatorMicrosPerRequest"`
}

// Median returns the median of xs (the mean of the middle two for an even
// count), and NaN for none. xs is not changed.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// Summarize groups runs by server, in the order of servers.
func Summarize(servers []string, runs []Run) []Summary {
	out := make([]Summary, 0, len(servers))
	for _, srv := range servers {
		s := Summary{Server: srv}
		var tput, p50, p99, p999, cpu, srvUs, genUs []float64
		var cpuRaw []string
		for _, r := range runs {
			if r.Server != srv {
				continue
			}
			if r.VerdictWrong {
				s.VerdictWrong++
			}
			if r.Result == nil {
				s.Failed++
				continue
			}
			g := r.Result
			s.Runs++
			tput = append(tput, g.Throughput)
			p50, p99, p999 = append(p50, g.Latency.P50), append(p99, g.Latency.P99), append(p999, g.Latency.P999)
			s.Errors += g.ErrorCount()
			s.Non2xx += g.Non2xx()
			s.Pending += g.Pending()
			if c, ok := g.CPU(); ok {
				cpu = append(cpu, c)
			} else if c := compact(g.GeneratorCPU); c != "" {
				cpuRaw = append(cpuRaw, c)
			}
			su, gu := g.CPUPerRequest()
			if su > 0 {
				srvUs = append(srvUs, su)
			}
			if gu > 0 {
				genUs = append(genUs, gu)
			}
		}
		if s.Runs > 0 {
			s.Throughput, s.ThroughputMin, s.ThroughputMax = Median(tput), slices.Min(tput), slices.Max(tput)
			s.P50, s.P99, s.P999 = Median(p50), Median(p99), Median(p999)
		}
		if len(srvUs) > 0 {
			s.ServerMicros = Median(srvUs)
		}
		if len(genUs) > 0 {
			s.GeneratorMicros = Median(genUs)
		}
		switch {
		case len(cpu) > 0:
			s.GeneratorCPU = pct(Median(cpu))
		case len(cpuRaw) > 0:
			s.GeneratorCPU = strings.Join(cpuRaw, "; ")
		}
		out = append(out, s)
	}
	return out
}

// Check is one line of the verdict on the targets.
type Check struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"` // NaN (null in JSON) when not measurable
	Target string  `json:"target"`
	// Result is PASS, MISS, info (no target) or n/a (a server is missing).
	Result string `json:"result"`
}

// MarshalJSON writes a NaN value as null.
func (c Check) MarshalJSON() ([]byte, error) {
	type plain Check
	var v any
	if !math.IsNaN(c.Value) && !math.IsInf(c.Value, 0) {
		v = c.Value
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // targets read ">= 1.50"
	err := enc.Encode(struct {
		plain
		Value any `json:"value"`
	}{plain(c), v})
	return bytes.TrimSpace(buf.Bytes()), err
}

// Targets are the figures.
const (
	TargetVsRedis = 1.5  // flashgate req/s >= 1.5 x the Redis-Lua reference
	TargetVsBare  = 0.60 // flashgate req/s >= 0.60 x the bare handler
)

// Checks computes the ratios and their verdicts from the summaries.
func Checks(sums []Summary) []Check {
	by := map[string]Summary{}
	for _, s := range sums {
		if s.Runs > 0 {
			by[s.Server] = s
		}
	}
	ratio := func(name, a, b string, target float64, atLeast bool, info bool, val func(Summary) float64) Check {
		c := Check{Name: name, Value: math.NaN(), Result: "n/a"}
		switch {
		case info:
			c.Target = "-"
		case atLeast:
			c.Target = fmt.Sprintf(">= %.2f", target)
		default:
			c.Target = fmt.Sprintf("<= %.2f", target)
		}
		sa, okA := by[a]
		sb, okB := by[b]
		if !okA || !okB || val(sb) <= 0 {
			return c
		}
		c.Value = val(sa) / val(sb)
		switch {
		case info:
			c.Result = "info"
		case atLeast && c.Value >= target, !atLeast && c.Value <= target:
			c.Result = "PASS"
		default:
			c.Result = "MISS"
		}
		return c
	}
	tput := func(s Summary) float64 { return s.Throughput }
	p99 := func(s Summary) float64 { return s.P99 }
	out := []Check{
		ratio("flashgate / redis req/s", Flashgate, Redis, TargetVsRedis, true, false, tput),
		ratio("flashgate / bare req/s", Flashgate, Bare, TargetVsBare, true, false, tput),
		ratio("redis / bare req/s", Redis, Bare, 0, false, true, tput),
		ratio("flashgate p99 / redis p99", Flashgate, Redis, 1, false, false, p99),
	}
	// The targets count runs where every request succeeded.
	ok := Check{Name: "flashgate: every request a success", Value: math.NaN(), Target: "0 errors, 0 non-2xx, 0 pending", Result: "n/a"}
	if s, found := by[Flashgate]; found {
		ok.Value = float64(s.Errors + s.Non2xx + s.Pending)
		ok.Result = "PASS"
		if s.Errors+s.Non2xx+s.Pending > 0 {
			ok.Result = "MISS"
		}
	}
	return append(out, ok)
}

// pct formats a share as a percentage.
func pct(v float64) string { return strconv.FormatFloat(v*100, 'f', 0, 64) + "%" }

// ms formats milliseconds for the table.
func ms(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

// WriteTable prints the summaries and the checks for people.
func WriteTable(w io.Writer, sums []Summary, checks []Check) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\treq/s (median)\tmin-max\tp50\tp99\tp99.9\terrors\tnon-2xx\tgen CPU\tCPU µs/req: server\tgenerator\truns\t")
	for _, s := range sums {
		if s.Runs == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t0/%d\t\n", s.Server, s.Failed)
			continue
		}
		cpu := s.GeneratorCPU
		if cpu == "" {
			cpu = "-"
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f-%.0f\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%d/%d\t\n", s.Server, s.Throughput,
			s.ThroughputMin, s.ThroughputMax, ms(s.P50), ms(s.P99), ms(s.P999), s.Errors, s.Non2xx, cpu,
			micro(s.ServerMicros), micro(s.GeneratorMicros), s.Runs, s.Runs+s.Failed)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ratio\tvalue\ttarget\tresult")
	for _, c := range checks {
		v := "-"
		if !math.IsNaN(c.Value) {
			v = fmt.Sprintf("%.2f", c.Value)
			if strings.HasPrefix(c.Name, "flashgate: every") {
				v = fmt.Sprintf("%.0f failed", c.Value)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Name, v, c.Target, c.Result)
	}
	return tw.Flush()
}

// RunLine is one run's progress line.
func RunLine(r Run, of int) string {
	head := fmt.Sprintf("run %d/%d %-9s", r.N, of, r.Server)
	busy := ""
	if r.BusyBefore >= BusyWarn {
		busy = fmt.Sprintf("  (other processes kept the machine %s busy before the run: noisy)", pct(r.BusyBefore))
	}
	if r.Result == nil {
		return head + " FAILED: " + r.Failed + busy
	}
	g := r.Result
	line := fmt.Sprintf("%s %8.0f req/s  p50 %s  p99 %s  p99.9 %s  errors %d  non-2xx %d", head, g.Throughput,
		ms(g.Latency.P50), ms(g.Latency.P99), ms(g.Latency.P999), g.ErrorCount(), g.Non2xx())
	if n := g.Pending(); n > 0 {
		line += fmt.Sprintf("  pending (202) %d", n)
	}
	if c, ok := g.CPU(); ok {
		line += "  gen CPU " + pct(c)
	} else if c := compact(g.GeneratorCPU); c != "" {
		line += "  gen CPU " + c
	}
	if su, gu := g.CPUPerRequest(); su > 0 || gu > 0 {
		line += fmt.Sprintf("  CPU/req server %s µs, generator %s µs", micro(su), micro(gu))
	}
	if g.Shoppers.SetupSeconds > 0 {
		line += fmt.Sprintf("  (%d sessions made in %.1fs before)", g.Shoppers.Pool, g.Shoppers.SetupSeconds)
	}
	line += busy
	if g.Shoppers.Exhausted {
		line += fmt.Sprintf("  (the pool of %d sessions ran out: %.1fs measured)", g.Shoppers.Pool, g.DurationSeconds)
	}
	if b := compact(g.Bottleneck); b != "" && b != "false" && b != "server" && b != "none" {
		line += "  bottleneck: " + b
	}
	for _, n := range g.Notes {
		line += "  note: " + n
	}
	if r.ServerLog != "" {
		line += "\n    the server's log ends:\n      " + strings.ReplaceAll(r.ServerLog, "\n", "\n      ")
	}
	if r.VerdictWrong {
		line += "  VERDICT WRONG: " + strings.Join(g.Verdict.Problems, "; ")
	}
	return line
}

// PoolSize is how many sessions to make before a run expected to go at rate
// requests a second for window (warm-up and measured phase): 60% more than
// that (runs on a shared machine vary that much), rounded up to a thousand,
// at least 10,000. Too few end the run early; too many cost set-up time at
// about the server's own rate.
func PoolSize(rate float64, window time.Duration) int64 {
	n := int64(math.Ceil(rate*window.Seconds()*1.6/1000)) * 1000
	return max(n, 10000)
}

// BusyNote warns when other processes kept the machine busy before some
// runs, or is "".
func BusyNote(runs []Run) string {
	var busy []float64
	for _, r := range runs {
		if r.BusyBefore >= BusyWarn {
			busy = append(busy, r.BusyBefore)
		}
	}
	if len(busy) == 0 {
		return ""
	}
	return fmt.Sprintf("note: other processes kept the machine busy before %d of %d runs (median %s of its CPU): "+
		"every server had less than the whole machine, and the figures are noisy", len(busy), len(runs), pct(Median(busy)))
}

// micro renders a CPU time per request in µs, "-" when unknown.
func micro(v float64) string {
	if v <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

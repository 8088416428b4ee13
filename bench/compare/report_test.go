package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{10, 10, 1}, 10},
	} {
		in := append([]float64(nil), tc.in...)
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", in, got, tc.want)
		}
		for i := range in {
			if in[i] != tc.in[i] {
				t.Fatalf("Median changed its input: %v", tc.in)
			}
		}
	}
	if got := Median(nil); !math.IsNaN(got) {
		t.Errorf("Median(nil) = %v, want NaN", got)
	}
}

func readFixture(t *testing.T) *GenResult {
	t.Helper()
	b, err := os.ReadFile("testdata/generator.json")
	if err != nil {
		t.Fatal(err)
	}
	g, err := ParseGenResult(b)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestParseGenResult(t *testing.T) {
	g := readFixture(t)
	if g.Throughput != 25000.5 || g.Latency.P50 != 2.1 || g.Latency.P99 != 6.25 || g.Latency.P999 != 11.5 {
		t.Errorf("throughput and latency: %+v", g)
	}
	if n := g.Non2xx(); n != 10 {
		t.Errorf("Non2xx = %d, want 10 (410 x7, 503 x3)", n)
	}
	if n := g.ErrorCount(); n != 2 {
		t.Errorf("ErrorCount = %d, want 2", n)
	}
	if c, ok := g.CPU(); !ok || c != 0.31 {
		t.Errorf("CPU = %v, %v", c, ok)
	}
	if !g.Verdict.Checked || !g.Verdict.OK {
		t.Errorf("verdict: %+v", g.Verdict)
	}
	// The generator: 0.31 of 2 CPUs for 10.0003 s over 250,010 requests.
	if srv, gen := g.CPUPerRequest(); srv != 36 || math.Abs(gen-24.80) > 0.01 {
		t.Errorf("CPUPerRequest = %v, %v; want 36 and 24.80", srv, gen)
	}
	if srv, gen := (&GenResult{GeneratorCPU: json.RawMessage(`"n/a"`)}).CPUPerRequest(); srv != 0 || gen != 0 {
		t.Errorf("CPUPerRequest without the figures = %v, %v; want 0, 0", srv, gen)
	}
	if _, err := ParseGenResult([]byte("{")); err == nil {
		t.Error("a broken result parsed")
	}
}

func TestErrorCountShapes(t *testing.T) {
	for raw, want := range map[string]int64{
		``: 0, `null`: 0, `7`: 7, `["a","b"]`: 2, `{"timeout":3,"reset":2}`: 5, `{"x":"y"}`: 1,
	} {
		g := &GenResult{Errors: json.RawMessage(raw)}
		if got := g.ErrorCount(); got != want {
			t.Errorf("ErrorCount(%s) = %d, want %d", raw, got, want)
		}
	}
	g := &GenResult{Status: map[string]int64{"0": 4, "200": 1, "201": 2, "302": 1, "429": 5}}
	if got := g.Non2xx(); got != 6 {
		t.Errorf("Non2xx = %d, want 6 (status 0 is a transport error, not an answer)", got)
	}
}

func result(tput, p99 float64) *GenResult {
	return &GenResult{Throughput: tput, Latency: Latency{P50: p99 / 4, P99: p99, P999: p99 * 2},
		Status: map[string]int64{"201": 100}, GeneratorCPU: json.RawMessage("0.5")}
}

// runs are three interleaved rounds of the three servers.
func runs() []Run {
	return []Run{
		{Server: Flashgate, N: 1, Result: result(30000, 5)},
		{Server: Redis, N: 1, Result: result(18000, 9)},
		{Server: Bare, N: 1, Result: result(44000, 3)},
		{Server: Flashgate, N: 2, Result: result(33000, 4)},
		{Server: Redis, N: 2, Result: result(17000, 8)},
		{Server: Bare, N: 2, Result: result(40000, 3)},
		{Server: Flashgate, N: 3, Result: result(28000, 6)},
		{Server: Redis, N: 3, Failed: "generator: exit status 1"},
		{Server: Bare, N: 3, Result: result(42000, 2)},
	}
}

func TestSummarize(t *testing.T) {
	sums := Summarize([]string{Flashgate, Redis, Bare}, runs())
	if len(sums) != 3 || sums[0].Server != Flashgate || sums[1].Server != Redis || sums[2].Server != Bare {
		t.Fatalf("order: %+v", sums)
	}
	f, r, b := sums[0], sums[1], sums[2]
	if f.Throughput != 30000 || f.ThroughputMin != 28000 || f.ThroughputMax != 33000 || f.P99 != 5 || f.Runs != 3 {
		t.Errorf("flashgate: %+v", f)
	}
	if r.Throughput != 17500 || r.Runs != 2 || r.Failed != 1 || r.P99 != 8.5 {
		t.Errorf("redis (one failed run, median of two): %+v", r)
	}
	if b.Throughput != 42000 || b.GeneratorCPU != "50%" {
		t.Errorf("bare: %+v", b)
	}
}

// TestSummarizeCPUPerRequest: the server's and the generator's CPU per
// request are the medians of the runs that have them, and the table and a
// run's line show them.
func TestSummarizeCPUPerRequest(t *testing.T) {
	withCPU := func(tput, server float64) *GenResult {
		g := result(tput, 5)
		g.NumCPU, g.Requests, g.DurationSeconds = 2, int64(tput*10), 10
		g.ServerCPU = &struct {
			Cores            float64 `json:"cores"`
			PerRequestMicros float64 `json:"perRequestMicros"`
		}{Cores: 1, PerRequestMicros: server}
		return g
	}
	rs := []Run{
		{Server: Flashgate, N: 1, Result: withCPU(10000, 80)},
		{Server: Flashgate, N: 2, Result: withCPU(12500, 90)},
		{Server: Flashgate, N: 3, Result: withCPU(11000, 85.25)},
		{Server: Bare, N: 1, Result: result(20000, 3)}, // an older generator: no figures
	}
	sums := Summarize([]string{Flashgate, Bare}, rs)
	// The generator used 0.5 of 2 CPUs: 1 CPU-second a second, over 1,000 to 1,250 requests a second.
	if f := sums[0]; f.ServerMicros != 85.25 || math.Abs(f.GeneratorMicros-90.91) > 0.01 {
		t.Errorf("flashgate: server %v µs, generator %v µs; want 85.25 and 90.91", f.ServerMicros, f.GeneratorMicros)
	}
	if b := sums[1]; b.ServerMicros != 0 || b.GeneratorMicros != 0 {
		t.Errorf("bare without figures: %v, %v", b.ServerMicros, b.GeneratorMicros)
	}
	var buf bytes.Buffer
	if err := WriteTable(&buf, sums, Checks(sums)); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "CPU µs/req: server") || !strings.Contains(out, "85.2") || !strings.Contains(out, "90.9") {
		t.Errorf("table:\n%s", out)
	}
	if line := RunLine(rs[0], 3); !strings.Contains(line, "CPU/req server 80.0 µs, generator 100.0 µs") {
		t.Errorf("run line: %q", line)
	}
}

func check(t *testing.T, cs []Check, name string) Check {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %q in %+v", name, cs)
	return Check{}
}

func TestChecks(t *testing.T) {
	cs := Checks(Summarize([]string{Flashgate, Redis, Bare}, runs()))
	vsRedis := check(t, cs, "flashgate / redis req/s")
	if math.Abs(vsRedis.Value-30000.0/17500) > 1e-9 || vsRedis.Result != "PASS" || vsRedis.Target != ">= 1.50" {
		t.Errorf("vs redis: %+v", vsRedis)
	}
	vsBare := check(t, cs, "flashgate / bare req/s")
	if math.Abs(vsBare.Value-30000.0/42000) > 1e-9 || vsBare.Result != "PASS" {
		t.Errorf("vs bare: %+v", vsBare)
	}
	if c := check(t, cs, "redis / bare req/s"); c.Result != "info" || math.Abs(c.Value-17500.0/42000) > 1e-9 {
		t.Errorf("redis vs bare: %+v", c)
	}
	if c := check(t, cs, "flashgate p99 / redis p99"); c.Result != "PASS" || math.Abs(c.Value-5/8.5) > 1e-9 || c.Target != "<= 1.00" {
		t.Errorf("p99: %+v", c)
	}
	if c := check(t, cs, "flashgate: every request a success"); c.Result != "PASS" || c.Value != 0 {
		t.Errorf("success: %+v", c)
	}

	// Misses, exactly at the targets, and a missing server.
	sums := []Summary{
		{Server: Flashgate, Runs: 1, Throughput: 20000, P99: 9, Non2xx: 3},
		{Server: Redis, Runs: 1, Throughput: 15000, P99: 9},
		{Server: Bare, Runs: 0, Failed: 3},
	}
	cs = Checks(sums)
	if c := check(t, cs, "flashgate / redis req/s"); c.Result != "MISS" {
		t.Errorf("20000/15000 should miss 1.5: %+v", c)
	}
	if c := check(t, cs, "flashgate p99 / redis p99"); c.Result != "PASS" {
		t.Errorf("equal p99 passes: %+v", c)
	}
	if c := check(t, cs, "flashgate / bare req/s"); c.Result != "n/a" || !math.IsNaN(c.Value) {
		t.Errorf("no bare run: %+v", c)
	}
	if c := check(t, cs, "flashgate: every request a success"); c.Result != "MISS" || c.Value != 3 {
		t.Errorf("non-2xx answers: %+v", c)
	}
	sums[0].Non2xx, sums[0].Pending = 0, 2 // 202 pending is 2xx, not a success
	if c := check(t, Checks(sums), "flashgate: every request a success"); c.Result != "MISS" || c.Value != 2 {
		t.Errorf("pending answers: %+v", c)
	}
	g := &GenResult{Status: map[string]int64{"201": 5, "202": 4}}
	if g.Pending() != 4 || g.Non2xx() != 0 {
		t.Errorf("pending %d non-2xx %d, want 4 and 0", g.Pending(), g.Non2xx())
	}
	if line := RunLine(Run{Server: Flashgate, N: 1, Result: g, ServerLog: "a warning"}, 1); !strings.Contains(line, "pending (202) 4") || !strings.Contains(line, "a warning") {
		t.Errorf("run line: %s", line)
	}
	sums[1].Throughput = 20000 / 1.5
	if c := check(t, Checks(sums), "flashgate / redis req/s"); c.Result != "PASS" {
		t.Errorf("exactly 1.5 passes: %+v", c)
	}
	b, err := json.Marshal(cs)
	if err != nil {
		t.Fatal(err)
	}
	var back []map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if v, ok := back[1]["value"]; !ok || v != nil || back[1]["name"] != "flashgate / bare req/s" {
		t.Errorf("NaN should be null in JSON: %s", b)
	}
	if back[0]["target"] != ">= 1.50" {
		t.Errorf("target in JSON: %s", b)
	}
}

func TestWriteTable(t *testing.T) {
	sums := Summarize([]string{Flashgate, Redis, Bare}, runs())
	var buf bytes.Buffer
	if err := WriteTable(&buf, sums, Checks(sums)); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"req/s (median)", "30000", "28000-33000", "5.00 ms", "2/3",
		"flashgate / redis req/s", "1.71", ">= 1.50", "PASS", "redis / bare req/s", "info", "0 failed"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	line := RunLine(runs()[7], 3)
	if !strings.Contains(line, "run 3/3 redis") || !strings.Contains(line, "FAILED: generator") {
		t.Errorf("failed run line: %q", line)
	}
	g := readFixture(t)
	line = RunLine(Run{Server: Flashgate, N: 1, Result: g}, 3)
	if !strings.Contains(line, "25000 req/s") || !strings.Contains(line, "non-2xx 10") || strings.Contains(line, "bottleneck") {
		t.Errorf("run line: %q", line)
	}
	if line := RunLine(Run{Server: Bare, N: 1, Result: g, BusyBefore: 0.4}, 3); !strings.Contains(line, "machine 40% busy before the run") {
		t.Errorf("run line should say the machine was busy: %q", line)
	}
	g.Shoppers.Exhausted, g.Shoppers.Pool, g.DurationSeconds = true, 1000, 0.5
	if line := RunLine(Run{Server: Bare, N: 1, Result: g}, 3); !strings.Contains(line, "pool of 1000 sessions ran out: 0.5s measured") {
		t.Errorf("run line should say the pool ran out: %q", line)
	}
	g.Bottleneck = json.RawMessage(`"generator CPU"`)
	if line := RunLine(Run{Server: Bare, N: 1, Result: g}, 3); !strings.Contains(line, "bottleneck: generator CPU") {
		t.Errorf("run line should name a generator bottleneck: %q", line)
	}
}

func TestParseFlags(t *testing.T) {
	var stderr bytes.Buffer
	c, err := parseFlags([]string{"-servers", "bare, redis", "-runs", "5"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Servers, ",") != "bare,redis" || c.Runs != 5 || c.Generator != c.Flashgate || c.HeapFloor != "auto" {
		t.Errorf("config: %+v", c)
	}
	if c, err := parseFlags([]string{"-heap-floor", "512MiB"}, &stderr); err != nil || c.HeapFloor != "512MiB" {
		t.Errorf("-heap-floor 512MiB: %+v, %v", c, err)
	}
	for _, args := range [][]string{{"-servers", "nginx"}, {"-runs", "0"}, {"-duration", "0s"}, {"extra"}, {"-heap-floor", "lots"}} {
		if _, err := parseFlags(args, &stderr); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestPoolSize(t *testing.T) {
	for _, tc := range []struct {
		rate   float64
		window time.Duration
		want   int64
	}{
		{25000, 12 * time.Second, 480000},
		{10000, 7 * time.Second, 112000},
		{3333, 6 * time.Second, 32000},
		{1, time.Second, 10000},
		{0, 0, 10000},
	} {
		if got := PoolSize(tc.rate, tc.window); got != tc.want {
			t.Errorf("PoolSize(%v, %v) = %d, want %d", tc.rate, tc.window, got, tc.want)
		}
	}
}

func TestBusyNote(t *testing.T) {
	rs := runs()
	if n := BusyNote(rs); n != "" {
		t.Errorf("quiet machine: %q", n)
	}
	rs[0].BusyBefore, rs[4].BusyBefore, rs[5].BusyBefore = 0.9, 0.5, 0.1
	if n := BusyNote(rs); !strings.Contains(n, "busy before 2 of 9 runs (median 70% of its CPU)") {
		t.Errorf("busy machine: %q", n)
	}
}

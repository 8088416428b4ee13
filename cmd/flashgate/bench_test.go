package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchResult is the part of bench --json the tests read, by the
// documented names.
type benchResult struct {
	Scenario        string
	Model           string
	URL             string
	Embedded        bool
	Requests        int64
	Iterations      int64
	DurationSeconds float64
	Throughput      float64
	Latency         struct{ P50, P90, P99, P999, Max, Mean float64 }
	Status          map[string]int64
	Errors          int64
	GeneratorCPU    float64
	ServerCPU       *struct {
		PIDs             []int
		Cores            float64
		PerRequestMicros float64
	}
	Bottleneck *string
	Verdict    struct {
		Checked, OK bool
		Problems    []string
	}
	Kinds map[string]struct {
		Requests int64
		Status   map[string]int64
		Outcomes map[string]int64
	}
	Series []struct{ T, Requests int64 }
}

// runBench runs flashgate bench in this process and returns its exit
// code, standard output and standard error.
func runBench(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, append([]string{"bench"}, args...), func(string) string { return "" }, &out, &errb)
	return code, out.String(), errb.String()
}

func readResult(t *testing.T, path string) benchResult {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r benchResult
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("--json: %v\n%s", err, b)
	}
	// The fields another program reads are there by these names.
	var top map[string]json.RawMessage
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scenario", "model", "url", "requests", "durationSeconds", "throughput", "latency", "status",
		"errors", "generatorCPU", "bottleneck", "verdict", "kinds", "series"} {
		if _, ok := top[k]; !ok {
			t.Errorf("--json has no %q", k)
		}
	}
	return r
}

// checkReport checks that the HTML report is one whole page with charts
// drawn in well-formed SVG and nothing fetched from elsewhere.
func checkReport(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	if !strings.HasPrefix(page, "<!doctype html>") || !strings.HasSuffix(strings.TrimSpace(page), "</html>") {
		t.Errorf("the report is not a whole HTML page:\n%.300s", page)
	}
	for _, outside := range []string{"<script", "<link", "src=", "@import", "url("} {
		if strings.Contains(page, outside) {
			t.Errorf("the report loads something (%s)", outside)
		}
	}
	svgs := 0
	for rest := page; ; {
		i := strings.Index(rest, "<svg")
		if i < 0 {
			break
		}
		j := strings.Index(rest[i:], "</svg>")
		if j < 0 {
			t.Fatal("an svg is not closed")
		}
		svg := rest[i : i+j+len("</svg>")]
		dec := xml.NewDecoder(strings.NewReader(svg))
		for {
			_, err := dec.Token()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("svg %d is not well-formed: %v\n%.300s", svgs, err, svg)
			}
		}
		if !strings.Contains(svg, "<polyline") {
			t.Errorf("svg %d draws no line", svgs)
		}
		svgs++
		rest = rest[i+j:]
	}
	if svgs != 2 {
		t.Errorf("%d charts, want latency and throughput", svgs)
	}
}

// TestBenchEmbedded runs flashgate bench against an embedded server for
// each scenario: every request succeeds and the server's figures agree.
func TestBenchEmbedded(t *testing.T) {
	for _, tc := range []struct {
		scenario string
		requests string
		report   bool
		check    func(t *testing.T, r benchResult)
	}{
		{"tokens", "300", true, func(t *testing.T, r benchResult) {
			if r.Status["201"] != 300 || len(r.Status) != 1 {
				t.Errorf("token answers %v, want 300 x 201", r.Status)
			}
		}},
		{"purchase", "300", true, func(t *testing.T, r benchResult) {
			if tk := r.Kinds["token"]; tk.Requests != 300 || tk.Status["201"] != 300 {
				t.Errorf("tokens %+v", tk)
			}
			if r.Status["202"] != 300 || len(r.Status) != 1 {
				t.Errorf("purchase answers %v, want 300 x 202", r.Status)
			}
		}},
		{"queue", "100", false, func(t *testing.T, r benchResult) {
			if r.Status["201"] != 100 {
				t.Errorf("joins %v", r.Status)
			}
			if a := r.Kinds["admission"]; a.Outcomes["admitted"] != 100 {
				t.Errorf("admissions %+v", a)
			}
			if p := r.Kinds["purchase"]; p.Status["202"] != 100 {
				t.Errorf("purchases %+v", p)
			}
		}},
		{"mixed", "300", false, func(t *testing.T, r benchResult) {
			// About 90 abusive iterations, a third of each kind (the
			// virtual users that straddle the end of the warm-up shift
			// the share a little): no session and forged tokens are
			// refused 401. The embedded server enforces the per-shopper
			// limits (tokens-shopper: 10 at once, 2 a second), so the
			// too-fast shopper is answered its one token until it has
			// spent them and 429 after. Every measured iteration is one
			// of the four.
			var abusive int64
			for kind, ok := range map[string]func(map[string]int64) int64{
				"no-session": func(st map[string]int64) int64 { return st["401"] },
				"bad-token":  func(st map[string]int64) int64 { return st["401"] + st["429"] }, // 429 once a session spent its allowance
				"too-fast":   func(st map[string]int64) int64 { return st["201"] + st["200"] + st["429"] },
			} {
				k := r.Kinds[kind]
				if k.Requests < 20 || k.Requests > 40 || ok(k.Status) != k.Requests {
					t.Errorf("%s: %+v", kind, k)
				}
				abusive += k.Requests
			}
			if fast := r.Kinds["too-fast"]; fast.Status["429"] == 0 {
				t.Errorf("too-fast %v: want 429 rate_limited once its allowance is spent", fast.Status)
			}
			if r.Status["202"] != r.Kinds["purchase"].Requests || len(r.Status) != 1 || abusive+r.Status["202"] != 300 {
				t.Errorf("honest purchases %v and %d abusive, want 300 in all", r.Status, abusive)
			}
		}},
	} {
		t.Run(tc.scenario, func(t *testing.T) {
			dir := t.TempDir()
			jsonPath, htmlPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
			args := []string{"--scenario", tc.scenario, "--requests", tc.requests, "--vus", "16", "--warmup", "200ms", "--quiet", "--json", jsonPath}
			if tc.report {
				args = append(args, "--report", htmlPath)
			}
			code, out, errs := runBench(t, args...)
			if code != 0 {
				t.Fatalf("exit %d\n%s\n%s", code, out, errs)
			}
			if !strings.Contains(out, "embedded flashgate on http://127.0.0.1:") || !strings.Contains(out, "verdict: correct") {
				t.Errorf("text output:\n%s", out)
			}
			r := readResult(t, jsonPath)
			if r.Scenario != tc.scenario || r.Model != "closed" || !r.Embedded || r.Errors != 0 || r.Iterations == 0 {
				t.Errorf("scenario %s model %s embedded %v errors %d iterations %d", r.Scenario, r.Model, r.Embedded, r.Errors, r.Iterations)
			}
			if !r.Verdict.Checked || !r.Verdict.OK || len(r.Verdict.Problems) != 0 {
				t.Errorf("verdict %+v", r.Verdict)
			}
			if r.Throughput <= 0 || r.Latency.P50 <= 0 || r.Latency.P99 < r.Latency.P50 || r.Latency.Max < r.Latency.P999 || len(r.Series) == 0 {
				t.Errorf("figures: throughput %v latency %+v series %d", r.Throughput, r.Latency, len(r.Series))
			}
			tc.check(t, r)
			t.Logf("%s: %.0f/s, p50 %.2f ms, p99 %.2f ms", tc.scenario, r.Throughput, r.Latency.P50, r.Latency.P99)
			if tc.report {
				checkReport(t, htmlPath)
			}
		})
	}
}

// TestBenchURL runs flashgate bench against a server started apart (its
// admin token read from --data), in the open model, writing JSON to
// standard output and the text to standard error.
func TestBenchURL(t *testing.T) {
	data := t.TempDir()
	srv := serveInProcess(t, func(string) string { return "" },
		"--data", data, "--http", "127.0.0.1:0", "--demo=false", "--session-rate=-1", "--rate-limit=off", "--log-level", "warn")
	t.Cleanup(func() { srv.Stop(t) })
	// The server runs in this process, so its CPU is this process's.
	pid := strconv.Itoa(os.Getpid())
	code, out, errs := runBench(t, "--url", srv.url, "--data", data, "--rate", "200", "--duration", "1s", "--warmup", "200ms",
		"--quiet", "--json", "-", "--server-pid", pid)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	var r benchResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("--json -: %v\n%s", err, out)
	}
	if r.Model != "open" || r.Embedded || r.URL != srv.url || r.Requests != 200 || r.Status["201"] != 200 || !r.Verdict.OK {
		t.Errorf("model %s embedded %v url %s requests %d status %v verdict %+v", r.Model, r.Embedded, r.URL, r.Requests, r.Status, r.Verdict)
	}
	if !strings.Contains(errs, "open model, 200 iterations/s") || !strings.Contains(errs, "generator CPU") {
		t.Errorf("the text on standard error:\n%s", errs)
	}
	if runtime.GOOS == "linux" {
		// Read in ticks of 10 ms: a short run may show none.
		if c := r.ServerCPU; c == nil || len(c.PIDs) != 1 || c.PIDs[0] != os.Getpid() || c.Cores < 0 || c.PerRequestMicros < 0 {
			t.Errorf("serverCPU = %+v; want this process's CPU over the measured phase", c)
		} else if !strings.Contains(errs, "server CPU (pids "+pid+")") || !strings.Contains(errs, "µs per token request") {
			t.Errorf("the text lacks the server's CPU:\n%s", errs)
		}
	}
}

// TestBenchRefuses: settings that contradict each other are refused
// before anything starts.
func TestBenchRefuses(t *testing.T) {
	for _, args := range [][]string{
		{"--vus", "8", "--rate", "100"},
		{"--duration", "1s", "--requests", "10"},
		{"--scenario", "nope"},
		{"--abusive", "1"},
		{"--vus", "0"},
		{"--unknown"},
		{"--server-pid", "1"}, // without --url: the embedded server is the generator's process
		{"--url", "http://127.0.0.1:1", "--server-pid", "12,x"},
		{"--url", "http://127.0.0.1:1", "--server-pid", "0"},
		{"--url", "http://127.0.0.1:1", "--server-pid", "12,12"},
	} {
		if code, out, errs := runBench(t, args...); code != 2 {
			t.Errorf("bench %v: exit %d, want 2\n%s%s", args, code, out, errs)
		}
	}
	var out, errb bytes.Buffer
	env := map[string]string{"FLASHGATE_VUS": "many"}
	if code := run(context.Background(), []string{"bench"}, func(k string) string { return env[k] }, &out, &errb); code != 2 ||
		!strings.Contains(errb.String(), "FLASHGATE_VUS") {
		t.Errorf("a bad FLASHGATE_VUS: exit %d, %s", code, errb.String())
	}
}

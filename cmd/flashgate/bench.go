package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/loadgen"
	"golang.org/x/term"
)

// benchFlags are flashgate bench's settings.
type benchFlags struct {
	url, adminToken, data string
	scenario              string
	vus                   int
	rate                  float64
	maxInFlight           int
	duration, warmup      time.Duration
	requests              int64
	shoppers              int
	sale                  string
	stock                 int64
	abusive               float64
	jsonOut, report       string
	verdict, quiet        bool
	serverPIDs            string
	pids                  []int // serverPIDs, parsed (and checked) by check
}

func benchFlagSet(stderr io.Writer) (*flag.FlagSet, *benchFlags) {
	b := new(benchFlags)
	fs := newFlags("bench", stderr)
	fs.StringVar(&b.url, "url", "", "base URL of the server under test (default: start an embedded flashgate in this process, on a temporary data directory)")
	fs.StringVar(&b.adminToken, "admin-token", "", "admin token of --url, to create the sale and read its figures (default: read from --data)")
	fs.StringVar(&b.data, "data", "data", "data directory of --url's server, to read its admin token from")
	fs.StringVar(&b.scenario, "scenario", loadgen.ScenarioTokens, "tokens (a token per fresh shopper), purchase (token, then buy), queue (join the waiting room, wait for admission, buy) or mixed (purchase with a share of abusive clients)")
	fs.IntVar(&b.vus, "vus", loadgen.DefaultVUs, "closed model: virtual users, each running iterations back to back")
	fs.Float64Var(&b.rate, "rate", 0, "open model: iterations started per second on schedule, whatever the answers (instead of --vus)")
	fs.IntVar(&b.maxInFlight, "max-in-flight", loadgen.DefaultMaxInFlight, "open model: iterations in flight at most; starts beyond are dropped and counted")
	fs.DurationVar(&b.duration, "duration", loadgen.DefaultDuration, "length of the measured phase")
	fs.Int64Var(&b.requests, "requests", 0, "measured iterations, instead of --duration")
	fs.DurationVar(&b.warmup, "warmup", 2*time.Second, "load before the measured phase, not measured")
	fs.IntVar(&b.shoppers, "shoppers", 0, "sessions made before the run, one per honest iteration (default: open model rate x (warmup+duration) x 1.1; closed model 200000, or --requests and a warm-up share)")
	fs.StringVar(&b.sale, "sale", "", "an existing sale to run against (default: create bench-<unix nanos>)")
	fs.Int64Var(&b.stock, "stock", 0, "stock of the created sale (default: one unit per shopper, so every honest request can succeed)")
	fs.Float64Var(&b.abusive, "abusive", 0.3, "mixed: share of abusive iterations (no session, forged tokens, one session too fast)")
	fs.StringVar(&b.jsonOut, "json", "", "write the whole result as JSON to this file (-: standard output, the text then goes to standard error)")
	fs.StringVar(&b.report, "report", "", "write a self-contained HTML report with latency and throughput charts to this file")
	fs.BoolVar(&b.verdict, "verdict", true, "check the server's figures after the run (false: a server without flashgate's admin API)")
	fs.BoolVar(&b.quiet, "quiet", false, "no progress line on standard error")
	fs.StringVar(&b.serverPIDs, "server-pid", "", "process ids (comma-separated) of --url's server on this machine: their CPU over the measured phase is reported, in all and per request (Linux)")
	return fs, b
}

func bench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, b := benchFlagSet(stderr)
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if problem := b.check(given); problem != "" {
		fmt.Fprintln(stderr, problem)
		return errUsage
	}

	out := stdout // the text for people
	if b.jsonOut == "-" {
		out = stderr
	}
	o := loadgen.Options{
		URL: b.url, AdminToken: b.adminToken, Scenario: b.scenario,
		Rate: b.rate, MaxInFlight: b.maxInFlight, Warmup: b.warmup,
		Shoppers: b.shoppers, Sale: b.sale, Stock: b.stock, Abusive: b.abusive,
		SkipVerdict: !b.verdict, ServerPIDs: b.pids,
	}
	if b.rate <= 0 {
		o.VUs = b.vus
	}
	if b.requests > 0 {
		o.Requests = b.requests
	} else {
		o.Duration = b.duration
	}
	if !b.quiet {
		o.Progress, o.ProgressEvery = stderr, 5*time.Second
		if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			o.ProgressLive, o.ProgressEvery = true, time.Second
		}
	}

	if b.url == "" {
		stop, err := benchServer(ctx, &o, stderr)
		if err != nil {
			return err
		}
		defer stop()
		fmt.Fprintf(out, "embedded flashgate on %s (temporary data directory); it shares this process and its CPU with the generator\n", o.URL)
		if o.Scenario == loadgen.ScenarioMixed {
			fmt.Fprintf(out, "rate limits: per shopper only (as flashgate serve --rate-limit=%s): every shopper comes from this one address\n", app.RateLimitShopper)
		}
	} else if o.AdminToken == "" && (o.Sale == "" || b.verdict) {
		if err := adminToken(&o.AdminToken, b.data); err != nil {
			return fmt.Errorf("%w (the admin token creates the sale and reads its figures; give --admin-token)", err)
		}
	}

	rep, err := loadgen.Bench(ctx, o)
	if err != nil && rep == nil {
		return err
	}
	rep.WriteText(out)
	if b.jsonOut != "" {
		if werr := writeJSONResult(b.jsonOut, stdout, rep); werr != nil {
			return werr
		}
	}
	if b.report != "" {
		if werr := writeHTMLReport(b.report, rep); werr != nil {
			return werr
		}
	}
	if err != nil {
		return err
	}
	if rep.Verdict.Checked && !rep.Verdict.OK {
		return loadgen.ErrIncorrect
	}
	return nil
}

// check returns what is wrong with the settings, or "".
func (b *benchFlags) check(given map[string]bool) string {
	known := false
	for _, s := range loadgen.Scenarios {
		known = known || s == b.scenario
	}
	switch {
	case !known:
		return fmt.Sprintf("--scenario %q: want tokens, purchase, queue or mixed", b.scenario)
	case given["vus"] && given["rate"]:
		return "--vus is the closed model, --rate the open model: give one"
	case given["duration"] && given["requests"]:
		return "--duration and --requests both set the length of the run: give one"
	case b.vus < 1:
		return "--vus: want at least 1"
	case b.rate < 0:
		return "--rate: want iterations per second > 0"
	case b.maxInFlight < 1:
		return "--max-in-flight: want at least 1"
	case b.requests < 0, b.shoppers < 0, b.stock < 0:
		return "--requests, --shoppers and --stock: want 0 (default) or more"
	case b.requests == 0 && b.duration <= 0:
		return "--duration: want more than 0"
	case b.warmup < 0:
		return "--warmup: want 0 or more"
	case b.abusive < 0 || b.abusive >= 1:
		return "--abusive: want a share from 0 to below 1"
	case b.serverPIDs != "" && b.url == "":
		return "--server-pid: the embedded server is this process (its CPU is the generator's); give --url"
	}
	b.pids = nil
	if b.serverPIDs == "" {
		return ""
	}
	for _, f := range strings.Split(b.serverPIDs, ",") {
		pid, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || pid < 1 {
			return fmt.Sprintf("--server-pid %q: want process ids, separated by commas", b.serverPIDs)
		}
		if slices.Contains(b.pids, pid) {
			return fmt.Sprintf("--server-pid %q: %d is given twice (its CPU would count twice)", b.serverPIDs, pid)
		}
		b.pids = append(b.pids, pid)
	}
	return ""
}

// benchServer starts an embedded flashgate for a run without --url: on a
// temporary data directory, on 127.0.0.1 with an OS-chosen port, no cap on
// new sessions, and serve's other defaults. Rate limits are off, except in
// the mixed scenario: there the policies that count by shopper are on (the
// too-fast client is there to meet them) and those that count by address
// are off, since every shopper of the run comes from 127.0.0.1.
func benchServer(ctx context.Context, o *loadgen.Options, stderr io.Writer) (stop func(), err error) {
	dir, err := os.MkdirTemp("", "flashgate-bench-")
	if err != nil {
		return nil, err
	}
	limits := app.RateLimitOff
	if o.Scenario == loadgen.ScenarioMixed {
		limits = app.RateLimitShopper
	}
	a, err := app.Start(ctx, app.Config{
		Data: dir, HTTP: "127.0.0.1:0", RateLimit: limits, SessionRate: -1,
		DecisionWait: defaultDecisionWait, MaxBody: defaultMaxBody, SessionTTL: defaultSessionTTL,
		MaxInFlight: defaultMaxInFlight, MaxBatch: defaultMaxBatch, WriterIdle: defaultWriterIdle, MaxQueueStreams: defaultQueueStreams, ReadyLag: defaultReadyLag,
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("embedded server: %w", err)
	}
	o.URL, o.AdminToken, o.Embedded = a.URL, a.AdminToken, true
	return func() {
		if err := a.Shutdown(); err != nil {
			fmt.Fprintf(stderr, "flashgate bench: embedded server shutdown: %v\n", err)
		}
		os.RemoveAll(dir)
	}, nil
}

func writeJSONResult(path string, stdout io.Writer, rep *loadgen.Report) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = stdout.Write(b)
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	return nil
}

func writeHTMLReport(path string, rep *loadgen.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	if err := rep.WriteHTML(f); err != nil {
		f.Close()
		return fmt.Errorf("--report: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--report: %w", err)
	}
	return nil
}

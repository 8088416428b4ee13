// Command compare is a benchmark-only program: it measures flashgate's token
// issue over HTTP side by side with the two reference servers of
// bench/refserver — the Redis-Lua design and a bare net/http handler — and
// prints the ratios the issue sets as targets. It builds nothing: `make
// bench` builds the binaries and passes their paths.
//
//	compare -flashgate bin/flashgate -refserver bin/refserver [-runs 3] [-vus 64] [-duration 10s] [-warmup 2s] [-heap-floor auto] [-json out.json]
//
// One server runs at a time, on a fresh data directory and a free loopback
// port, and the load generator (`flashgate bench --scenario tokens`) runs
// against it as a child process; the servers take turns (flashgate, redis,
// bare, flashgate, ...) so that noise on the machine falls on all of them.
// Each server's throughput is the median of its runs. The sessions the
// generator makes before a run (one per token request) are sized from the
// server's best rate so far, so that set-up costs little more than the run.
//
// It measures and does not gate: a MISS exits 0. It exits 1 when a run
// failed or a server's figures broke an invariant (the generator's
// verdict).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/flashgate/flashgate/internal/heapfloor"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "compare:", err)
		}
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	Flashgate   string        `json:"-"`
	Generator   string        `json:"-"`
	Refserver   string        `json:"-"`
	RedisServer string        `json:"-"`
	Servers     []string      `json:"servers"`
	Runs        int           `json:"runs"`
	VUs         int           `json:"vus"`
	Duration    time.Duration `json:"-"`
	Warmup      time.Duration `json:"-"`
	JSON        string        `json:"-"`
	Shoppers    int64         `json:"shoppers,omitempty"` // 0: sized from the server's last runs
	Expect      float64       `json:"expect"`             // req/s a first run is sized for
	DurationS   string        `json:"duration"`
	WarmupS     string        `json:"warmup"`
	CPUs        int           `json:"cpus"`
	HeapFloor   string        `json:"heapFloor"` // every server's Go heap floor
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	var servers string
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Flashgate, "flashgate", "bin/flashgate", "flashgate binary (the server under test)")
	fs.StringVar(&c.Generator, "generator", "", "load generator binary, run as `<generator> bench ...` (default: -flashgate)")
	fs.StringVar(&c.Refserver, "refserver", "bin/refserver", "reference server binary (bench/refserver)")
	fs.StringVar(&c.RedisServer, "redis-server", "", "redis-server binary (default: from PATH)")
	fs.StringVar(&servers, "servers", "flashgate,redis,bare", "servers to measure, in turn order")
	fs.IntVar(&c.Runs, "runs", 3, "runs of each server; its throughput is their median")
	fs.IntVar(&c.VUs, "vus", 64, "virtual shoppers (connections) of the load generator")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "measured time of each run")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "unmeasured warm-up before each run")
	fs.StringVar(&c.JSON, "json", "", "also write the runs, the summary and the ratios to this file")
	fs.Int64Var(&c.Shoppers, "shoppers", 0, "sessions the generator makes before each run (default: 1.6 x the server's best rate so far x (warmup+duration))")
	fs.StringVar(&c.HeapFloor, "heap-floor", "auto", "Go heap floor of every server (flashgate serve --heap-floor, refserver -heap-floor): auto, a size such as 512MiB, or 0 (off)")
	fs.Float64Var(&c.Expect, "expect", 15000, "req/s a server's first run is sized for, when -shoppers is not given")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.Generator == "" {
		c.Generator = c.Flashgate
	}
	for _, s := range strings.Split(servers, ",") {
		switch s = strings.TrimSpace(s); s {
		case Flashgate, Redis, Bare:
			c.Servers = append(c.Servers, s)
		case "":
		default:
			return c, fmt.Errorf("-servers: unknown server %q (flashgate, redis, bare)", s)
		}
	}
	switch {
	case len(c.Servers) == 0:
		return c, errors.New("-servers: none")
	case c.Runs < 1:
		return c, errors.New("-runs must be at least 1")
	case c.VUs < 1:
		return c, errors.New("-vus must be at least 1")
	case c.Duration <= 0:
		return c, errors.New("-duration must be positive")
	case c.Warmup < 0:
		return c, errors.New("-warmup must not be negative")
	case !validSize(c.HeapFloor):
		return c, fmt.Errorf("-heap-floor %q: auto, a size such as 512MiB, or 0", c.HeapFloor)
	case c.Shoppers < 0 || c.Expect <= 0:
		return c, errors.New("-shoppers must not be negative, -expect must be positive")
	}
	c.DurationS, c.WarmupS, c.CPUs = c.Duration.String(), c.Warmup.String(), runtime.NumCPU()
	return c, nil
}

func validSize(s string) bool {
	_, err := heapfloor.Setting(s)
	return err == nil
}

// report is what -json writes.
type report struct {
	Config  config    `json:"config"`
	Runs    []Run     `json:"runs"`
	Summary []Summary `json:"summary"`
	Checks  []Check   `json:"checks"`
	// OK is false when a run failed or a verdict was wrong (not on a MISS).
	OK bool `json:"ok"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	// The servers run in their own directories: absolute paths.
	for _, bin := range []struct {
		flag string
		path *string
	}{{"-flashgate", &c.Flashgate}, {"-generator", &c.Generator}, {"-refserver", &c.Refserver}, {"-redis-server", &c.RedisServer}} {
		if *bin.path == "" {
			continue
		}
		if _, err := os.Stat(*bin.path); err != nil {
			return fmt.Errorf("%s: %w", bin.flag, err)
		}
		if *bin.path, err = filepath.Abs(*bin.path); err != nil {
			return fmt.Errorf("%s: %w", bin.flag, err)
		}
	}
	fmt.Fprintf(stderr, "comparing %s: %d run(s) each, %d VUs, %v measured after %v warm-up, one server at a time\n",
		strings.Join(c.Servers, ", "), c.Runs, c.VUs, c.Duration, c.Warmup)
	var runs []Run
	best := map[string]float64{} // each server's best rate so far, to size its next pool
	for i := 1; i <= c.Runs; i++ {
		for _, srv := range c.Servers {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			shoppers := c.Shoppers
			if shoppers == 0 {
				rate := c.Expect
				if b, ok := best[srv]; ok {
					rate = b
				}
				shoppers = PoolSize(rate, c.Warmup+c.Duration)
			}
			r := measure(ctx, c, srv, i, shoppers)
			if r.Result != nil {
				best[srv] = max(best[srv], r.Result.Throughput)
			}
			runs = append(runs, r)
			fmt.Fprintln(stderr, RunLine(r, c.Runs))
		}
	}
	sums := Summarize(c.Servers, runs)
	checks := Checks(sums)
	fmt.Fprintln(stdout)
	if err := WriteTable(stdout, sums, checks); err != nil {
		return err
	}
	if note := BusyNote(runs); note != "" {
		fmt.Fprintln(stdout, "\n"+note)
	}
	rep := report{Config: c, Runs: runs, Summary: sums, Checks: checks, OK: true}
	var bad []string
	for _, r := range runs {
		switch {
		case r.VerdictWrong:
			bad = append(bad, fmt.Sprintf("%s run %d: the server's figures broke an invariant", r.Server, r.N))
		case r.Failed != "":
			bad = append(bad, fmt.Sprintf("%s run %d failed", r.Server, r.N))
		}
	}
	rep.OK = len(bad) == 0
	if c.JSON != "" {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
		if err := os.WriteFile(c.JSON, buf.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if !rep.OK {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

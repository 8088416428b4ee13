// Command refserver is a benchmark-only program: the two reference servers
// that flashgate's token issue over HTTP is measured against (see the
// README's "Benchmarks" and bench/compare). It is not part of flashgate and
// holds no data worth keeping.
//
//	refserver -mode bare  [-http 127.0.0.1:0] [-heap-floor auto]
//	refserver -mode redis [-http 127.0.0.1:0] -redis unix:/path/redis.sock -admin-token T [-pool 256] [-heap-floor auto]
//
// -mode bare answers every route with a fixed small JSON body, status 201:
// the ceiling of Go's net/http on the machine with the same load generator.
//
// -mode redis does the work flashgate's front does for a token request,
// but decides with one Redis Lua script per request (EVALSHA, falling back
// to EVAL once if Redis lost the script): the design flashgate is an
// alternative to. See redis.go for what it does and does not do.
//
// Either keeps the same Go heap floor as flashgate serve (-heap-floor, see
// internal/heapfloor), so that the comparison is between designs, not GC
// settings.
//
// Either prints "refserver (<mode>) is serving on <url>" on stdout once it
// listens, and stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/flashgate/flashgate/internal/heapfloor"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "refserver:", err)
		os.Exit(1)
	}
}

// config is the command line.
type config struct {
	Mode       string
	HTTP       string
	Redis      string
	AdminToken string
	Pool       int
	HeapFloor  uint64
}

func parseFlags(args []string, stderr io.Writer) (c config, err error) {
	fs := flag.NewFlagSet("refserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Mode, "mode", "", "bare (fixed JSON body) or redis (one Lua script per request)")
	fs.StringVar(&c.HTTP, "http", "127.0.0.1:0", "HTTP listen address")
	fs.StringVar(&c.Redis, "redis", "127.0.0.1:6379", "redis mode: Redis address, host:port or unix:/path/to/socket")
	fs.StringVar(&c.AdminToken, "admin-token", "", "redis mode: admin bearer token (default: generated and printed)")
	fs.IntVar(&c.Pool, "pool", 256, "redis mode: Redis connection pool size (keep it at least twice the load's concurrency)")
	floor := fs.String("heap-floor", "auto", "the same Go heap floor as flashgate serve --heap-floor (auto, a size such as 512MiB, or 0): a well-tuned peer gets the same GC setting")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.HeapFloor, err = heapfloor.Setting(*floor); err != nil {
		return c, fmt.Errorf("-heap-floor: %w, or auto", err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch c.Mode {
	case "bare", "redis":
	case "":
		return c, errors.New("-mode is required: bare or redis")
	default:
		return c, fmt.Errorf("-mode %q: bare or redis", c.Mode)
	}
	if c.Pool < 1 {
		return c, errors.New("-pool must be at least 1")
	}
	return c, nil
}

// run serves until ctx is done.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	stopFloor, _, err := heapfloor.Start(c.HeapFloor, os.Getenv)
	if err != nil {
		fmt.Fprintf(stderr, "refserver: heap floor off: %v\n", err)
	}
	defer stopFloor()
	var h http.Handler
	switch c.Mode {
	case "bare":
		h = bareHandler()
	case "redis":
		if c.AdminToken == "" {
			c.AdminToken = randomHex(16)
			fmt.Fprintf(stdout, "admin token: %s\n", c.AdminToken)
		}
		rs, err := newRedisServer(ctx, redisConfig{Addr: c.Redis, Pool: c.Pool, AdminToken: c.AdminToken})
		if err != nil {
			return err
		}
		defer rs.Close()
		h = rs.Handler()
	}
	// Listen first, so that a bad address fails at once.
	ln, err := net.Listen("tcp", c.HTTP)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "refserver (%s) is serving on http://%s\n", c.Mode, ln.Addr())
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

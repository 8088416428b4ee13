package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/flashgate/flashgate/app"
	"golang.org/x/term"
)

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var c app.Config
	fs := newFlags("serve", stderr)
	fs.StringVar(&c.Data, "data", "data", "data directory: embedded JetStream store, keys, admin token, projections")
	fs.StringVar(&c.HTTP, "http", "127.0.0.1:8080", "HTTP listen address (127.0.0.1:0 picks a free port)")
	fs.StringVar(&c.AdminToken, "admin-token", "", "admin API bearer token (default: generated, kept in the data directory)")
	fs.StringVar(&c.NATSURL, "nats-url", "", "connect to this NATS server or cluster instead of embedding one")
	fs.StringVar(&c.NATSCreds, "nats-creds", "", "NATS credentials file for --nats-url")
	fs.BoolVar(&c.Demo, "demo", true, "create the demo sale (id demo, stock 100, open now) if missing")
	fs.BoolVar(&c.SyncAlways, "sync-always", false, "embedded JetStream fsyncs every write: survives power loss, ~17x slower writes")
	fs.IntVar(&c.Replicas, "replicas", 1, "replicas of the stream and buckets (3 on a NATS cluster)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", 0, "how long a sale's writer lease lives unrenewed (default 5s)")
	fs.DurationVar(&c.DecisionWait, "decision-wait", 0, "how long a request waits for its decision before 202 pending (default 2s)")
	fs.Int64Var(&c.MaxBody, "max-body", 0, "largest request body in bytes (default 65536)")
	fs.Float64Var(&c.SessionRate, "session-rate", 0, "new anonymous sessions per second, process-wide (default 1000; -1: no cap)")
	fs.DurationVar(&c.SessionTTL, "session-ttl", 0, "lifetime of an anonymous session (default 24h)")
	fs.IntVar(&c.MaxInFlight, "max-in-flight", 0, "requests waiting for a decision before 503 (default 16384)")
	fs.IntVar(&c.MaxBatch, "max-batch", 0, "requests decided in one commit at most (default 1024)")
	fs.StringVar(&c.PurchaseKeyFile, "token-key-file", "", "purchase-token signing keys (default: generated in the data directory)")
	fs.StringVar(&c.SessionKeyFile, "session-key-file", "", "session signing keys (default: generated in the data directory)")
	fs.StringVar(&c.IdentityKey, "identity-public-key", "", "PEM public key of the shop's identity provider: shoppers bring its JWTs instead of anonymous sessions")
	fs.StringVar(&c.IdentityIssuer, "identity-issuer", "", "required iss of identity-provider JWTs")
	fs.StringVar(&c.IdentityAudience, "identity-audience", "", "required aud of identity-provider JWTs")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %v", err)
	}
	var h slog.Handler
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		h = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	} else {
		h = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	}
	c.Log = slog.New(h)
	if c.IdentityKey != "" && (c.IdentityIssuer == "" || c.IdentityAudience == "") {
		return fmt.Errorf("--identity-public-key needs --identity-issuer and --identity-audience")
	}

	a, err := app.Start(ctx, c)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "flashgate is serving on %s\n", a.URL)
	fmt.Fprintf(stdout, "  admin token: %s\n", a.AdminToken)
	fmt.Fprintf(stdout, "  data:        %s\n", app.Abs(a.DataDir))
	fmt.Fprintf(stdout, "  nats:        %s\n", a.NATS)
	if c.Demo {
		fmt.Fprintf(stdout, "  demo sale:   %s/api/v1/sales/%s\n", a.URL, app.DemoSale)
	}
	if f, ok := stdout.(interface{ Sync() error }); ok {
		_ = f.Sync()
	}
	err = a.Wait(ctx)
	fmt.Fprintln(stdout, "flashgate stopped")
	return err
}

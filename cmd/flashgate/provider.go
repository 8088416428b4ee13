package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/flashgate/flashgate/provider/fake"
)

const providerUsage = `Usage:
  flashgate provider fake [flags]
Runs a fake order provider (the carrier or payment back office orders are
handed to) for development: OAuth client-credentials tokens at /oauth/token,
orders at /v1/orders, and the carrier's quota: more than --quota-rate × --quota-window
token requests in any --quota-window bans every request for --ban-penalty (403 with
Retry-After). GET /_fake/stats shows the counters; POST /_fake/ban?for=30s
and POST /_fake/unban ban and unban by hand. Never expose it beyond a
development machine.
The client secret comes from --client-secret-file, else
FLASHGATE_PROVIDER_CLIENT_SECRET, else a random one is made and printed.
Run 'flashgate provider fake --help' for its flags.
`

func providerCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "fake" {
		if len(args) > 0 && args[0] != "help" && args[0] != "-h" && args[0] != "--help" {
			fmt.Fprintf(stderr, "flashgate provider: unknown provider %q\n\n", args[0])
		}
		fmt.Fprint(stderr, providerUsage)
		return errUsage
	}
	fs := newFlags("provider fake", stderr)
	listen := fs.String("listen", "127.0.0.1:9090", "address to serve the fake provider on (127.0.0.1:0 picks a free port)")
	var c fake.Config
	fs.StringVar(&c.ClientID, "client-id", "flashgate", "the OAuth client id it accepts")
	secretFile := fs.String("client-secret-file", "", "file holding the client secret (or FLASHGATE_PROVIDER_CLIENT_SECRET; neither: a random one, printed)")
	scopes := fs.String("scopes", "", "allowed scopes, comma-separated (default: any scope is granted)")
	fs.DurationVar(&c.TokenTTL, "access-ttl", fake.DefaultTokenTTL, "how long an access token lives (at least 1s)")
	fs.Float64Var(&c.Rate, "quota-rate", fake.DefaultRate, "token requests per second allowed on average over --quota-window")
	fs.DurationVar(&c.Window, "quota-window", fake.DefaultWindow, "the sliding window of the token quota (at least 1s)")
	fs.DurationVar(&c.Penalty, "ban-penalty", fake.DefaultPenalty, "how long a broken quota bans every request (at least 1s)")
	fs.BoolVar(&c.RevokeOnRenew, "revoke-on-renew", false, "a new token revokes every earlier one")
	fs.Float64Var(&c.FailShare, "fail-share", 0, "share of order calls answered 503, 0 to 1")
	fs.Float64Var(&c.Unauthorized, "unauthorized-share", 0, "share of order calls answered with a spurious 401, 0 to 1")
	fs.Uint64Var(&c.Seed, "seed", 0, "seed of the injected faults (0: random)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\nEvery flag can also be set by its environment variable (--quota-rate: FLASHGATE_QUOTA_RATE);\nthe command line wins.\n\nFlags:\n", providerUsage)
		fs.PrintDefaults()
	}
	if err := parse(fs, args[1:], getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, s := range strings.Split(*scopes, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.Scopes = append(c.Scopes, s)
		}
	}

	generated := false
	switch {
	case *secretFile != "":
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("--client-secret-file: %w", err)
		}
		if c.ClientSecret = strings.TrimSpace(string(b)); c.ClientSecret == "" {
			return fmt.Errorf("--client-secret-file %s is empty", *secretFile)
		}
	case getenv("FLASHGATE_PROVIDER_CLIENT_SECRET") != "":
		c.ClientSecret = getenv("FLASHGATE_PROVIDER_CLIENT_SECRET")
	default:
		c.ClientSecret = rand.Text()
		generated = true
	}
	c.Log = slog.New(slog.NewTextHandler(stderr, nil))

	p, err := fake.New(c)
	if err != nil {
		return err
	}
	base, stop, err := fake.Listen(ctx, *listen, p)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", *listen, err)
	}
	fmt.Fprintf(stdout, "fake provider listening on %s (token URL %s/oauth/token, orders %s/v1/orders)\n", base, base, base)
	if generated {
		fmt.Fprintf(stdout, "client id %s, generated client secret %s (pass it to serve as FLASHGATE_PROVIDER_CLIENT_SECRET)\n", c.ClientID, c.ClientSecret)
	}
	<-ctx.Done()
	return stop()
}

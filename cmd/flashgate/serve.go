package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flashgate/flashgate/app"
	"github.com/flashgate/flashgate/challenge"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/internal/heapfloor"
	"github.com/flashgate/flashgate/ratelimit"
	"github.com/flashgate/flashgate/stream"
	"github.com/flashgate/flashgate/web"
	"golang.org/x/term"
)

// serveConfig is what the serve flags set: the app configuration, and the
// logging serve sets up itself.
type serveConfig struct {
	app.Config
	TrustedProxies string // comma-separated; split into Config.TrustedProxies
	ProviderScopes string // comma- or space-separated; split into Config.ProviderScopes
	AdminTokenFile string
	LogLevel       string
	LogFormat      string
	HeapFloor      string // "auto" or a size (heapfloor.Setting)
}

// The built-in defaults of serve, as the README documents them (the packages
// fall back to the same values when a field is zero).
const (
	defaultDecisionWait = 2 * time.Second
	defaultMaxBody      = 64 << 10
	defaultSessionRate  = 1000
	defaultSessionTTL   = 24 * time.Hour
	defaultMaxInFlight  = 16384
	defaultMaxBatch     = 1024
	defaultWriterIdle   = 10 * time.Minute
	defaultQueueStreams = 10000
	defaultReadyLag     = 10000
)

var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"auto", "text", "json"}
)

// serveFlags returns serve's flag set (named "flashgate "+name) and the
// configuration its flags fill in, once resolve has run. serve and config
// print both build their flags here, so they resolve the same settings.
func serveFlags(name string, stderr io.Writer) (*flag.FlagSet, *serveConfig) {
	c := new(serveConfig)
	fs := newFlags(name, stderr)
	fs.String("config", "", "YAML config file; its keys are these flag names (also FLASHGATE_CONFIG)")
	fs.StringVar(&c.Data, "data", "data", "data directory: embedded JetStream store, keys, admin token, projections")
	fs.StringVar(&c.HTTP, "http", "127.0.0.1:8080", "HTTP listen address (127.0.0.1:0 picks a free port)")
	fs.StringVar(&c.AdminToken, "admin-token", "", "admin API bearer token (default: generated, kept in the data directory); on the command line it shows in ps: prefer FLASHGATE_ADMIN_TOKEN or --admin-token-file")
	fs.StringVar(&c.AdminTokenFile, "admin-token-file", "", "file holding the admin API bearer token")
	fs.StringVar(&c.NATSURL, "nats-url", "", "connect to this NATS server or cluster instead of embedding one")
	fs.StringVar(&c.NATSCreds, "nats-creds", "", "NATS credentials file for --nats-url")
	fs.StringVar(&c.NATSListen, "nats-listen", "", "also serve the embedded NATS server on this TCP address, with generated credentials (default: in-process only)")
	fs.BoolVar(&c.Demo, "demo", true, "create the demo sale (id demo, stock 100, open now) if missing")
	fs.BoolVar(&c.SyncAlways, "sync-always", false, "embedded JetStream fsyncs every write: survives power loss, ~17x slower writes")
	fs.IntVar(&c.Replicas, "replicas", 1, "replicas of the stream and buckets, 1 to 5 (3 on a NATS cluster)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", stream.DefaultLeaseTTL, "how long a sale's writer lease lives unrenewed (at least 1s)")
	fs.DurationVar(&c.DecisionWait, "decision-wait", defaultDecisionWait, "how long a request waits for its decision before 202 pending (10ms to 60s)")
	fs.Int64Var(&c.MaxBody, "max-body", defaultMaxBody, "largest request body in bytes (1 KiB to 16 MiB)")
	fs.Float64Var(&c.SessionRate, "session-rate", defaultSessionRate, "new anonymous sessions per second, process-wide (-1: no cap)")
	fs.DurationVar(&c.SessionTTL, "session-ttl", defaultSessionTTL, "lifetime of an anonymous session (at least 1m)")
	fs.IntVar(&c.MaxInFlight, "max-in-flight", defaultMaxInFlight, "requests waiting for a decision before 503")
	fs.IntVar(&c.MaxBatch, "max-batch", defaultMaxBatch, "requests decided in one commit at most")
	fs.DurationVar(&c.WriterIdle, "writer-idle", defaultWriterIdle, "a sale's writer with nothing to do for this long drops the sale's state from memory until a request comes (0: never)")
	fs.IntVar(&c.MaxQueueStreams, "max-queue-streams", defaultQueueStreams, "waiting-room event streams (SSE) open at once before 503")
	fs.StringVar(&c.PurchaseKeyFile, "token-key-file", "", "purchase-token signing keys (default: generated in the data directory)")
	fs.StringVar(&c.SessionKeyFile, "session-key-file", "", "session signing keys (default: generated in the data directory)")
	fs.StringVar(&c.IdentityKey, "identity-public-key", "", "PEM public key file of the shop's identity provider: shoppers bring its JWTs instead of anonymous sessions")
	fs.StringVar(&c.IdentityIssuer, "identity-issuer", "", "required iss of identity-provider JWTs (with --identity-public-key)")
	fs.StringVar(&c.IdentityAudience, "identity-audience", "", "required aud of identity-provider JWTs (with --identity-public-key)")
	fs.StringVar(&c.RateLimit, "rate-limit", app.RateLimitOn, "rate limits: on, shadow (decide and count, never refuse), shopper (only the policies that count by shopper: a load test from one address) or off (benchmarks); policies: flashgate limits")
	fs.StringVar(&c.TrustedProxies, "trusted-proxies", "", "comma-separated proxy addresses or CIDRs whose X-Forwarded-For names the client (default: none, the header is ignored)")
	fs.IntVar(&c.RateLimitMaxKeys, "rate-limit-max-keys", ratelimit.DefaultMaxKeys, "client addresses and shoppers the rate limiter remembers at most (~56 bytes each)")
	fs.IntVar(&c.DemoDifficulty, "demo-difficulty", challenge.DefaultDifficulty, "proof-of-work difficulty of the demo sale's human check (0: none)")
	fs.StringVar(&c.CaptchaProvider, "captcha-provider", "", "CAPTCHA for sales with {\"challenge\": {\"kind\": \"captcha\"}}: turnstile, hcaptcha or recaptcha (default: none)")
	fs.StringVar(&c.CaptchaSecretFile, "captcha-secret-file", "", "file holding the CAPTCHA secret key (or FLASHGATE_CAPTCHA_SECRET)")
	fs.StringVar(&c.CaptchaSiteKey, "captcha-site-key", "", "the CAPTCHA's public site key, for the shop page")
	fs.StringVar(&c.CaptchaVerifyURL, "captcha-verify-url", "", "the provider's siteverify URL (default: the provider's own)")
	fs.StringVar(&c.CaptchaHostname, "captcha-hostname", "", "if set, the hostname the provider reports must be this")
	fs.StringVar(&c.SigningKeysFile, "signing-keys-file", "", "app signing keys, one \"<key id> <secret>\" a line: sales with \"signedRequests\" take requests signed with them")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "serve /metrics on this address (default: on the --http listener)")
	fs.StringVar(&c.DebugAddr, "debug-addr", "", "serve pprof on this address (default: off)")
	fs.Uint64Var(&c.ReadyLag, "ready-lag", defaultReadyLag, "not ready while the projections are more than this many messages behind")
	fs.Float64Var(&c.ProjectionShare, "projection-share", app.DefaultProjectionShare, "share of a core the SQLite views may take while this process serves a flood (8 or more requests wait for decisions, or did within the last second) (0 < x <= 1; 1: no limit); they catch up after it")
	fs.Uint64Var(&c.FloodLag, "projection-flood-lag", app.DefaultFloodLag, "most messages the views may fall behind while they yield to a flood; /readyz allows this plus --ready-lag while the flood lasts and the views catch up")
	fs.StringVar(&c.ProviderURL, "provider-url", "", "fulfilment provider's API base URL (orders go to URL/v1/orders); \"fake\": an in-process fake provider; \"off\": none (default: fake with the embedded NATS server, off with --nats-url)")
	fs.StringVar(&c.ProviderTokenURL, "provider-token-url", "", "the provider's OAuth token endpoint (default: --provider-url + /oauth/token)")
	fs.StringVar(&c.ProviderClientID, "provider-client-id", app.DefaultProviderClientID, "OAuth client id at the provider")
	fs.StringVar(&c.ProviderSecretFile, "provider-client-secret-file", "", "file holding the OAuth client secret (or FLASHGATE_PROVIDER_CLIENT_SECRET)")
	fs.StringVar(&c.ProviderScopes, "provider-scopes", "", "OAuth scopes to ask for, comma-separated (default: the provider's)")
	fs.Float64Var(&c.ProviderBudget, "provider-token-budget", app.DefaultProviderBudget, "token requests per second to the provider, all processes together, retries included (keep it under the provider's quota)")
	fs.DurationVar(&c.ProviderPenalty, "provider-ban-penalty", 10*time.Minute, "how long to stop calling the provider after a 403/429 that names no Retry-After")
	fs.IntVar(&c.OrderAttempts, "order-attempts", app.DefaultOrderAttempts, "failed provider calls before an order goes to the dead-letter stream (1 to 100)")
	fs.DurationVar(&c.OrderDeadline, "order-deadline", time.Hour, "an order not confirmed this long after acceptance goes to the dead-letter stream (at least 1m)")
	fs.IntVar(&c.FulfilWorkers, "fulfil-workers", app.DefaultFulfilWorkers, "orders this process sends to the provider at once (1 to 1024)")
	fs.Float64Var(&c.FulfilFloodRate, "fulfil-flood-rate", app.DefaultFulfilFloodRate, fmt.Sprintf("most orders a second this process sends while it serves a flood (%d or more requests waiting for decisions); the rest wait in the queue and go out after it (-1: no limit)", app.FloodInFlight))
	fs.IntVar(&c.MaxOrderStreams, "max-order-streams", app.DefaultMaxOrderStreams, "order event streams (SSE) open at once before 503")
	fs.StringVar(&c.HeapFloor, "heap-floor", "auto", "heap goal of the Go garbage collector while the live heap is under half of it (a goal, not a limit: above it GOGC rules as usual). Fewer collections in a flood, for memory the machine has: auto is an eighth of the memory (cgroup limit or RAM), at most 1GiB; a size such as 512MiB; 0 turns it off, as does GOGC in the environment")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "auto", "auto (text on a terminal, JSON otherwise), text or json")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags]\n\n%s'flashgate config print' shows the result and where each value came from.\n\nFlags:\n",
			fs.Name(), precedenceHelp)
		fs.PrintDefaults()
	}
	return fs, c
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, sc := serveFlags("serve", stderr)
	src, err := resolve(fs, args, getenv)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := sc.validate(fs, src); err != nil {
		return err
	}
	c := sc.Config
	if sc.AdminTokenFile != "" {
		b, err := os.ReadFile(sc.AdminTokenFile)
		if err != nil {
			return fmt.Errorf("--admin-token-file: %w", err)
		}
		if c.AdminToken = strings.TrimSpace(string(b)); c.AdminToken == "" {
			return fmt.Errorf("--admin-token-file %s is empty", sc.AdminTokenFile)
		}
	}
	c.Log = sc.logger(stderr)
	stopFloor := startHeapFloor(sc.HeapFloor, getenv, c.Log)
	defer stopFloor()
	c.Pages = web.HandlerWith(web.Options{CaptchaProvider: c.CaptchaProvider})

	a, err := app.Start(ctx, c)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "flashgate is serving on %s\n", a.URL)
	fmt.Fprintf(stdout, "  operator:    %s/admin\n", a.URL)
	fmt.Fprintf(stdout, "  admin token: %s\n", a.AdminToken)
	fmt.Fprintf(stdout, "  data:        %s\n", app.Abs(a.DataDir))
	fmt.Fprintf(stdout, "  nats:        %s\n", a.NATS)
	if a.NATSPublic != "" {
		fmt.Fprintf(stdout, "  nats tcp:    %s\n", a.NATSPublic)
	}
	fmt.Fprintf(stdout, "  provider:    %s\n", a.Provider)
	fmt.Fprintf(stdout, "  metrics:     %s\n", a.MetricsURL)
	if a.DebugURL != "" {
		fmt.Fprintf(stdout, "  pprof:       %s\n", a.DebugURL)
	}
	if c.Demo {
		fmt.Fprintf(stdout, "  demo sale:   %s/sales/%s\n", a.URL, app.DemoSale)
	}
	if f, ok := stdout.(interface{ Sync() error }); ok {
		_ = f.Sync()
	}
	err = a.Wait(ctx)
	fmt.Fprintln(stdout, "flashgate stopped")
	return err
}

// startHeapFloor starts the heap floor of --heap-floor (validated) and
// logs what it does.
func startHeapFloor(setting string, getenv func(string) string, log *slog.Logger) (stop func()) {
	floor, _ := heapfloor.Setting(setting)
	stop, eff, err := heapfloor.Start(floor, getenv)
	switch {
	case err != nil:
		log.Info("heap floor off", "reason", err.Error())
	case eff == 0:
		log.Debug("heap floor off")
	default:
		log.Info("heap floor set: the garbage collector runs when the heap reaches it, or as GOGC says above it", "floor", heapfloor.Format(eff))
	}
	return stop
}

// logger builds the slog logger --log-level and --log-format ask for; auto
// is text when w is a terminal, JSON otherwise.
func (c *serveConfig) logger(w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.LogLevel)) // validated
	opts := &slog.HandlerOptions{Level: level}
	format := strings.ToLower(c.LogFormat)
	text := format == "text"
	if format == "auto" {
		f, ok := w.(*os.File)
		text = ok && term.IsTerminal(int(f.Fd()))
	}
	if text {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// settingError is one invalid setting: the flag, the setting as the user
// gave it (see describe) and what is wrong with it.
type settingError struct {
	Flag    string
	Setting string
	Problem string
}

func (e *settingError) Error() string { return e.Setting + ": " + e.Problem }

// configError is every invalid setting of a configuration.
type configError []*settingError

func (e configError) Error() string {
	if len(e) == 1 {
		return "invalid configuration: " + e[0].Error()
	}
	var b strings.Builder
	b.WriteString("invalid configuration:")
	for _, s := range e {
		b.WriteString("\n  " + s.Error())
	}
	return b.String()
}

func (e configError) Unwrap() []error {
	errs := make([]error, len(e))
	for i, s := range e {
		errs[i] = s
	}
	return errs
}

// validate checks every setting after resolve and returns a configError
// naming each invalid one with its source, or nil. It starts nothing; it
// only looks at the files the settings name.
func (c *serveConfig) validate(fs *flag.FlagSet, src sources) error {
	var errs configError
	bad := func(name, format string, args ...any) {
		errs = append(errs, &settingError{Flag: name, Setting: describe(fs, src, name), Problem: fmt.Sprintf(format, args...)})
	}

	if c.Data == "" {
		bad("data", "must name a directory")
	}

	// Listen addresses: host:port, and no two the same.
	addrs := []struct {
		name, value string
		optional    bool
	}{
		{"http", c.HTTP, false},
		{"metrics-addr", c.MetricsAddr, true},
		{"debug-addr", c.DebugAddr, true},
		{"nats-listen", c.NATSListen, true},
	}
	taken := map[string]string{}
	for _, a := range addrs {
		if a.value == "" && a.optional {
			continue
		}
		port, err := listenPort(a.value)
		if err != nil {
			bad(a.name, "%v", err)
			continue
		}
		if port == 0 {
			continue // each :0 picks its own port
		}
		if other, dup := taken[a.value]; dup {
			bad(a.name, "the same address as --%s", other)
			continue
		}
		taken[a.value] = a.name
	}

	if c.Replicas < 1 || c.Replicas > 5 {
		bad("replicas", "must be 1 to 5")
	}
	if c.LeaseTTL < time.Second {
		bad("lease-ttl", "must be at least 1s")
	}
	if c.DecisionWait < 10*time.Millisecond || c.DecisionWait > time.Minute {
		bad("decision-wait", "must be 10ms to 60s")
	}
	if c.SessionTTL < time.Minute {
		bad("session-ttl", "must be at least 1m")
	}
	if c.MaxBody < 1<<10 || c.MaxBody > 16<<20 {
		bad("max-body", "must be 1 KiB to 16 MiB (1024 to 16777216 bytes)")
	}
	if _, err := heapfloor.Setting(c.HeapFloor); err != nil {
		bad("heap-floor", "%v, or auto", err)
	}
	if c.MaxInFlight <= 0 {
		bad("max-in-flight", "must be more than 0")
	}
	if c.MaxBatch <= 0 {
		bad("max-batch", "must be more than 0")
	}
	if c.WriterIdle != 0 && c.WriterIdle < time.Second {
		bad("writer-idle", "must be at least 1s, or 0 for never")
	}
	if r := c.ProjectionShare; math.IsNaN(r) || r <= 0 || r > 1 {
		bad("projection-share", "must be more than 0 and at most 1")
	}
	if c.MaxQueueStreams <= 0 {
		bad("max-queue-streams", "must be more than 0")
	}
	if r := c.SessionRate; math.IsNaN(r) || math.IsInf(r, 0) || (r <= 0 && r != -1) {
		bad("session-rate", "must be more than 0, or -1 for no cap")
	}
	if c.ReadyLag == 0 {
		bad("ready-lag", "must be more than 0")
	}
	if c.FloodLag == 0 {
		bad("projection-flood-lag", "must be more than 0")
	}
	if !slices.Contains(app.RateLimitModes, c.RateLimit) {
		bad("rate-limit", "must be one of %s", strings.Join(app.RateLimitModes, ", "))
	}
	c.Config.TrustedProxies = nil
	for _, p := range strings.Split(c.TrustedProxies, ",") {
		if p = strings.TrimSpace(p); p != "" {
			c.Config.TrustedProxies = append(c.Config.TrustedProxies, p)
		}
	}
	if _, err := ratelimit.ParseProxies(c.Config.TrustedProxies); err != nil {
		bad("trusted-proxies", "%v", err)
	}
	if c.RateLimitMaxKeys < 1000 {
		bad("rate-limit-max-keys", "must be at least 1000")
	}
	if c.DemoDifficulty < 0 || c.DemoDifficulty > events.MaxPoWDifficulty {
		bad("demo-difficulty", "must be 0 (none) to %d", events.MaxPoWDifficulty)
	}
	if c.CaptchaProvider != "" && c.CaptchaSiteKey == "" {
		bad("captcha-site-key", "is needed with --captcha-provider: the shop page shows the provider's widget with it")
	}
	if c.CaptchaProvider != "" && !slices.Contains([]string{challenge.ProviderTurnstile, challenge.ProviderHCaptcha, challenge.ProviderReCaptcha}, c.CaptchaProvider) {
		bad("captcha-provider", "must be turnstile, hcaptcha or recaptcha")
	}
	if c.CaptchaProvider == "" {
		for _, name := range []string{"captcha-secret-file", "captcha-site-key", "captcha-verify-url", "captcha-hostname"} {
			if fs.Lookup(name).Value.String() != "" {
				bad(name, "is only used with --captcha-provider")
			}
		}
	}
	// Fulfilment.
	switch u := c.ProviderURL; {
	case u == "" || u == app.ProviderFake || u == app.ProviderOff:
		if c.ProviderTokenURL != "" {
			bad("provider-token-url", "is only used with a provider URL in --provider-url")
		}
		if c.ProviderSecretFile != "" {
			bad("provider-client-secret-file", "is only used with a provider URL in --provider-url")
		}
	default:
		if err := httpURL(u); err != nil {
			bad("provider-url", "%v (or fake, or off)", err)
		}
		if c.ProviderTokenURL != "" {
			if err := httpURL(c.ProviderTokenURL); err != nil {
				bad("provider-token-url", "%v", err)
			}
		}
	}
	c.Config.ProviderScopes = nil
	for _, sc := range strings.FieldsFunc(c.ProviderScopes, func(r rune) bool { return r == ',' || r == ' ' }) {
		c.Config.ProviderScopes = append(c.Config.ProviderScopes, sc)
	}
	if c.ProviderClientID == "" {
		bad("provider-client-id", "must not be empty")
	}
	if r := c.ProviderBudget; math.IsNaN(r) || r <= 0 || r > 100 {
		bad("provider-token-budget", "must be more than 0 and at most 100 per second")
	}
	if c.ProviderPenalty < time.Second {
		bad("provider-ban-penalty", "must be at least 1s")
	}
	if c.OrderAttempts < 1 || c.OrderAttempts > 100 {
		bad("order-attempts", "must be 1 to 100")
	}
	if c.OrderDeadline < time.Minute {
		bad("order-deadline", "must be at least 1m")
	}
	if c.FulfilWorkers < 1 || c.FulfilWorkers > 1024 {
		bad("fulfil-workers", "must be 1 to 1024")
	}
	if r := c.FulfilFloodRate; math.IsNaN(r) || (r != -1 && (r < 1 || r > 100000)) {
		bad("fulfil-flood-rate", "must be 1 to 100000 orders a second, or -1 for no limit")
	} else if r != -1 && float64(c.FulfilWorkers)/r > 10 {
		// The worker fetches --fulfil-workers orders ahead; held back by the
		// pace, each must still be taken well within the 30 s ack wait.
		bad("fulfil-flood-rate", "must be at least --fulfil-workers / 10 (%d): the orders a worker fetches ahead must go out within 10 s", (c.FulfilWorkers+9)/10)
	}
	if c.MaxOrderStreams <= 0 {
		bad("max-order-streams", "must be more than 0")
	}

	if !slices.Contains(logLevels, strings.ToLower(c.LogLevel)) {
		bad("log-level", "must be one of %s", strings.Join(logLevels, ", "))
	}
	if !slices.Contains(logFormats, strings.ToLower(c.LogFormat)) {
		bad("log-format", "must be one of %s", strings.Join(logFormats, ", "))
	}

	// NATS: the embedded server's settings mean nothing with --nats-url.
	if c.NATSURL == "" {
		if c.NATSCreds != "" {
			bad("nats-creds", "is only used with --nats-url")
		}
		if c.Replicas > 1 && c.Replicas <= 5 {
			bad("replicas", "must be 1 with the embedded NATS server (one server keeps one copy); use --nats-url with a cluster for more")
		}
	} else {
		if c.NATSListen != "" {
			bad("nats-listen", "serves the embedded NATS server, which --nats-url replaces")
		}
		if c.SyncAlways {
			bad("sync-always", "applies to the embedded NATS server, which --nats-url replaces; set it on your NATS server")
		}
	}

	// External identity: all three or none.
	identity := []string{"identity-public-key", "identity-issuer", "identity-audience"}
	var have, missing []string
	for _, name := range identity {
		if fs.Lookup(name).Value.String() != "" {
			have = append(have, name)
		} else {
			missing = append(missing, "--"+name)
		}
	}
	if len(have) > 0 && len(missing) > 0 {
		bad(have[0], "external identity needs %s too", strings.Join(missing, " and "))
	}

	// Files that must be there.
	if c.AdminToken != "" && c.AdminTokenFile != "" {
		bad("admin-token-file", "give the admin token once: --admin-token or --admin-token-file")
	}
	for _, name := range []string{"identity-public-key", "token-key-file", "session-key-file", "nats-creds", "admin-token-file", "provider-client-secret-file"} {
		if path := fs.Lookup(name).Value.String(); path != "" {
			if err := readableFile(path); err != nil {
				bad(name, "%v", err)
			}
		}
	}

	if len(errs) > 0 {
		return errs
	}
	return nil
}

// listenPort checks that addr is host:port (the host may be empty: every
// interface) and returns the port.
func listenPort(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if ae := (*net.AddrError)(nil); errors.As(err, &ae) {
		return 0, fmt.Errorf("want host:port, like 127.0.0.1:8080 (%s)", ae.Err)
	} else if err != nil {
		return 0, fmt.Errorf("want host:port, like 127.0.0.1:8080 (%v)", err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("want host:port with a port number 0 to 65535, got port %q", port)
	}
	return int(n), nil
}

// httpURL checks that u is an absolute http(s) URL.
func httpURL(u string) error {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return fmt.Errorf("want an http:// or https:// URL, got %q", u)
	}
	return nil
}

// readableFile checks that path is a file this process can open.
func readableFile(path string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return errors.New("no such file")
	case err != nil:
		return err
	case st.IsDir():
		return errors.New("is a directory, want a file")
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot read it: %v", err)
	}
	return f.Close()
}

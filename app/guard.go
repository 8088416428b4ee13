package app

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashgate/flashgate/api"
	"github.com/flashgate/flashgate/challenge"
	"github.com/flashgate/flashgate/cluster"
	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/nonces"
	"github.com/flashgate/flashgate/ratelimit"
	"github.com/flashgate/flashgate/ratelimit/kvpolicy"
	"github.com/flashgate/flashgate/signing"
	"github.com/flashgate/flashgate/tokens"
	"github.com/nats-io/nats.go/jetstream"
)

// Rate-limit modes (--rate-limit).
const (
	RateLimitOn     = "on"     // enforce
	RateLimitShadow = "shadow" // decide and count, never refuse (calibration)
	RateLimitOff    = "off"    // no limits (benchmarks from one machine)
	// RateLimitShopper enforces the policies that count by shopper and
	// turns off those that count by client address: a load test from one
	// machine, where every shopper has the same address, that still meets
	// each shopper's limits.
	RateLimitShopper = "shopper"
)

// RateLimitModes are the values --rate-limit takes.
var RateLimitModes = []string{RateLimitOn, RateLimitShadow, RateLimitShopper, RateLimitOff}

// reconnects tells the watches that the NATS connection came back: each
// gets a channel closed at the next reconnect.
type reconnects struct {
	mu sync.Mutex
	ch chan struct{}
}

func (r *reconnects) next() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ch == nil {
		r.ch = make(chan struct{})
	}
	return r.ch
}

func (r *reconnects) fire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ch != nil {
		close(r.ch)
		r.ch = nil
	}
}

// guard is the bot defence of the front: rate limits kept in step with the
// other processes, the human checks and the app signatures.
type guard struct {
	limiter    *ratelimit.Limiter
	proxies    ratelimit.Proxies
	limits     api.LimitStore
	presence   *cluster.Presence
	pow        *challenge.PoW
	captcha    *challenge.Captcha
	signatures *signing.Verifier
	limitsKV   jetstream.KeyValue
	mode       string // the --rate-limit mode, never empty

	watchDegraded atomic.Bool
}

// degraded reports whether the limiter runs on local state only.
func (g *guard) degraded() bool {
	return g.watchDegraded.Load() || (g.presence != nil && g.presence.Degraded())
}

// newGuard builds the guard from c; start runs its background parts.
func (a *App) newGuard(ctx context.Context, c Config, node string, purchaseKeys *tokens.KeySet) (*guard, error) {
	g := &guard{mode: c.RateLimit}
	if g.mode == "" {
		g.mode = RateLimitOn
	}
	if !slices.Contains(RateLimitModes, g.mode) {
		return nil, fmt.Errorf("--rate-limit %q: want one of %s", c.RateLimit, strings.Join(RateLimitModes, ", "))
	}
	proxies, err := ratelimit.ParseProxies(c.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("--trusted-proxies: %w", err)
	}
	g.proxies = proxies

	onceKV, err := a.JS.KeyValue(ctx, events.OnceBucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", events.OnceBucket, err)
	}
	once := nonces.New(onceKV, nonces.Config{TTL: events.OnceTTL, Now: c.Now})

	// The puzzles are signed with a key derived from the active
	// purchase-token key and verified with those of every key in the set:
	// processes that share purchase keys (as they must) share these, and a
	// key rotation rolls through them as it does through purchase tokens.
	derive := func(k []byte) []byte {
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte("flashgate proof-of-work puzzles v1"))
		return mac.Sum(nil)
	}
	_, pk := purchaseKeys.Active()
	var older [][]byte
	for _, k := range purchaseKeys.Others() {
		older = append(older, derive(k))
	}
	if g.pow, err = challenge.NewPoW(challenge.PoWConfig{Key: derive(pk), VerifyKeys: older, Now: c.Now, Once: once}); err != nil {
		return nil, err
	}
	if c.CaptchaProvider != "" {
		secret := os.Getenv("FLASHGATE_CAPTCHA_SECRET")
		if c.CaptchaSecretFile != "" {
			b, err := os.ReadFile(c.CaptchaSecretFile)
			if err != nil {
				return nil, fmt.Errorf("--captcha-secret-file: %w", err)
			}
			secret = strings.TrimSpace(string(b))
		}
		if g.captcha, err = challenge.NewCaptcha(challenge.CaptchaConfig{Provider: c.CaptchaProvider, Secret: secret,
			SiteKey: c.CaptchaSiteKey, VerifyURL: c.CaptchaVerifyURL, Hostname: c.CaptchaHostname, Once: once}); err != nil {
			return nil, fmt.Errorf("captcha: %w", err)
		}
	}
	if c.SigningKeysFile != "" {
		keys, err := signing.LoadKeys(c.SigningKeysFile)
		if err != nil {
			return nil, fmt.Errorf("--signing-keys-file: %w", err)
		}
		g.signatures = &signing.Verifier{Keys: keys, Now: c.Now, Once: once}
	}

	g.limiter = ratelimit.New(ratelimit.Config{MaxKeys: c.RateLimitMaxKeys, Now: c.Now})
	g.limiter.SetPolicies(g.policies(c, ratelimit.Defaults()))
	g.limiter.SetEnabled(c.RateLimit != RateLimitOff)
	limitsKV, err := a.JS.KeyValue(ctx, events.LimitsBucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", events.LimitsBucket, err)
	}
	g.limitsKV, g.limits = limitsKV, limitStore{limitsKV}
	nodesKV, err := a.JS.KeyValue(ctx, events.NodesBucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", events.NodesBucket, err)
	}
	g.presence = cluster.New(nodesKV, cluster.Config{Self: cluster.Member{Node: node, Started: c.Now().UTC()}, Now: c.Now, Log: a.log,
		Resync: a.reconnects.next,
		Update: a.describe,
		OnChange: func(live int, degraded bool) {
			g.limiter.SetShare(live)
			a.log.Info("rate limits: shared by live processes", "processes", live, "degraded", degraded)
		}})
	return g, nil
}

// policies applies the --rate-limit mode to a policy set.
func (g *guard) policies(c Config, ps []ratelimit.Policy) []ratelimit.Policy {
	for i := range ps {
		switch {
		case c.RateLimit == RateLimitShadow:
			ps[i].Shadow = true
		case c.RateLimit == RateLimitShopper && ps[i].Key == ratelimit.KeyIP:
			ps[i].Off = true
		}
	}
	return ps
}

// start runs the guard's background parts until ctx ends.
func (a *App) startGuard(ctx context.Context, c Config, g *guard) {
	a.bg.Add(3)
	go func() {
		defer a.bg.Done()
		_ = g.presence.Run(ctx)
	}()
	go func() {
		defer a.bg.Done()
		kvpolicy.Watch(ctx, g.limitsKV, func(ps []ratelimit.Policy) { g.limiter.SetPolicies(g.policies(c, ps)) }, a.log,
			g.watchDegraded.Store, a.reconnects.next)
	}()
	go func() {
		defer a.bg.Done()
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				g.limiter.Sweep()
			}
		}
	}()
}

// limitStore adapts the limits bucket to the admin API.
type limitStore struct{ kv jetstream.KeyValue }

func (s limitStore) Stored(ctx context.Context) (map[string]ratelimit.Policy, map[string]error, error) {
	return kvpolicy.Stored(ctx, s.kv)
}

func (s limitStore) Put(ctx context.Context, p ratelimit.Policy) error {
	return kvpolicy.Put(ctx, s.kv, p)
}

func (s limitStore) Delete(ctx context.Context, name string) error {
	err := kvpolicy.Delete(ctx, s.kv, name)
	if errors.Is(err, kvpolicy.ErrNotSet) {
		return api.ErrPolicyNotSet
	}
	return err
}

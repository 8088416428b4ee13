package challenge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// CAPTCHA providers.
const (
	// ProviderTurnstile is Cloudflare Turnstile; its default verify URL is
	// https://challenges.cloudflare.com/turnstile/v0/siteverify.
	ProviderTurnstile = "turnstile"
	// ProviderHCaptcha is hCaptcha; https://api.hcaptcha.com/siteverify.
	ProviderHCaptcha = "hcaptcha"
	// ProviderReCaptcha is Google reCAPTCHA v2 or v3;
	// https://www.google.com/recaptcha/api/siteverify.
	ProviderReCaptcha = "recaptcha"
)

// CAPTCHA defaults.
const (
	// DefaultCaptchaTimeout bounds one Verify: the wait for a free slot and
	// the call to the provider.
	DefaultCaptchaTimeout = 5 * time.Second
	// DefaultMinScore is the lowest reCAPTCHA v3 score accepted.
	DefaultMinScore = 0.5
	// DefaultMaxInFlight is how many siteverify calls one Captcha makes at
	// once.
	DefaultMaxInFlight = 64
)

const (
	// maxTurnstileResponse is Turnstile's documented token maximum.
	maxTurnstileResponse = 2048
	// maxOtherResponse bounds hCaptcha and reCAPTCHA tokens, which have no
	// documented maximum; hCaptcha's have been seen above 4000 characters.
	maxOtherResponse = 8192
	// maxAnswerLen bounds the siteverify answer read (real ones are a few
	// hundred bytes).
	maxAnswerLen = 64 << 10
	// maxCodes and maxCodeLen bound the error codes quoted in an error.
	maxCodes   = 8
	maxCodeLen = 64
)

var (
	errCaptchaTooLong = failed("response token too long")
	errCaptchaUsed    = failed("already used")
)

// CaptchaConfig configures NewCaptcha. Provider, Secret and Once are
// required; every other zero value means its default.
type CaptchaConfig struct {
	// Provider is ProviderTurnstile, ProviderHCaptcha or ProviderReCaptcha.
	Provider string
	// Secret is the site's secret key.
	Secret string
	// SiteKey is the public site key, served to the page. hCaptcha also
	// sends it to siteverify as "sitekey", which refuses tokens of other
	// sites.
	SiteKey string
	// VerifyURL is the siteverify endpoint (http or https); empty means the
	// provider's own. Tests point it at an httptest server.
	VerifyURL string
	// Hostname, if set, must equal the "hostname" the provider reports
	// (the page the CAPTCHA was solved on), ignoring case.
	Hostname string
	// Action, if set, must equal the "action" the provider reports
	// (Turnstile, reCAPTCHA v3). hCaptcha reports none, so it refuses one.
	Action string
	// MinScore is the lowest reCAPTCHA v3 "score" accepted, 0 to 1; 0 means
	// DefaultMinScore and a negative value accepts any score. It applies to
	// reCAPTCHA only, and only when the answer has a score (v2 has none).
	// hCaptcha Enterprise's score runs the other way (higher is riskier)
	// and is not checked.
	MinScore float64
	// MaxResponseLen is the longest response token sent to the provider;
	// longer ones are refused at once. 0 means 2048 for Turnstile (its
	// documented maximum) and 8192 for the others.
	MaxResponseLen int
	// MaxInFlight bounds concurrent siteverify calls; 0 means
	// DefaultMaxInFlight. A Verify that finds them all busy waits for a
	// slot within its Timeout and ctx, else gives ErrUnavailable.
	MaxInFlight int
	// Timeout bounds one Verify, the wait for a slot included; 0 means
	// DefaultCaptchaTimeout.
	Timeout time.Duration
	// Client makes the siteverify calls; nil means a client with Timeout
	// that keeps up to MaxInFlight connections to the provider.
	Client *http.Client
	// Once makes each response token single-use (key "captcha." +
	// hex(sha256(token))). Required.
	Once Once
}

// Captcha verifies CAPTCHA response tokens with the provider's siteverify
// endpoint. It is safe for concurrent use.
type Captcha struct {
	provider    string
	secret      string
	siteKey     string
	verifyURL   string
	hostname    string
	action      string
	minScore    float64
	maxResponse int
	timeout     time.Duration
	client      *http.Client
	once        Once
	slots       chan struct{}
}

// NewCaptcha returns a Captcha for c. It fails on an unknown provider, an
// empty secret, a nil Once, a verify URL that is not absolute http or https,
// or an out-of-range number.
func NewCaptcha(c CaptchaConfig) (*Captcha, error) {
	var defURL string
	maxResp := maxOtherResponse
	switch c.Provider {
	case ProviderTurnstile:
		defURL = "https://challenges.cloudflare.com/turnstile/v0/siteverify"
		maxResp = maxTurnstileResponse
	case ProviderHCaptcha:
		defURL = "https://api.hcaptcha.com/siteverify"
	case ProviderReCaptcha:
		defURL = "https://www.google.com/recaptcha/api/siteverify"
	default:
		return nil, fmt.Errorf("new captcha: unknown provider %q", c.Provider)
	}
	switch {
	case c.Secret == "":
		return nil, errors.New("new captcha: no secret")
	case c.Once == nil:
		return nil, errors.New("new captcha: no Once store")
	case c.Action != "" && c.Provider == ProviderHCaptcha:
		return nil, errors.New("new captcha: hcaptcha reports no action")
	case math.IsNaN(c.MinScore) || c.MinScore > 1:
		return nil, fmt.Errorf("new captcha: min score %v not in 0..1", c.MinScore)
	case c.MaxResponseLen < 0 || c.MaxInFlight < 0 || c.Timeout < 0:
		return nil, errors.New("new captcha: negative limit")
	}
	verifyURL := c.VerifyURL
	if verifyURL == "" {
		verifyURL = defURL
	}
	u, err := url.Parse(verifyURL)
	if err != nil {
		return nil, fmt.Errorf("new captcha: verify URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("new captcha: verify URL %q is not absolute http or https", verifyURL)
	}

	cc := &Captcha{
		provider:    c.Provider,
		secret:      c.Secret,
		siteKey:     c.SiteKey,
		verifyURL:   u.String(),
		hostname:    c.Hostname,
		action:      c.Action,
		minScore:    c.MinScore,
		maxResponse: c.MaxResponseLen,
		timeout:     c.Timeout,
		client:      c.Client,
		once:        c.Once,
	}
	if cc.minScore == 0 {
		cc.minScore = DefaultMinScore
	}
	if cc.maxResponse == 0 {
		cc.maxResponse = maxResp
	}
	if cc.timeout == 0 {
		cc.timeout = DefaultCaptchaTimeout
	}
	inFlight := c.MaxInFlight
	if inFlight == 0 {
		inFlight = DefaultMaxInFlight
	}
	cc.slots = make(chan struct{}, inFlight)
	if cc.client == nil {
		cc.client = &http.Client{Timeout: cc.timeout}
		// The default transport keeps 2 idle connections per host: under
		// load every other call would open a new TLS connection.
		if t, ok := http.DefaultTransport.(*http.Transport); ok {
			t = t.Clone()
			t.MaxIdleConnsPerHost = inFlight
			t.MaxConnsPerHost = inFlight
			cc.client.Transport = t
		}
	}
	return cc, nil
}

// Provider returns the provider name, one of the Provider constants.
func (c *Captcha) Provider() string { return c.provider }

// SiteKey returns the public site key, to be served to the page.
func (c *Captcha) SiteKey() string { return c.siteKey }

// siteverifyAnswer is the JSON answer all three providers share.
type siteverifyAnswer struct {
	Success    *bool    `json:"success"`
	ErrorCodes []string `json:"error-codes"`
	Hostname   string   `json:"hostname"`
	Score      *float64 `json:"score"`  // reCAPTCHA v3; hCaptcha Enterprise (a risk score)
	Action     string   `json:"action"` // Turnstile, reCAPTCHA v3
}

// Verify checks a CAPTCHA response token with the provider and then makes it
// single-use through Once. remoteIP is the shopper's address ("ip" or
// "ip:port"); anything else is not sent.
//
// An empty token gives ErrRequired; a token over the length limit is refused
// without a call. A provider that says no gives ErrFailed wrapped with its
// error codes, as do a hostname, action or score that does not match and a
// token used before. A provider that cannot be reached in time, answers
// non-2xx or unparsable JSON, or reports an error in our own configuration
// (a wrong secret, a site key that does not match it, its internal error)
// gives ErrUnavailable: the shopper is not at fault.
func (c *Captcha) Verify(ctx context.Context, response, remoteIP string) error {
	if response == "" {
		return ErrRequired
	}
	if len(response) > c.maxResponse {
		return errCaptchaTooLong
	}
	a, err := c.siteverify(ctx, response, remoteIP)
	if err != nil {
		return fmt.Errorf("%w: %s siteverify: %w", ErrUnavailable, c.provider, err)
	}
	if err := c.judge(a); err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(response))
	first, err := c.once.Use(ctx, "captcha."+hex.EncodeToString(sum[:]))
	if err != nil {
		return fmt.Errorf("%w: record captcha use: %w", ErrUnavailable, err)
	}
	if !first {
		return errCaptchaUsed
	}
	return nil
}

// siteverify takes a slot and asks the provider about response.
func (c *Captcha) siteverify(ctx context.Context, response, remoteIP string) (*siteverifyAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	select {
	case c.slots <- struct{}{}:
	default:
		select {
		case c.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("all %d calls busy: %w", cap(c.slots), ctx.Err())
		}
	}
	defer func() { <-c.slots }()

	form := url.Values{"secret": {c.secret}, "response": {response}}
	if ip := clientIP(remoteIP); ip != "" {
		form.Set("remoteip", ip)
	}
	if c.provider == ProviderHCaptcha && c.siteKey != "" {
		form.Set("sitekey", c.siteKey)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.verifyURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerLen+1))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if len(body) > maxAnswerLen {
		return nil, errors.New("answer too long")
	}
	var a siteverifyAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("unparsable answer: %w", err)
	}
	if a.Success == nil {
		return nil, errors.New(`answer without "success"`)
	}
	return &a, nil
}

// clientIP returns the address of remoteIP, given as "ip" or "ip:port", or
// "" if it is neither.
func clientIP(remoteIP string) string {
	if a, err := netip.ParseAddr(remoteIP); err == nil {
		return a.Unmap().String()
	}
	if ap, err := netip.ParseAddrPort(remoteIP); err == nil {
		return ap.Addr().Unmap().String()
	}
	return ""
}

// isConfigCode reports whether a siteverify error code blames our
// configuration or the provider rather than the shopper's token.
func isConfigCode(code string) bool {
	switch code {
	case "missing-input-secret", "invalid-input-secret", // all three
		"invalid-parsed-secret", "invalid-widget-id", // Turnstile
		"sitekey-secret-mismatch", // hCaptcha
		"internal-error":          // Turnstile
		return true
	}
	return false
}

// judge applies our own checks to a provider's answer.
func (c *Captcha) judge(a *siteverifyAnswer) error {
	if !*a.Success {
		for _, code := range a.ErrorCodes {
			if isConfigCode(code) {
				return fmt.Errorf("%w: %s refused our request: %s", ErrUnavailable, c.provider, quoteCodes(a.ErrorCodes))
			}
		}
		return fmt.Errorf("%w: %s: %s", ErrFailed, c.provider, quoteCodes(a.ErrorCodes))
	}
	if c.hostname != "" && !strings.EqualFold(a.Hostname, c.hostname) {
		return fmt.Errorf("%w: solved on another host", ErrFailed)
	}
	if c.action != "" && a.Action != c.action {
		return fmt.Errorf("%w: solved for another action", ErrFailed)
	}
	if c.provider == ProviderReCaptcha && c.minScore >= 0 && a.Score != nil && !(*a.Score >= c.minScore) {
		return fmt.Errorf("%w: score %.2f below %.2f", ErrFailed, *a.Score, c.minScore)
	}
	return nil
}

// quoteCodes lists a provider's error codes for an error message: at most
// maxCodes, each at most maxCodeLen bytes of printable ASCII, since they come
// from the network and end up in logs.
func quoteCodes(codes []string) string {
	if len(codes) == 0 {
		return "no error codes"
	}
	var b strings.Builder
	for i, code := range codes {
		if i == maxCodes {
			b.WriteString(",...")
			break
		}
		if i > 0 {
			b.WriteByte(',')
		}
		if len(code) > maxCodeLen {
			code = code[:maxCodeLen]
		}
		for j := 0; j < len(code); j++ {
			if ch := code[j]; ch > 0x20 && ch < 0x7f && ch != ',' {
				b.WriteByte(ch)
			} else {
				b.WriteByte('?')
			}
		}
	}
	return b.String()
}

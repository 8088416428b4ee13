// Package provider is flashgate's HTTP client for a fulfilment provider: the
// OAuth 2.0 client-credentials token request (RFC 6749 §4.4) and the order
// call. It keeps no state: the shared token is the broker's business, the
// retries the fulfilment worker's. What it does is say, for every answer,
// what kind of failure it was.
//
// The order call is POST {base}/v1/orders with the bearer token, the order
// id as Idempotency-Key and the order as JSON; a provider answers 201 for a
// new order and 200 (Idempotent-Replayed) with the same body for a repeat.
package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config says where the provider is and who we are.
type Config struct {
	URL          string   // base URL of the provider's API: orders go to URL + "/v1/orders"
	TokenURL     string   // token endpoint; "" = URL + "/oauth/token"
	ClientID     string   //
	ClientSecret string   //
	Scopes       []string // requested scopes; none: the provider's default
	// Timeout bounds each HTTP call (default 10 s).
	Timeout time.Duration
	// HTTP is the client to use (default: one with Timeout and a pool sized
	// for a busy worker).
	HTTP *http.Client
}

// Client calls a provider.
type Client struct {
	c      Config
	orders string
	http   *http.Client
}

// New checks c and returns a client.
func New(c Config) (*Client, error) {
	base, err := url.Parse(c.URL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("provider URL %q: want http(s)://host[:port][/path]", c.URL)
	}
	if c.TokenURL == "" {
		c.TokenURL = strings.TrimSuffix(c.URL, "/") + "/oauth/token"
	} else if u, err := url.Parse(c.TokenURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("provider token URL %q: want http(s)://host[:port]/path", c.TokenURL)
	}
	if c.ClientID == "" || c.ClientSecret == "" {
		return nil, errors.New("provider: a client id and a client secret are needed")
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	hc := c.HTTP
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		hc = &http.Client{Timeout: c.Timeout, Transport: tr}
	}
	return &Client{c: c, orders: strings.TrimSuffix(c.URL, "/") + "/v1/orders", http: hc}, nil
}

// TokenURL is the token endpoint in use.
func (c *Client) TokenURL() string { return c.c.TokenURL }

// Token is an access token and when it stops being valid.
type Token struct {
	Value   string
	Expires time.Time
	Scope   string
}

// Error is a provider's answer that was not a success.
type Error struct {
	Op         string        // "token" or "order"
	Status     int           // HTTP status; 0: no answer (network, timeout)
	Code       string        // the "error" field of a JSON error body, if any
	RetryAfter time.Duration // from Retry-After; 0: none given
	Err        error         // the transport error when Status is 0
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("provider %s: %v", e.Op, e.Err)
	}
	s := fmt.Sprintf("provider %s: %d %s", e.Op, e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		s += " (" + e.Code + ")"
	}
	if e.RetryAfter > 0 {
		s += ", retry after " + e.RetryAfter.String()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Kinds of failure, for the caller's decision.
type Kind int

// The kinds.
const (
	Temporary    Kind = iota // no answer, 408, 429, 5xx: retry later
	Unauthorized             // 401: the token is not (or no longer) good
	Banned                   // 403: the provider refuses us; wait RetryAfter (or a penalty)
	Rejected                 // another 4xx: this request will never succeed
)

// KindOf says what kind of failure err is. Errors that are not an *Error
// (a context's end, say) are Temporary.
func KindOf(err error) Kind {
	var pe *Error
	if !errors.As(err, &pe) {
		return Temporary
	}
	switch {
	case pe.Status == http.StatusUnauthorized:
		return Unauthorized
	case pe.Status == http.StatusForbidden:
		return Banned
	case pe.Status == 0 || pe.Status == http.StatusRequestTimeout || pe.Status == http.StatusTooManyRequests || pe.Status >= 500:
		return Temporary
	case pe.Status >= 400:
		return Rejected
	}
	return Temporary
}

// RetryAfter is the wait a provider asked for in err, if any.
func RetryAfter(err error) time.Duration {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.RetryAfter
	}
	return 0
}

// StatusOf is the HTTP status in err, 0 if none.
func StatusOf(err error) int {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Status
	}
	return 0
}

// Maximum sizes of the answers read.
const maxBody = 64 << 10

// FetchToken asks the token endpoint for a new access token. Every call is
// one token request against the provider's quota: callers go through the
// broker, never straight here.
func (c *Client) FetchToken(ctx context.Context) (Token, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	if len(c.c.Scopes) > 0 {
		form.Set("scope", strings.Join(c.c.Scopes, " "))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.c.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return Token{}, &Error{Op: "token", Err: err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(c.c.ClientID), url.QueryEscape(c.c.ClientSecret)) // RFC 6749 §2.3.1
	sent := time.Now()
	resp, body, err := c.do(req)
	if err != nil {
		return Token{}, &Error{Op: "token", Err: err}
	}
	if resp.StatusCode != http.StatusOK {
		return Token{}, failure("token", resp, body)
	}
	var tr struct {
		AccessToken string  `json:"access_token"`
		TokenType   string  `json:"token_type"`
		ExpiresIn   float64 `json:"expires_in"`
		Scope       string  `json:"scope"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		return Token{}, &Error{Op: "token", Status: resp.StatusCode, Code: "bad_answer", Err: fmt.Errorf("token answer without access_token: %v", err)}
	}
	if tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "bearer") {
		return Token{}, &Error{Op: "token", Status: resp.StatusCode, Code: "bad_answer", Err: fmt.Errorf("token type %q is not Bearer", tr.TokenType)}
	}
	ttl := time.Duration(tr.ExpiresIn * float64(time.Second))
	if ttl <= 0 {
		ttl = time.Hour // RFC 6749: expires_in is RECOMMENDED; assume the common hour
	}
	// Counted from when the request left: the token is never thought to
	// live longer than it does.
	return Token{Value: tr.AccessToken, Expires: sent.Add(ttl), Scope: tr.Scope}, nil
}

// Order is what the provider is sent.
type Order struct {
	OrderID string `json:"orderId"`
	Sale    string `json:"sale"`
	Shopper string `json:"shopper"`
	Units   int64  `json:"units"`
	TokenID string `json:"tokenId"`
}

// Result is the provider's acceptance of an order.
type Result struct {
	Reference string // the provider's id for the order
	Replayed  bool   // the provider had it already and answered the first result again
}

// SendOrder sends o with the access token. The order id is the
// Idempotency-Key: sending it again is safe and returns the first result.
func (c *Client) SendOrder(ctx context.Context, token string, o Order) (Result, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return Result{}, &Error{Op: "order", Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.orders, bytes.NewReader(b))
	if err != nil {
		return Result{}, &Error{Op: "order", Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", o.OrderID)
	resp, body, err := c.do(req)
	if err != nil {
		return Result{}, &Error{Op: "order", Err: err}
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return Result{}, failure("order", resp, body)
	}
	var or struct {
		Reference string `json:"reference"`
	}
	if err := json.Unmarshal(body, &or); err != nil || or.Reference == "" {
		// Accepted, but we cannot tell by what name: a retry with the same
		// key will get the answer again.
		return Result{}, &Error{Op: "order", Status: http.StatusBadGateway, Code: "bad_answer", Err: fmt.Errorf("answer without reference: %v", err)}
	}
	return Result{Reference: or.Reference, Replayed: resp.Header.Get("Idempotent-Replayed") == "true"}, nil
}

func (c *Client) do(req *http.Request) (*http.Response, []byte, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, nil, err
	}
	return resp, body, nil
}

func failure(op string, resp *http.Response, body []byte) *Error {
	e := &Error{Op: op, Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	var eb struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &eb) == nil {
		e.Code = eb.Error
	}
	return e
}

// parseRetryAfter reads delay-seconds or an HTTP date; 0 if absent or bad.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
		if s <= 0 {
			return 0
		}
		return time.Duration(min(s, 24*3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), 24*time.Hour)
	}
	return 0
}

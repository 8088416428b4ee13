package identity_test

import (
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/flashgate/flashgate/identity"
	"github.com/flashgate/flashgate/tokens"
)

func newKeys(tb testing.TB) *tokens.KeySet {
	tb.Helper()
	k, err := tokens.NewKeySet()
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func TestSessionRoundTrip(t *testing.T) {
	s := identity.NewSessions(newKeys(t), time.Hour, clockAt(t0.Add(300*time.Millisecond)))
	tok, exp, err := s.Issue("shopper-1")
	if err != nil {
		t.Fatal(err)
	}
	if !exp.Equal(t0.Add(time.Hour)) {
		t.Errorf("expiresAt = %v, want %v", exp, t0.Add(time.Hour))
	}
	got, err := s.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	if got != "shopper-1" {
		t.Errorf("Verify = %q", got)
	}
}

func TestSessionDefaultTTL(t *testing.T) {
	keys := newKeys(t)
	_, exp, err := identity.NewSessions(keys, 0, clockAt(t0)).Issue("s")
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(24 * time.Hour); !exp.Equal(want) {
		t.Fatalf("expiresAt = %v, want %v", exp, want)
	}
}

func TestSessionExpiry(t *testing.T) {
	keys := newKeys(t)
	tok, exp, err := identity.NewSessions(keys, time.Minute, clockAt(t0)).Issue("s")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		now time.Time
		ok  bool
	}{
		{t0, true},
		{exp.Add(-time.Nanosecond), true},
		{exp, false},
		{exp.Add(time.Hour), false},
	}
	for _, tt := range tests {
		_, err := identity.NewSessions(keys, time.Minute, clockAt(tt.now)).Verify(tok)
		if (err == nil) != tt.ok {
			t.Errorf("at %v: Verify err = %v, want ok %v", tt.now, err, tt.ok)
		}
		if err != nil && !errors.Is(err, identity.ErrUnauthenticated) {
			t.Errorf("at %v: %v does not wrap ErrUnauthenticated", tt.now, err)
		}
	}
}

func TestSessionShopperIDs(t *testing.T) {
	keys := newKeys(t)
	s := identity.NewSessions(keys, time.Hour, clockAt(t0))
	kid, key := keys.Active()
	for _, tt := range shopperIDs {
		tok, _, err := s.Issue(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("Issue(%q) err = %v, want ok %v", tt.id, err, tt.ok)
		}
		if tt.ok {
			if got, err := s.Verify(tok); err != nil || got != tt.id {
				t.Errorf("Verify = %q, %v; want %q", got, err, tt.id)
			}
			continue
		}
		// A well-signed token with a bad sub is refused too.
		forged := sign(t, jwt.SigningMethodHS256, key, kid, with(sessionMap(), "sub", tt.id))
		if tt.id == "" {
			checkRefused(t, s, forged, "missing sub")
		} else {
			checkRefused(t, s, forged, "shopper id")
		}
	}
}

func sessionMap() jwt.MapClaims {
	return jwt.MapClaims{
		"iss": "flashgate",
		"sub": "shopper-1",
		"aud": "flashgate-session",
		"iat": t0.Unix(),
		"exp": t0.Add(time.Hour).Unix(),
	}
}

func TestSessionRejects(t *testing.T) {
	keys := newKeys(t)
	s := identity.NewSessions(keys, time.Hour, clockAt(t0))
	kid, key := keys.Active()
	otherKid, otherKey := newKeys(t).Active()
	good, _, err := s.Issue("shopper-1")
	if err != nil {
		t.Fatal(err)
	}
	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, key, kid, c) }

	tests := []struct {
		name, token, reason string
	}{
		{"other key, our kid", sign(t, jwt.SigningMethodHS256, otherKey, kid, sessionMap()), "bad signature"},
		{"other key set", sign(t, jwt.SigningMethodHS256, otherKey, otherKid, sessionMap()), "unknown kid"},
		{"missing kid", sign(t, jwt.SigningMethodHS256, key, "", sessionMap()), "missing kid"},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, sessionMap()), "algorithm not allowed"},
		{"HS384 right key", sign(t, jwt.SigningMethodHS384, key, kid, sessionMap()), "algorithm not allowed"},
		{"wrong issuer", hs(with(sessionMap(), "iss", "evil")), "wrong issuer"},
		{"no issuer", hs(with(sessionMap(), "iss", nil)), "wrong issuer"},
		{"wrong audience", hs(with(sessionMap(), "aud", "flashgate-purchase")), "wrong audience"},
		{"no exp", hs(with(sessionMap(), "exp", nil)), "missing exp"},
		{"no iat", hs(with(sessionMap(), "iat", nil)), "missing iat"},
		{"expired, wrong audience", hs(with(with(sessionMap(), "aud", "x"), "exp", t0.Unix())), "wrong audience"},
		{"expired", hs(with(sessionMap(), "exp", t0.Unix())), "expired"},
		{"tampered signature", flip(good, len(good)-10), "bad signature"},
		{"garbage", "garbage", "malformed"},
		{"empty", "", "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkRefused(t, s, tt.token, tt.reason) })
	}
}

func TestSessionAfterRotate(t *testing.T) {
	keys := newKeys(t)
	s := identity.NewSessions(keys, time.Hour, clockAt(t0))
	old, _, err := s.Issue("shopper-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Rotate(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(old); err != nil {
		t.Fatalf("session from old key: %v", err)
	}
}

// TestSessionAndPurchaseDoNotMix shares one KeySet between sessions and
// purchase tokens: neither kind passes as the other.
func TestSessionAndPurchaseDoNotMix(t *testing.T) {
	keys := newKeys(t)
	s := identity.NewSessions(keys, time.Hour, clockAt(t0))
	p := tokens.NewPurchase(keys, clockAt(t0))

	session, _, err := s.Issue("shopper-1")
	if err != nil {
		t.Fatal(err)
	}
	purchase, err := p.Sign(tokens.Claims{
		Shopper:   "shopper-1",
		Sale:      "sale-1",
		TokenID:   "01HZY8W2D3K4M5N6P7Q8R9S0T1",
		IssuedAt:  t0,
		ExpiresAt: t0.Add(time.Minute),
	})
	if err != nil {
		t.Fatal(err)
	}
	checkRefused(t, s, purchase, "wrong audience")
	if c, err := p.Verify(session); !errors.Is(err, tokens.ErrTokenInvalid) {
		t.Fatalf("purchase Verify(session) = %+v, %v; want ErrTokenInvalid", c, err)
	}
}

package identity_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/flashgate/flashgate/identity"
)

var t0 = time.Unix(1_700_000_000, 0)

func clockAt(t time.Time) func() time.Time { return func() time.Time { return t } }

// sign signs claims with method and key, adding a kid header unless kid is
// empty.
func sign(tb testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.Claims) string {
	tb.Helper()
	t := jwt.NewWithClaims(method, claims)
	if kid != "" {
		t.Header["kid"] = kid
	}
	s, err := t.SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// flip changes the character of s at i to another base64url character.
func flip(s string, i int) string {
	c := byte('A')
	if s[i] == c {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

func with(m jwt.MapClaims, key string, v any) jwt.MapClaims {
	c := jwt.MapClaims{}
	for k, v := range m {
		c[k] = v
	}
	if v == nil {
		delete(c, key)
	} else {
		c[key] = v
	}
	return c
}

// checkRefused asserts that v refuses token with ErrUnauthenticated and a
// message holding wantReason but not the token.
func checkRefused(t *testing.T, v identity.Verifier, token, wantReason string) {
	t.Helper()
	shopper, err := v.Verify(token)
	if !errors.Is(err, identity.ErrUnauthenticated) {
		t.Fatalf("Verify = %q, %v; want ErrUnauthenticated", shopper, err)
	}
	if shopper != "" {
		t.Errorf("shopper %q returned with error", shopper)
	}
	msg := err.Error()
	if !strings.Contains(msg, wantReason) {
		t.Errorf("error %q does not say %q", msg, wantReason)
	}
	if token != "" && strings.Contains(msg, token) {
		t.Errorf("error %q contains the token", msg)
	}
}

var shopperIDs = []struct {
	id string
	ok bool
}{
	{"a", true},
	{"shopper-1", true},
	{"!~", true},
	{"user@example.com", true},
	{strings.Repeat("x", 128), true},
	{"", false},
	{strings.Repeat("x", 129), false},
	{"two words", false},
	{"tab\there", false},
	{"nl\n", false},
	{"del\x7f", false},
	{"nul\x00", false},
	{"zoë", false},
}

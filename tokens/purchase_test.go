package tokens_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/flashgate/flashgate/internal/jwstest"
	"github.com/flashgate/flashgate/tokens"
)

const testKid = "k1"

var (
	testKey = bytes.Repeat([]byte{0x5a}, 32)
	t0      = time.Unix(1_700_000_000, 0)
)

func clockAt(t time.Time) func() time.Time { return func() time.Time { return t } }

func sample() tokens.Claims {
	return tokens.Claims{
		Shopper:   "shopper-1",
		Sale:      "sale-42",
		TokenID:   "01HZY8W2D3K4M5N6P7Q8R9S0T1",
		IssuedAt:  t0,
		ExpiresAt: t0.Add(2 * time.Minute),
	}
}

// validMap is the claim set of sample() as a map, for hand-made tokens.
func validMap() jwt.MapClaims {
	return jwt.MapClaims{
		"sub":  "shopper-1",
		"aud":  "flashgate-purchase",
		"sale": "sale-42",
		"jti":  "01HZY8W2D3K4M5N6P7Q8R9S0T1",
		"iat":  t0.Unix(),
		"exp":  t0.Add(2 * time.Minute).Unix(),
	}
}

// rawToken signs claims with method and key, with a kid header unless kid is
// empty.
func rawToken(tb testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.Claims) string {
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

func without(m jwt.MapClaims, key string) jwt.MapClaims {
	c := jwt.MapClaims{}
	for k, v := range m {
		if k != key {
			c[k] = v
		}
	}
	return c
}

func with(m jwt.MapClaims, key string, v any) jwt.MapClaims {
	c := without(m, key)
	c[key] = v
	return c
}

func sameClaims(a, b tokens.Claims) bool {
	return a.Shopper == b.Shopper && a.Sale == b.Sale && a.TokenID == b.TokenID &&
		a.IssuedAt.Equal(b.IssuedAt) && a.ExpiresAt.Equal(b.ExpiresAt)
}

func TestRoundTrip(t *testing.T) {
	p := tokens.NewPurchase(jwstest.Keys(t, testKid, testKey), clockAt(t0))
	tests := []struct {
		name string
		mod  func(*tokens.Claims)
	}{
		{"plain", func(*tokens.Claims) {}},
		{"sub-second iat", func(c *tokens.Claims) { c.IssuedAt = t0.Add(999 * time.Millisecond) }},
		{"unicode and quotes", func(c *tokens.Claims) { c.Shopper = `"Zoë" <z@x>`; c.Sale = "sale/\u2603" }},
		{"far expiry", func(c *tokens.Claims) { c.ExpiresAt = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := sample()
			tt.mod(&c)
			tok, err := p.Sign(c)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Verify(tok)
			if err != nil {
				t.Fatal(err)
			}
			want := c
			want.IssuedAt = c.IssuedAt.Truncate(time.Second)
			if !sameClaims(got, want) {
				t.Errorf("Verify = %+v, want %+v", got, want)
			}
		})
	}
}

func TestSignDeterministic(t *testing.T) {
	keys := jwstest.Keys(t, testKid, testKey)
	a, err := tokens.NewPurchase(keys, nil).Sign(sample())
	if err != nil {
		t.Fatal(err)
	}
	c := sample()
	c.IssuedAt = c.IssuedAt.Add(123456789 * time.Nanosecond) // same second
	b, err := tokens.NewPurchase(keys, clockAt(t0)).Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("tokens differ:\n%s\n%s", a, b)
	}

	// The same bytes as golang-jwt's own signer gives.
	lib := rawToken(t, jwt.SigningMethodHS256, testKey, testKid, &struct {
		jwt.MapClaims `json:"-"` // only for the jwt.Claims methods
		Sub           string     `json:"sub"`
		Aud           string     `json:"aud"`
		Sale          string     `json:"sale"`
		Jti           string     `json:"jti"`
		Iat           int64      `json:"iat"`
		Exp           int64      `json:"exp"`
	}{nil, "shopper-1", "flashgate-purchase", "sale-42", "01HZY8W2D3K4M5N6P7Q8R9S0T1", 1700000000, 1700000120})
	if a != lib {
		t.Fatalf("token differs from jwt.Token.SignedString:\n%s\n%s", a, lib)
	}

	// Freeze the wire form: header and payload, byte for byte.
	parts := strings.Split(a, ".")
	wantHeader := `{"alg":"HS256","kid":"k1","typ":"JWT"}`
	wantPayload := `{"sub":"shopper-1","aud":"flashgate-purchase","sale":"sale-42",` +
		`"jti":"01HZY8W2D3K4M5N6P7Q8R9S0T1","iat":1700000000,"exp":1700000120}`
	for i, want := range []string{wantHeader, wantPayload} {
		got, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("segment %d = %s, want %s", i, got, want)
		}
	}
}

func TestSignRefusesIncompleteClaims(t *testing.T) {
	p := tokens.NewPurchase(jwstest.Keys(t, testKid, testKey), nil)
	tests := []struct {
		name string
		mod  func(*tokens.Claims)
	}{
		{"no shopper", func(c *tokens.Claims) { c.Shopper = "" }},
		{"no sale", func(c *tokens.Claims) { c.Sale = "" }},
		{"no token id", func(c *tokens.Claims) { c.TokenID = "" }},
		{"no iat", func(c *tokens.Claims) { c.IssuedAt = time.Time{} }},
		{"no exp", func(c *tokens.Claims) { c.ExpiresAt = time.Time{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := sample()
			tt.mod(&c)
			if tok, err := p.Sign(c); err == nil {
				t.Fatalf("Sign = %q, want error", tok)
			}
		})
	}
}

func TestVerifyExpiry(t *testing.T) {
	keys := jwstest.Keys(t, testKid, testKey)
	tok, err := tokens.NewPurchase(keys, nil).Sign(sample())
	if err != nil {
		t.Fatal(err)
	}
	exp := sample().ExpiresAt
	tests := []struct {
		name string
		now  time.Time
		want error
	}{
		{"at issue", t0, nil},
		{"just before exp", exp.Add(-time.Nanosecond), nil},
		{"exactly exp", exp, tokens.ErrTokenExpired},
		{"after exp", exp.Add(time.Hour), tokens.ErrTokenExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tokens.NewPurchase(keys, clockAt(tt.now)).Verify(tok)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Verify: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	keys := jwstest.Keys(t, testKid, testKey)
	p := tokens.NewPurchase(keys, clockAt(t0))
	good, err := p.Sign(sample())
	if err != nil {
		t.Fatal(err)
	}
	otherKey := bytes.Repeat([]byte{0xa5}, 32)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	// alter re-encodes the payload of good after changing one claim.
	alter := func(claim, value string) string {
		parts := strings.Split(good, ".")
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(payload, &m); err != nil {
			t.Fatal(err)
		}
		m[claim] = value
		payload, err = json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		parts[1] = base64.RawURLEncoding.EncodeToString(payload)
		return strings.Join(parts, ".")
	}
	hs := func(claims jwt.Claims) string {
		return rawToken(t, jwt.SigningMethodHS256, testKey, testKid, claims)
	}

	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"forged with other key", rawToken(t, jwt.SigningMethodHS256, otherKey, testKid, validMap()), tokens.ErrTokenInvalid},
		{"altered sale", alter("sale", "sale-43"), tokens.ErrTokenInvalid},
		{"altered sub", alter("sub", "someone-else"), tokens.ErrTokenInvalid},
		{"alg none", rawToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, testKid, validMap()), tokens.ErrTokenInvalid},
		{"alg none, empty sig kept", strings.Join(strings.Split(rawToken(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, testKid, validMap()), ".")[:2], ".") + "." + strings.Split(good, ".")[2], tokens.ErrTokenInvalid},
		{"RS256 attacker key", rawToken(t, jwt.SigningMethodRS256, rsaKey, testKid, validMap()), tokens.ErrTokenInvalid},
		{"ES256 attacker key", rawToken(t, jwt.SigningMethodES256, ecKey, testKid, validMap()), tokens.ErrTokenInvalid},
		{"EdDSA attacker key", rawToken(t, jwt.SigningMethodEdDSA, edKey, testKid, validMap()), tokens.ErrTokenInvalid},
		{"HS384 right secret", rawToken(t, jwt.SigningMethodHS384, testKey, testKid, validMap()), tokens.ErrTokenInvalid},
		{"HS512 right secret", rawToken(t, jwt.SigningMethodHS512, testKey, testKid, validMap()), tokens.ErrTokenInvalid},
		{"unknown kid", rawToken(t, jwt.SigningMethodHS256, testKey, "k2", validMap()), tokens.ErrTokenInvalid},
		{"missing kid", rawToken(t, jwt.SigningMethodHS256, testKey, "", validMap()), tokens.ErrTokenInvalid},
		{"missing sub", hs(without(validMap(), "sub")), tokens.ErrTokenInvalid},
		{"missing sale", hs(without(validMap(), "sale")), tokens.ErrTokenInvalid},
		{"missing jti", hs(without(validMap(), "jti")), tokens.ErrTokenInvalid},
		{"missing iat", hs(without(validMap(), "iat")), tokens.ErrTokenInvalid},
		{"missing exp", hs(without(validMap(), "exp")), tokens.ErrTokenInvalid},
		{"missing aud", hs(without(validMap(), "aud")), tokens.ErrTokenInvalid},
		{"session aud", hs(with(validMap(), "aud", "flashgate-session")), tokens.ErrTokenInvalid},
		{"aud as list", hs(with(validMap(), "aud", []string{"flashgate-purchase"})), tokens.ErrTokenInvalid},
		{"exp as string", hs(with(validMap(), "exp", "1700000120")), tokens.ErrTokenInvalid},
		{"fractional exp", hs(with(validMap(), "exp", 1700000120.5)), tokens.ErrTokenInvalid},
		{"expired and wrong aud", hs(with(with(validMap(), "aud", "x"), "exp", t0.Unix())), tokens.ErrTokenInvalid},
		{"expired and no sale", hs(with(without(validMap(), "sale"), "exp", t0.Unix())), tokens.ErrTokenInvalid},
		{"expired genuine", hs(with(validMap(), "exp", t0.Unix())), tokens.ErrTokenExpired},
		{"empty", "", tokens.ErrTokenInvalid},
		{"dots", "..", tokens.ErrTokenInvalid},
		{"words", "not a token", tokens.ErrTokenInvalid},
		{"four segments", good + ".x", tokens.ErrTokenInvalid},
		{"padded signature", good + "=", tokens.ErrTokenInvalid},
		{"truncated", good[:len(good)-3], tokens.ErrTokenInvalid},
		{"json header only", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","kid":"k1"}`)) + "..", tokens.ErrTokenInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := p.Verify(tt.token)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %+v, %v; want %v", c, err, tt.want)
			}
			if tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Errorf("error %q contains the token", err)
			}
			switch {
			case errors.Is(err, tokens.ErrTokenExpired):
				// An expired but genuine token still tells whose it is.
				if c.Shopper == "" || c.Sale == "" || c.TokenID == "" {
					t.Errorf("expired genuine token: claims %+v missing", c)
				}
			case c != (tokens.Claims{}):
				t.Errorf("claims %+v returned with error", c)
			}
		})
	}
}

func TestRotate(t *testing.T) {
	keys, err := tokens.NewKeySet()
	if err != nil {
		t.Fatal(err)
	}
	p := tokens.NewPurchase(keys, clockAt(t0))
	oldKid, oldKey := keys.Active()
	old, err := p.Sign(sample())
	if err != nil {
		t.Fatal(err)
	}
	newKid, err := keys.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if newKid == oldKid {
		t.Fatalf("Rotate kept kid %q", newKid)
	}
	if kid, _ := keys.Active(); kid != newKid {
		t.Fatalf("Active = %q, want %q", kid, newKid)
	}
	if _, err := p.Verify(old); err != nil {
		t.Fatalf("token from old key: %v", err)
	}
	fresh, err := p.Sign(sample())
	if err != nil {
		t.Fatal(err)
	}
	if got := headerKid(t, fresh); got != newKid {
		t.Fatalf("new token kid = %q, want %q", got, newKid)
	}
	if _, err := p.Verify(fresh); err != nil {
		t.Fatal(err)
	}
	// The fast path takes the tokens of both keys, and a token signed with
	// one under the other's kid is refused, as the library refuses it.
	for _, tok := range []string{old, fresh} {
		if c, ok := tokens.VerifyFast(p, tok); !ok || !sameClaims(c, sample()) {
			t.Errorf("after a rotation the fast path does not take %s: %+v", tok, c)
		}
	}
	_, newKey := keys.Active()
	payload := purchasePayloads()[0]
	for _, tok := range []string{
		jwstest.Sign(newKey, `{"alg":"HS256","kid":"`+oldKid+`","typ":"JWT"}`, payload),
		jwstest.Sign(oldKey, `{"alg":"HS256","kid":"`+newKid+`","typ":"JWT"}`, payload),
	} {
		c, err := p.Verify(tok)
		agreeWithLibrary(t, p, tok, c, err)
		if err == nil {
			t.Errorf("a token signed with one key under the other's kid passed: %+v", c)
		}
	}

	// Saved and reloaded, both keys still verify.
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := keys.Save(path); err != nil {
		t.Fatal(err)
	}
	loaded, err := tokens.LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if kid, _ := loaded.Active(); kid != newKid {
		t.Fatalf("reloaded Active = %q, want %q", kid, newKid)
	}
	p2 := tokens.NewPurchase(loaded, clockAt(t0))
	for _, tok := range []string{old, fresh} {
		if _, err := p2.Verify(tok); err != nil {
			t.Fatal(err)
		}
	}
}

func headerKid(tb testing.TB, token string) string {
	tb.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		tb.Fatal(err)
	}
	var hdr struct {
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(h, &hdr); err != nil {
		tb.Fatal(err)
	}
	return hdr.Kid
}

// TestConcurrentRotate gives the race detector signing, verifying and rotating
// at once.
func TestConcurrentRotate(t *testing.T) {
	keys, err := tokens.NewKeySet()
	if err != nil {
		t.Fatal(err)
	}
	p := tokens.NewPurchase(keys, clockAt(t0))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				tok, err := p.Sign(sample())
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := p.Verify(tok); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if _, err := keys.Rotate(); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
}

func FuzzVerify(f *testing.F) {
	keys := jwstest.Keys(f, testKid, testKey)
	p := tokens.NewPurchase(keys, clockAt(t0))
	good, err := p.Sign(sample())
	if err != nil {
		f.Fatal(err)
	}
	hs := func(method jwt.SigningMethod, kid string, claims jwt.Claims) string {
		return rawToken(f, method, testKey, kid, claims)
	}
	for _, seed := range []string{
		good,
		good[:len(good)-1],
		good + ".",
		hs(jwt.SigningMethodHS256, testKid, with(validMap(), "sub", "\xff\x00")),
		hs(jwt.SigningMethodHS256, testKid, with(validMap(), "exp", t0.Unix())),
		hs(jwt.SigningMethodHS256, testKid, without(validMap(), "jti")),
		hs(jwt.SigningMethodHS256, testKid, with(validMap(), "iat", -62135596800)),
		hs(jwt.SigningMethodHS256, "other", validMap()),
		hs(jwt.SigningMethodHS384, testKid, validMap()),
		rawToken(f, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, testKid, validMap()),
		"",
		"..",
		"a.b.c",
		"eyJhbGciOiJIUzI1NiJ9.e30.",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := p.Verify(token)
		agreeWithLibrary(t, p, token, c, err)
		if err != nil {
			if !errors.Is(err, tokens.ErrTokenInvalid) && !errors.Is(err, tokens.ErrTokenExpired) {
				t.Fatalf("error %v wraps neither sentinel", err)
			}
			return
		}
		if c.Shopper == "" || c.Sale == "" || c.TokenID == "" || c.IssuedAt.IsZero() || c.ExpiresAt.IsZero() {
			t.Fatalf("verified claims incomplete: %+v", c)
		}
		again, err := p.Sign(c)
		if err != nil {
			t.Fatalf("re-sign %+v: %v", c, err)
		}
		c2, err := p.Verify(again)
		if err != nil {
			t.Fatalf("verify re-signed: %v", err)
		}
		if !sameClaims(c, c2) {
			t.Fatalf("claims changed: %+v then %+v", c, c2)
		}
	})
}

func BenchmarkSign(b *testing.B) {
	p := tokens.NewPurchase(jwstest.Keys(b, testKid, testKey), clockAt(t0))
	c := sample()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := p.Sign(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	p := tokens.NewPurchase(jwstest.Keys(b, testKid, testKey), clockAt(t0))
	tok, err := p.Sign(sample())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := p.Verify(tok); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("library", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := tokens.VerifyLib(p, tok); err != nil {
				b.Fatal(err)
			}
		}
	})
}

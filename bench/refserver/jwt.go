package main

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oklog/ulid/v2"
)

// The claims of flashgate's sessions (identity/sessions.go) and purchase
// tokens (tokens/purchase.go), so that both servers sign and verify the same
// shapes with the same algorithm.
const (
	sessionIssuer    = "flashgate"
	sessionAudience  = "flashgate-session"
	sessionTTL       = 24 * time.Hour
	purchaseAudience = "flashgate-purchase"
	keyID            = "k1"
)

// sessionClaims is a session token's claims.
type sessionClaims struct {
	Iss string `json:"iss"`
	Sub string `json:"sub"`
	Aud string `json:"aud"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
}

// Validate checks everything but expiry, which the parser checks.
func (c *sessionClaims) Validate() error {
	switch {
	case c.Aud != sessionAudience:
		return errors.New("wrong audience")
	case c.Iss != sessionIssuer:
		return errors.New("wrong issuer")
	case c.Sub == "" || len(c.Sub) > 128:
		return errors.New("bad sub")
	case c.Iat <= 0 || c.Exp <= 0:
		return errors.New("missing iat or exp")
	}
	return nil
}

func (c *sessionClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return &jwt.NumericDate{Time: time.Unix(c.Exp, 0)}, nil
}
func (c *sessionClaims) GetIssuedAt() (*jwt.NumericDate, error) {
	return &jwt.NumericDate{Time: time.Unix(c.Iat, 0)}, nil
}
func (c *sessionClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }
func (c *sessionClaims) GetIssuer() (string, error)              { return c.Iss, nil }
func (c *sessionClaims) GetSubject() (string, error)             { return c.Sub, nil }
func (c *sessionClaims) GetAudience() (jwt.ClaimStrings, error) {
	return jwt.ClaimStrings{c.Aud}, nil
}

// purchaseClaims is a purchase token's claims, in flashgate's field order.
type purchaseClaims struct {
	Sub  string `json:"sub"`
	Aud  string `json:"aud"`
	Sale string `json:"sale"`
	Jti  string `json:"jti"`
	Iat  int64  `json:"iat"`
	Exp  int64  `json:"exp"`
}

// Validate checks everything but expiry, which the parser checks.
func (c *purchaseClaims) Validate() error {
	if c.Aud != purchaseAudience || c.Sub == "" || c.Sale == "" || c.Jti == "" || c.Iat <= 0 || c.Exp <= 0 {
		return errors.New("bad purchase claims")
	}
	return nil
}

func (c *purchaseClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return &jwt.NumericDate{Time: time.Unix(c.Exp, 0)}, nil
}
func (c *purchaseClaims) GetIssuedAt() (*jwt.NumericDate, error) {
	return &jwt.NumericDate{Time: time.Unix(c.Iat, 0)}, nil
}
func (c *purchaseClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }
func (c *purchaseClaims) GetIssuer() (string, error)              { return "", nil }
func (c *purchaseClaims) GetSubject() (string, error)             { return c.Sub, nil }
func (c *purchaseClaims) GetAudience() (jwt.ClaimStrings, error) {
	return jwt.ClaimStrings{c.Aud}, nil
}

// signer signs and verifies sessions and purchase tokens with one HMAC key
// (flashgate keeps a key set per kind; with one active key each, the work
// per token is the same). It is safe for concurrent use.
type signer struct {
	key    []byte
	now    func() time.Time
	parser *jwt.Parser
	keyFn  jwt.Keyfunc
}

func newSigner(now func() time.Time) *signer {
	s := &signer{key: make([]byte, 32), now: now}
	_, _ = rand.Read(s.key)
	s.parser = jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithTimeFunc(now), jwt.WithExpirationRequired())
	s.keyFn = func(t *jwt.Token) (any, error) {
		if kid, _ := t.Header["kid"].(string); kid != keyID {
			return nil, errors.New("unknown kid")
		}
		return s.key, nil
	}
	return s
}

// session returns a session token for shopper, as flashgate's
// identity.Sessions.Issue signs it (with the jwt library).
func (s *signer) session(shopper string) (string, time.Time, error) {
	now := s.now()
	c := sessionClaims{Iss: sessionIssuer, Sub: shopper, Aud: sessionAudience, Iat: now.Unix(), Exp: now.Add(sessionTTL).Unix()}
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, &c)
	t.Header["kid"] = keyID
	tok, err := t.SignedString(s.key)
	return tok, time.Unix(c.Exp, 0), err
}

// verifySession returns the shopper of a valid session token.
func (s *signer) verifySession(tok string) (string, error) {
	var c sessionClaims
	if _, err := s.parser.ParseWithClaims(tok, &c, s.keyFn); err != nil {
		return "", err
	}
	return c.Sub, nil
}

// purchase returns a purchase token, as flashgate's tokens.Purchase.Sign
// does: the claims marshalled once and HMAC-signed without the jwt
// library's general path.
func (s *signer) purchase(c purchaseClaims) (string, error) {
	c.Aud = purchaseAudience
	if err := c.Validate(); err != nil {
		return "", err
	}
	payload, err := json.Marshal(&c)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	header := `{"alg":"HS256","kid":"` + keyID + `","typ":"JWT"}`
	buf := make([]byte, 0, enc.EncodedLen(len(header))+enc.EncodedLen(len(payload))+enc.EncodedLen(sha256.Size)+2)
	buf = enc.AppendEncode(buf, []byte(header))
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	mac := hmac.New(sha256.New, s.key)
	mac.Write(buf)
	var sum [sha256.Size]byte
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, mac.Sum(sum[:0]))
	return string(buf), nil
}

// verifyPurchase returns the claims of a purchase token, and whether it
// has expired (an expired token's claims are genuine: the signature was
// checked first).
func (s *signer) verifyPurchase(tok string) (c purchaseClaims, expired bool, err error) {
	_, err = s.parser.ParseWithClaims(tok, &c, s.keyFn)
	if errors.Is(err, jwt.ErrTokenExpired) && c.Validate() == nil {
		return c, true, nil
	}
	if err != nil {
		return c, false, fmt.Errorf("purchase token: %w", err)
	}
	return c, false, nil
}

// ids makes ULIDs, monotonic within a millisecond, as flashgate's
// events.IDs does.
type ids struct {
	mu      sync.Mutex
	entropy *ulid.MonotonicEntropy
}

func newIDs() *ids { return &ids{entropy: ulid.Monotonic(rand.Reader, 0)} }

func (g *ids) New(t time.Time) string {
	g.mu.Lock()
	id, err := ulid.New(ulid.Timestamp(t), g.entropy)
	g.mu.Unlock()
	if err != nil {
		id = ulid.MustNew(ulid.Timestamp(t), rand.Reader)
	}
	return id.String()
}

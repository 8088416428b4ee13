package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/flashgate/flashgate/tokens"
)

const (
	sessionIssuer   = "flashgate"
	sessionAudience = "flashgate-session"
	defaultTTL      = 24 * time.Hour
)

// sessionClaims is the wire form of a session token.
type sessionClaims struct {
	Iss string `json:"iss"`
	Sub string `json:"sub"`
	Aud string `json:"aud"`
	Iat int64  `json:"iat"`
	Exp int64  `json:"exp"`
}

// scan reads b if it is in the form Issue writes (tokens.ScanClaims); if it
// is not, c is left empty.
func (c *sessionClaims) scan(b []byte) bool {
	if tokens.ScanClaims(b, []tokens.Claim{{Key: "iss", Str: &c.Iss}, {Key: "sub", Str: &c.Sub}, {Key: "aud", Str: &c.Aud}, {Key: "iat", Int: &c.Iat}, {Key: "exp", Int: &c.Exp}}) {
		return true
	}
	*c = sessionClaims{}
	return false
}

// Validate checks everything but expiry, which the jwt validator checks
// against the injected clock.
func (c *sessionClaims) Validate() error {
	switch {
	case c.Aud != sessionAudience:
		return claimError("wrong audience")
	case c.Iss != sessionIssuer:
		return claimError("wrong issuer")
	case c.Sub == "":
		return claimError("missing sub")
	case c.Iat <= 0:
		return claimError("missing iat")
	case c.Exp <= 0:
		return claimError("missing exp")
	}
	return nil
}

func (c *sessionClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	if c.Exp == 0 {
		return nil, nil
	}
	return &jwt.NumericDate{Time: time.Unix(c.Exp, 0)}, nil
}

func (c *sessionClaims) GetIssuedAt() (*jwt.NumericDate, error) {
	if c.Iat == 0 {
		return nil, nil
	}
	return &jwt.NumericDate{Time: time.Unix(c.Iat, 0)}, nil
}

func (c *sessionClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }
func (c *sessionClaims) GetIssuer() (string, error)              { return c.Iss, nil }
func (c *sessionClaims) GetSubject() (string, error)             { return c.Sub, nil }
func (c *sessionClaims) GetAudience() (jwt.ClaimStrings, error) {
	return jwt.ClaimStrings{c.Aud}, nil
}

// Sessions issues and verifies anonymous session tokens: HS256 JWTs signed
// with the active key of a KeySet. It is safe for concurrent use.
type Sessions struct {
	keys    *tokens.KeySet
	ttl     time.Duration
	now     func() time.Time
	parser  *jwt.Parser
	keyFunc jwt.Keyfunc
}

// NewSessions returns Sessions signing with keys, whose tokens last ttl
// (24h if 0). A nil now means time.Now.
func NewSessions(keys *tokens.KeySet, ttl time.Duration, now func() time.Time) *Sessions {
	if ttl == 0 {
		ttl = defaultTTL
	}
	if now == nil {
		now = time.Now
	}
	s := &Sessions{keys: keys, ttl: ttl, now: now}
	s.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithTimeFunc(now),
		jwt.WithExpirationRequired(),
	)
	s.keyFunc = s.key
	return s
}

func (s *Sessions) key(t *jwt.Token) (any, error) {
	kid, ok := t.Header["kid"].(string)
	if !ok || kid == "" {
		return nil, errNoKid
	}
	key, ok := s.keys.Key(kid)
	if !ok {
		return nil, errUnknownKid
	}
	return key, nil
}

// Issue returns a session token for shopper and the time it expires, in
// whole seconds.
func (s *Sessions) Issue(shopper string) (token string, expiresAt time.Time, err error) {
	if err := checkShopper(shopper); err != nil {
		return "", time.Time{}, fmt.Errorf("issue session: %w", err)
	}
	now := s.now()
	c := sessionClaims{
		Iss: sessionIssuer,
		Sub: shopper,
		Aud: sessionAudience,
		Iat: now.Unix(),
		Exp: now.Add(s.ttl).Unix(),
	}
	kid, key := s.keys.Active()
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, &c)
	t.Header["kid"] = kid
	token, err = t.SignedString(key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("issue session: %w", err)
	}
	return token, time.Unix(c.Exp, 0), nil
}

// Verify checks a session token and returns its shopper. Errors wrap
// ErrUnauthenticated.
func (s *Sessions) Verify(token string) (shopper string, err error) {
	if shopper, ok := s.verifyFast(token); ok {
		return shopper, nil
	}
	return s.verifyLib(token)
}

// verifyFast takes the sessions verifyLib accepts in the form Issue writes
// them (tokens.KeySet.VerifyHS256), with the checks verifyLib makes: the
// claims decode, pass Validate, have not expired (now < exp, no leeway) and
// name a well-formed shopper. ok=false leaves the verdict to verifyLib.
// Every shopper request verifies a session: this is about a sixth of the
// CPU golang-jwt's parser takes for it.
func (s *Sessions) verifyFast(token string) (shopper string, ok bool) {
	var scratch [256]byte
	b, ok := s.keys.VerifyHS256(token, scratch[:0])
	if !ok {
		return "", false
	}
	var c sessionClaims
	if !c.scan(b) && json.Unmarshal(b, &c) != nil || c.Validate() != nil || !s.now().Before(time.Unix(c.Exp, 0)) || checkShopper(c.Sub) != nil {
		return "", false
	}
	return c.Sub, true
}

// verifyLib is Verify by golang-jwt: every token, every reason.
func (s *Sessions) verifyLib(token string) (shopper string, err error) {
	var c sessionClaims
	t, err := s.parser.ParseWithClaims(token, &c, s.keyFunc)
	if err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) && c.Validate() == nil {
			return "", fmt.Errorf("%w: session: expired", ErrUnauthenticated)
		}
		return "", fmt.Errorf("%w: session: %s", ErrUnauthenticated, reason(t, err, jwt.SigningMethodHS256.Alg()))
	}
	if err := checkShopper(c.Sub); err != nil {
		return "", fmt.Errorf("%w: session: %v", ErrUnauthenticated, err)
	}
	return c.Sub, nil
}

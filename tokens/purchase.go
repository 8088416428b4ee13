// Package tokens issues and verifies purchase tokens: short-lived HS256 JWTs
// that let one shopper buy one unit in one sale. It also holds the HMAC key
// sets that purchase tokens and sessions are signed with.
package tokens

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/flashgate/flashgate/internal/jsonstr"
)

// purchaseAudience is the aud claim of every purchase token. It keeps tokens
// of other kinds signed with the same keys (sessions) from passing as
// purchase tokens.
const purchaseAudience = "flashgate-purchase"

var (
	// ErrTokenInvalid means a purchase token is malformed, forged, altered,
	// signed with a refused algorithm or an unknown key, or lacks a claim.
	ErrTokenInvalid = errors.New("purchase token invalid")
	// ErrTokenExpired means a purchase token is genuine but its expiry has
	// passed.
	ErrTokenExpired = errors.New("purchase token expired")
)

var (
	errNoKid      = errors.New("missing kid")
	errUnknownKid = errors.New("unknown kid")
)

// Claims are the facts a purchase token carries.
type Claims struct {
	Shopper   string    // JWT "sub"
	Sale      string    // claim "sale"
	TokenID   string    // JWT "jti", a ULID in practice
	IssuedAt  time.Time // "iat", encoded in whole seconds
	ExpiresAt time.Time // "exp", encoded in whole seconds
}

// purchaseClaims is the wire form of Claims. The field order fixes the JSON
// encoding, so signing is deterministic.
type purchaseClaims struct {
	Sub  string `json:"sub"`
	Aud  string `json:"aud"`
	Sale string `json:"sale"`
	Jti  string `json:"jti"`
	Iat  int64  `json:"iat"`
	Exp  int64  `json:"exp"`
}

// appendJSON appends the claims as json.Marshal writes them, without its
// reflection: a token is signed for every one issued.
func (c *purchaseClaims) appendJSON(b []byte) []byte {
	b = append(b, `{"sub":`...)
	b = jsonstr.Append(b, c.Sub)
	b = append(b, `,"aud":`...)
	b = jsonstr.Append(b, c.Aud)
	b = append(b, `,"sale":`...)
	b = jsonstr.Append(b, c.Sale)
	b = append(b, `,"jti":`...)
	b = jsonstr.Append(b, c.Jti)
	b = append(b, `,"iat":`...)
	b = strconv.AppendInt(b, c.Iat, 10)
	b = append(b, `,"exp":`...)
	b = strconv.AppendInt(b, c.Exp, 10)
	return append(b, '}')
}

// scan reads b if it is in the form Sign writes (ScanClaims); if it is
// not, c is left empty.
func (c *purchaseClaims) scan(b []byte) bool {
	if ScanClaims(b, []Claim{{Key: "sub", Str: &c.Sub}, {Key: "aud", Str: &c.Aud}, {Key: "sale", Str: &c.Sale}, {Key: "jti", Str: &c.Jti}, {Key: "iat", Int: &c.Iat}, {Key: "exp", Int: &c.Exp}}) {
		return true
	}
	*c = purchaseClaims{}
	return false
}

// claimError is a reason a claim set is refused.
type claimError string

func (e claimError) Error() string { return string(e) }

// Validate checks everything but expiry, which the jwt validator checks
// against the injected clock. Sign uses it too, so anything signed verifies.
func (c *purchaseClaims) Validate() error {
	switch {
	case c.Aud != purchaseAudience:
		return claimError("wrong audience")
	case c.Sub == "":
		return claimError("missing sub")
	case c.Sale == "":
		return claimError("missing sale")
	case c.Jti == "":
		return claimError("missing jti")
	case c.Iat <= 0:
		return claimError("missing iat")
	case c.Exp <= 0:
		return claimError("missing exp")
	}
	return nil
}

func (c *purchaseClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	if c.Exp == 0 {
		return nil, nil
	}
	return &jwt.NumericDate{Time: time.Unix(c.Exp, 0)}, nil
}

func (c *purchaseClaims) GetIssuedAt() (*jwt.NumericDate, error) {
	if c.Iat == 0 {
		return nil, nil
	}
	return &jwt.NumericDate{Time: time.Unix(c.Iat, 0)}, nil
}

func (c *purchaseClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }
func (c *purchaseClaims) GetIssuer() (string, error)              { return "", nil }
func (c *purchaseClaims) GetSubject() (string, error)             { return c.Sub, nil }
func (c *purchaseClaims) GetAudience() (jwt.ClaimStrings, error) {
	return jwt.ClaimStrings{c.Aud}, nil
}

// Purchase signs and verifies purchase tokens. It is safe for concurrent use.
type Purchase struct {
	keys    *KeySet
	now     func() time.Time
	parser  *jwt.Parser
	keyFunc jwt.Keyfunc
}

// NewPurchase returns a Purchase that signs with the active key of keys and
// verifies with any of them. A nil now means time.Now.
func NewPurchase(keys *KeySet, now func() time.Time) *Purchase {
	if now == nil {
		now = time.Now
	}
	p := &Purchase{keys: keys, now: now}
	p.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithTimeFunc(now),
		jwt.WithExpirationRequired(),
	)
	p.keyFunc = p.key
	return p
}

func (p *Purchase) key(t *jwt.Token) (any, error) {
	kid, ok := t.Header["kid"].(string)
	if !ok || kid == "" {
		return nil, errNoKid
	}
	key, ok := p.keys.Key(kid)
	if !ok {
		return nil, errUnknownKid
	}
	return key, nil
}

// Sign returns a token for c, signed with the active key. The same claims and
// active key always give the same token.
func (p *Purchase) Sign(c Claims) (string, error) {
	pc := purchaseClaims{
		Sub:  c.Shopper,
		Aud:  purchaseAudience,
		Sale: c.Sale,
		Jti:  c.TokenID,
		Iat:  c.IssuedAt.Unix(),
		Exp:  c.ExpiresAt.Unix(),
	}
	if err := pc.Validate(); err != nil {
		return "", fmt.Errorf("sign purchase token: %w", err)
	}
	var scratch [256]byte
	return p.keys.SignHS256(pc.appendJSON(scratch[:0])), nil
}

// Verify checks token and returns its claims. Errors wrap ErrTokenExpired
// when the token is genuine but now >= exp, and ErrTokenInvalid otherwise.
func (p *Purchase) Verify(token string) (Claims, error) {
	if c, ok := p.verifyFast(token); ok {
		return c, nil
	}
	return p.verifyLib(token)
}

// verifyFast takes the tokens verifyLib accepts in the form this package
// signs them (KeySet.VerifyHS256), with the checks the parser makes: the
// claims decode, pass Validate and have not expired (now < exp, no leeway).
// ok=false leaves the verdict to verifyLib.
func (p *Purchase) verifyFast(token string) (Claims, bool) {
	var scratch [256]byte
	b, ok := p.keys.VerifyHS256(token, scratch[:0])
	if !ok {
		return Claims{}, false
	}
	var pc purchaseClaims
	if !pc.scan(b) && json.Unmarshal(b, &pc) != nil || pc.Validate() != nil || !p.now().Before(time.Unix(pc.Exp, 0)) {
		return Claims{}, false
	}
	return pc.claims(), true
}

// verifyLib is Verify by golang-jwt: every token, every reason.
func (p *Purchase) verifyLib(token string) (Claims, error) {
	var pc purchaseClaims
	t, err := p.parser.ParseWithClaims(token, &pc, p.keyFunc)
	if err != nil {
		// Expired is reported only for a token that is otherwise sound.
		// The parser checks the signature before the claims, so these
		// claims are genuine: the caller may still need them (a retried
		// purchase of an expired token must learn its order).
		if errors.Is(err, jwt.ErrTokenExpired) && pc.Validate() == nil {
			return pc.claims(), ErrTokenExpired
		}
		return Claims{}, fmt.Errorf("%w: %s", ErrTokenInvalid, reason(t, err))
	}
	return pc.claims(), nil
}

func (pc *purchaseClaims) claims() Claims {
	return Claims{
		Shopper:   pc.Sub,
		Sale:      pc.Sale,
		TokenID:   pc.Jti,
		IssuedAt:  time.Unix(pc.Iat, 0),
		ExpiresAt: time.Unix(pc.Exp, 0),
	}
}

// reason turns a jwt error into a short fixed phrase, so that no part of the
// token ends up in an error message.
func reason(t *jwt.Token, err error) string {
	var ce claimError
	switch {
	case errors.As(err, &ce):
		return string(ce)
	case errors.Is(err, errNoKid):
		return errNoKid.Error()
	case errors.Is(err, errUnknownKid):
		return errUnknownKid.Error()
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case t != nil && t.Method != nil && t.Method != jwt.SigningMethodHS256,
		errors.Is(err, jwt.ErrTokenUnverifiable):
		return "algorithm not allowed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "missing exp"
	}
	return "invalid"
}

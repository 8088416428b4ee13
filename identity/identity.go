// Package identity tells who a shopper is: from an anonymous session token
// the server signed itself (Sessions), or from a JWT issued by the shop's own
// identity provider (External).
package identity

import (
	"errors"

	"github.com/golang-jwt/jwt/v5"
)

// Verifier turns a bearer credential into a shopper id.
type Verifier interface {
	Verify(token string) (shopper string, err error)
}

var (
	_ Verifier = (*Sessions)(nil)
	_ Verifier = (*External)(nil)
)

// ErrUnauthenticated is wrapped by every Verify failure. The message adds a
// short reason, never the token.
var ErrUnauthenticated = errors.New("unauthenticated")

// maxShopperLen is the longest shopper id accepted.
const maxShopperLen = 128

// errBadShopper is the reason for a shopper id that checkShopper refuses.
var errBadShopper = errors.New("shopper id must be 1 to 128 bytes of printable ASCII without spaces")

// checkShopper reports whether id is 1..128 bytes of printable ASCII without
// spaces (0x21 to 0x7e).
func checkShopper(id string) error {
	if id == "" || len(id) > maxShopperLen {
		return errBadShopper
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return errBadShopper
		}
	}
	return nil
}

var (
	errNoKid      = errors.New("missing kid")
	errUnknownKid = errors.New("unknown kid")
)

// claimError is a reason a claim set is refused.
type claimError string

func (e claimError) Error() string { return string(e) }

// reason turns a jwt error into a short fixed phrase, so that no part of the
// token ends up in an error message. alg is the one algorithm allowed.
func reason(t *jwt.Token, err error, alg string) string {
	var ce claimError
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, errNoKid):
		return errNoKid.Error()
	case errors.Is(err, errUnknownKid):
		return errUnknownKid.Error()
	case t != nil && t.Method != nil && t.Method.Alg() != alg,
		errors.Is(err, jwt.ErrTokenUnverifiable):
		return "algorithm not allowed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature"
	case errors.As(err, &ce):
		return string(ce)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "missing required claim"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	}
	return "invalid"
}

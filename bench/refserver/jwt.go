package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/flashgate/flashgate/identity"
	"github.com/flashgate/flashgate/tokens"
)

// sessionTTL is flashgate's default session lifetime.
const sessionTTL = 24 * time.Hour

// signer signs and verifies sessions and purchase tokens with flashgate's
// own code (identity.Sessions, tokens.Purchase), each kind with a key set of
// its own as flashgate keeps them: the JWT work per request is exactly
// flashgate's, so the comparison measures the decision and its record,
// not two JWT implementations. It is safe for concurrent use.
type signer struct {
	sessions  *identity.Sessions
	purchases *tokens.Purchase
}

func newSigner(now func() time.Time) (*signer, error) {
	sk, err := tokens.NewKeySet()
	if err != nil {
		return nil, err
	}
	pk, err := tokens.NewKeySet()
	if err != nil {
		return nil, err
	}
	return &signer{sessions: identity.NewSessions(sk, sessionTTL, now), purchases: tokens.NewPurchase(pk, now)}, nil
}

// purchaseClaims are a purchase token's claims, times in Unix seconds.
type purchaseClaims struct {
	Sub, Sale, Jti string
	Iat, Exp       int64
}

func (s *signer) session(shopper string) (string, time.Time, error) { return s.sessions.Issue(shopper) }

// verifySession returns the shopper of a valid session token.
func (s *signer) verifySession(tok string) (string, error) { return s.sessions.Verify(tok) }

// purchase returns a purchase token.
func (s *signer) purchase(c purchaseClaims) (string, error) {
	return s.purchases.Sign(tokens.Claims{Shopper: c.Sub, Sale: c.Sale, TokenID: c.Jti,
		IssuedAt: time.Unix(c.Iat, 0), ExpiresAt: time.Unix(c.Exp, 0)})
}

// verifyPurchase returns the claims of a purchase token, and whether it
// has expired (an expired token's claims are genuine: the signature was
// checked first).
func (s *signer) verifyPurchase(tok string) (c purchaseClaims, expired bool, err error) {
	got, err := s.purchases.Verify(tok)
	c = purchaseClaims{Sub: got.Shopper, Sale: got.Sale, Jti: got.TokenID, Iat: got.IssuedAt.Unix(), Exp: got.ExpiresAt.Unix()}
	if errors.Is(err, tokens.ErrTokenExpired) {
		return c, true, nil
	}
	if err != nil {
		return purchaseClaims{}, false, fmt.Errorf("purchase token: %w", err)
	}
	return c, false, nil
}

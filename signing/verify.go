package signing

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"time"
)

// Verifier checks signed requests. Keys and Once are required (without Once,
// every correctly signed request fails with ErrUnavailable); the zero values
// of Window and Now mean DefaultWindow and time.Now. A Verifier is
// safe for concurrent use as long as its fields, Keys included, are not
// changed while it is in use.
type Verifier struct {
	Keys   Keys
	Window time.Duration    // accepted: |ts - now| <= Window; zero or negative means DefaultWindow; Once must keep keys longer than 2×Window
	Now    func() time.Time // nil means time.Now
	Once   Once             // remembers nonces across processes
}

// Verify checks the X-Signature header value of a request and returns its key
// id. method is the request's method, pathQuery its target exactly as
// received (r.RequestURI), body the whole body, bound the hash of its bound
// headers (BoundOf(r.Header)).
//
// The checks run in this order, and the first that fails decides the error:
// the header is present (ErrMissing) and well formed (ErrMalformed), its key
// id is known (ErrUnknownKey), its timestamp is within the window
// (ErrStale), the HMAC matches, compared in constant time (ErrBadSignature),
// and only then the nonce is used through Once under "sig.<keyId>.<nonce>"
// (ErrReplayed if it was used before, ErrUnavailable if Once fails). A key
// with an empty secret counts as unknown.
func (v *Verifier) Verify(ctx context.Context, method, pathQuery string, body []byte, bound [32]byte, header string) (keyID string, err error) {
	if header == "" {
		return "", ErrMissing
	}
	p, err := ParseHeader(header)
	if err != nil {
		return "", err
	}
	secret := v.Keys[p.KeyID]
	if len(secret) == 0 {
		return "", fmt.Errorf("%w: %q", ErrUnknownKey, p.KeyID)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	window := v.Window
	if window <= 0 {
		window = DefaultWindow
	}
	t := now()
	// Sub saturates, so a ts far from now cannot overflow.
	if d := time.Unix(p.Timestamp, 0).Sub(t); d > window || d < -window {
		return "", fmt.Errorf("%w: ts %d, server time %d (unix seconds), window ±%s",
			ErrStale, p.Timestamp, t.Unix(), window)
	}
	want := mac(secret, method, pathQuery, sha256.Sum256(body), bound, p.Timestamp, p.Nonce, p.KeyID)
	if !hmac.Equal(want[:], p.Sig[:]) {
		return "", ErrBadSignature
	}
	if v.Once == nil {
		return "", fmt.Errorf("%w: Verifier.Once not set", ErrUnavailable)
	}
	first, err := v.Once.Use(ctx, "sig."+p.KeyID+"."+p.Nonce)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if !first {
		return "", ErrReplayed
	}
	return p.KeyID, nil
}

// Package challenge is flashgate's human check before a shopper may ask for
// purchase tokens. It offers two kinds:
//
//   - PoW, a proof-of-work puzzle that flashgate signs and checks itself: the
//     browser spends about a second of CPU per puzzle, a script that wants a
//     million identities spends a million puzzles (see DefaultDifficulty for
//     what that costs outside a browser).
//   - Captcha, a verifier for the response tokens of a third-party CAPTCHA
//     (Cloudflare Turnstile, hCaptcha, reCAPTCHA) through the provider's
//     server-side siteverify endpoint.
//
// Both accept a solution or response token once across all flashgate
// processes, through a shared Once store. Every Verify error wraps exactly one
// of ErrRequired, ErrFailed or ErrUnavailable; messages never quote the
// solution or token.
package challenge

import (
	"context"
	"errors"
)

// Once remembers single-use values across all flashgate processes (a NATS KV
// bucket with a TTL in production). Use records key and reports whether this
// is its first use. An error means the store could not be asked.
//
// The store must keep a key at least as long as the value it stands for can
// pass the other checks: DefaultTTL (or PoWConfig.TTL) for puzzles, the
// provider's token lifetime (Turnstile and reCAPTCHA: 2 to 5 minutes) for
// CAPTCHA tokens.
type Once interface {
	Use(ctx context.Context, key string) (first bool, err error)
}

var (
	// ErrRequired means no solution or response token was given.
	ErrRequired = errors.New("challenge required")
	// ErrFailed means the solution or token was refused: wrong, expired, for
	// another sale or shopper, forged, or already used. The wrapping error
	// adds the reason.
	ErrFailed = errors.New("challenge failed")
	// ErrUnavailable means the check could not be made: the Once store or
	// the CAPTCHA provider could not be reached, or the provider refused our
	// own configuration. The caller answers 503.
	ErrUnavailable = errors.New("challenge check unavailable")
)

// failed returns ErrFailed wrapped with a fixed reason.
func failed(reason string) error {
	return &reasonError{err: ErrFailed, reason: reason}
}

// reasonError is a sentinel with a fixed reason; it costs one allocation,
// which matters on the reject path of a flood.
type reasonError struct {
	err    error
	reason string
}

func (e *reasonError) Error() string { return e.err.Error() + ": " + e.reason }
func (e *reasonError) Unwrap() error { return e.err }

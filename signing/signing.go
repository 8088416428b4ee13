// Package signing verifies requests signed by the shop's own mobile app. Each
// request carries an X-Signature header: an HMAC-SHA256 over the method, the
// path, a hash of the body, a timestamp and a nonce, made with a per-app
// secret named by a key id. A request is refused when the signature does not
// match, when its timestamp is more than 30 seconds from the server's clock,
// or when its nonce was seen before.
//
// # Wire format
//
// The header:
//
//	X-Signature: keyId=<id>,ts=<unix seconds>,nonce=<nonce>,sig=<hex>
//
// Parameters are separated by commas; a comma may be followed by spaces
// (U+0020 only), and there is no other whitespace: none before a comma,
// around "=", at the start or at the end. Each of the four parameters appears
// exactly once, in any order. Parameter names are case-sensitive, and an
// unknown parameter is an error. The whole header value is at most 512 bytes.
//
//   - keyId: 1 to 64 characters of [A-Za-z0-9_-], the id of the app's secret.
//   - ts: the signing time in decimal unix seconds: 1 to 12 digits, no sign,
//     and no leading zero (the one exception being "0" itself), so that the
//     text and the number correspond one to one.
//   - nonce: 16 to 64 characters of [A-Za-z0-9_-], new for every request;
//     22 base64url characters made from 16 random bytes are a good choice
//     (see NewNonce).
//   - sig: 64 hex digits, lower or upper case: the HMAC-SHA256 below.
//
// The signed string (the canonical request) is these seven lines joined by
// "\n" (a single LF byte), with no trailing newline:
//
//	flashgate-v1
//	<METHOD, upper case>
//	<path and raw query exactly as sent, e.g. /api/v1/sales/demo/tokens or /a?b=1>
//	<lowercase hex SHA-256 of the body bytes; of the empty string for no body>
//	<ts>
//	<nonce>
//	<keyId>
//
// The path line is the request target exactly as it goes on the wire,
// percent-encoding untouched, with "?" and the raw query when there is one.
// The ts, nonce and keyId lines are exactly the text of the header's
// parameters. The SHA-256 of an empty body is
// e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.
//
//	sig = hex(HMAC-SHA256(secret, canonical))
//
// The secret is the bytes of the string in the key file, as written: a secret
// made with `openssl rand -hex 32` is 64 ASCII characters used as they are,
// not hex-decoded to 32 bytes.
//
// # Rules for the app
//
// The server accepts ts when |ts - server time| <= 30 s. Keep an offset to the
// server's clock from GET /api/v1/time and sign with the corrected time; a
// request refused as stale (the error message carries the server time)
// should resync and sign again. A nonce is single-use per keyId: every
// request, including a retry of one that failed (a 503 too), needs a new nonce
// and a new signature.
//
// # Test vector
//
// With the secret "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
// (the 64 characters, as above) and key id "app-ios-1", a POST of the body
// {"sale":"demo"} (15 bytes, no trailing newline) to
// /api/v1/sales/demo/tokens?qty=2 at ts 1767225600 with the nonce
// "mZ3xq9L0bR2sT4uV6wY8zA" has the body hash
//
//	99c18e0fc35e350928ebe19a9954111b4b10c5d1aa3e002c6a26b61ccc7d8856
//
// the canonical request
//
//	flashgate-v1
//	POST
//	/api/v1/sales/demo/tokens?qty=2
//	99c18e0fc35e350928ebe19a9954111b4b10c5d1aa3e002c6a26b61ccc7d8856
//	1767225600
//	mZ3xq9L0bR2sT4uV6wY8zA
//	app-ios-1
//
// and the header
//
//	X-Signature: keyId=app-ios-1,ts=1767225600,nonce=mZ3xq9L0bR2sT4uV6wY8zA,sig=7ae4b4017dc6d9c83e8d296fd515fa01769f3a440ed01e81b32f87310e083997
//
// # Nonces across processes
//
// Verifier.Verify uses a nonce through Once under the key
// "sig.<keyId>.<nonce>": the prefix keeps signature nonces apart from other
// single-use values in the same store, and the key id keeps apps apart. The
// key is also a valid NATS KV key as it is (both parts are non-empty
// [A-Za-z0-9_-]), should a store not hash it.
//
// A nonce needs remembering for 2×Window only. A signed request with
// timestamp ts is accepted only while the server's clock is within
// [ts-Window, ts+Window], and ts cannot be changed without breaking the
// signature; the nonce's first use falls inside that interval, so an entry
// kept 2×Window from its first use outlives every chance of a replay. The
// production store (the FLASHGATE_ONCE bucket) keeps entries for longer than
// that, which also covers differences between the servers' clocks. Whoever
// raises Window must keep the store's TTL above 2×Window plus that margin.
//
// # For the server
//
// Pass Verify the request's method, r.RequestURI (the target as received;
// r.URL.RequestURI() may re-encode the path), the whole body (read with a
// size limit first) and the header value; refuse a request carrying more than
// one X-Signature header, since Header.Get sees only the first. Only requests
// with a valid signature reach Once, so forged requests cannot fill the nonce
// store. ErrUnavailable means the store failed and calls for a 503. Keys are
// read from a key file (see ParseKeys), which should be mode 0600.
package signing

import (
	"context"
	"errors"
	"time"
)

const (
	// Header is the name of the request header that carries the signature.
	Header = "X-Signature"
	// DefaultWindow is how far a request's timestamp may be from the server's
	// clock, either way, when Verifier.Window is zero.
	DefaultWindow = 30 * time.Second
	// MaxHeaderLen is the longest header value ParseHeader accepts, in bytes.
	MaxHeaderLen = 512
)

// Once remembers single-use values across processes. Use records key and
// reports whether this was its first use; in production it is a NATS KV
// bucket with a TTL (a create that fails because the key exists means "not
// first"), in tests an in-memory fake. See the package doc for how long keys
// must be kept.
type Once interface {
	Use(ctx context.Context, key string) (first bool, err error)
}

// The reasons Verify refuses a request. Errors returned by this package match
// one of them with errors.Is; some wrap it with details.
var (
	// ErrMissing means the request has no X-Signature header.
	ErrMissing = errors.New("signature required")
	// ErrMalformed means the header does not follow the wire format; the
	// wrapping error says what is wrong.
	ErrMalformed = errors.New("signature header malformed")
	// ErrUnknownKey means the header names a key id the server does not have.
	ErrUnknownKey = errors.New("signature key unknown")
	// ErrBadSignature means the signature does not match the request.
	ErrBadSignature = errors.New("signature does not match")
	// ErrStale means the timestamp is outside the window; the wrapping error
	// carries the server time so the app can resync.
	ErrStale = errors.New("signature timestamp outside the window")
	// ErrReplayed means the nonce was already used with this key id.
	ErrReplayed = errors.New("signature nonce already used")
	// ErrUnavailable means Once failed, so the nonce could not be checked; the
	// caller answers 503. The wrapping error also wraps Once's error.
	ErrUnavailable = errors.New("nonce store unavailable")
)

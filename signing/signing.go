// Package signing verifies requests signed by the shop's own mobile app. Each
// request carries an X-Signature header: an HMAC-SHA256 over the method, the
// path, a hash of the body, a timestamp, a nonce and a hash of the headers
// that carry the shopper's session, purchase token and challenge solution,
// made with a per-app secret named by a key id. A request is refused when the
// signature does not match, when its timestamp is more than 30 seconds from
// the server's clock, or when its nonce was seen before.
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
// The signed string (the canonical request) is these eight lines joined by
// "\n" (a single LF byte), with no trailing newline:
//
//	flashgate-v1
//	<METHOD, upper case>
//	<path and raw query exactly as sent, e.g. /api/v1/sales/demo/tokens or /a?b=1>
//	<lowercase hex SHA-256 of the body bytes; of the empty string for no body>
//	<ts>
//	<nonce>
//	<keyId>
//	<lowercase hex SHA-256 of the bound-headers string, below>
//
// The path line is the request target exactly as it goes on the wire,
// percent-encoding untouched, with "?" and the raw query when there is one.
// The ts, nonce and keyId lines are exactly the text of the header's
// parameters. The SHA-256 of an empty body is
// e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.
//
// The bound-headers string is these three lines joined by "\n", with no
// trailing newline; the names are in lower case as shown, with no space
// after the colon:
//
//	authorization:<value of the Authorization header>
//	x-purchase-token:<value of the X-Purchase-Token header>
//	x-challenge-solution:<value of the X-Challenge-Solution header>
//
// Each value is the header's value exactly as sent: for Authorization the
// whole value, "Bearer " and the session. A header the request does not
// carry has the empty value, so the string always has all three lines, and a
// header sent empty counts as one not sent. Spaces and tabs before or after a
// header value are not part of it (HTTP/1.1 drops them, HTTP/2 forbids them):
// send values without them. A header value cannot contain CR or LF. A
// request carries each of these headers at most once; the server refuses one
// that carries any of them twice. With none of the three, the string is
// "authorization:\nx-purchase-token:\nx-challenge-solution:" and its SHA-256 is
// c73d5665daf7759256cd849f7336e794a9ba644d53aebb830bb5890dbe6b8f1b.
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
// Sign a request once its session, purchase token and challenge solution are
// known, with the values it is sent with: the signature binds them, so a
// signed request sent with another session, another purchase token or
// another solution is refused as not matching (401 signature_invalid). A
// request captured on one device thus cannot be spent with another session,
// and a signature made for one purchase token does not buy with another.
//
// # Test vectors
//
// With the secret "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
// (the 64 characters, as above) and key id "app-ios-1", a POST of the body
// {"sale":"demo"} (15 bytes, no trailing newline) to
// /api/v1/sales/demo/tokens?qty=2 at ts 1767225600 with the nonce
// "mZ3xq9L0bR2sT4uV6wY8zA", and none of the bound headers, has the body hash
//
//	99c18e0fc35e350928ebe19a9954111b4b10c5d1aa3e002c6a26b61ccc7d8856
//
// the hash of the bound-headers string with three empty values (above)
//
//	c73d5665daf7759256cd849f7336e794a9ba644d53aebb830bb5890dbe6b8f1b
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
//	c73d5665daf7759256cd849f7336e794a9ba644d53aebb830bb5890dbe6b8f1b
//
// and the header
//
//	X-Signature: keyId=app-ios-1,ts=1767225600,nonce=mZ3xq9L0bR2sT4uV6wY8zA,sig=cbff3d4fd9cf1ec611e3b86bca3ae9975087b5300f7295807ad9549cdeadfcd0
//
// A purchase: the same secret and key id, a POST without a body to
// /api/v1/sales/demo/purchases at ts 1767225600 with the nonce
// "nQ4yr0M1cS3tU5vW7xZ9aB", sent with the headers
//
//	Authorization: Bearer session-alice
//	X-Purchase-Token: token-demo-1
//
// and no X-Challenge-Solution, has the bound-headers string
//
//	authorization:Bearer session-alice
//	x-purchase-token:token-demo-1
//	x-challenge-solution:
//
// (the last line ends at the colon, no newline after it), its hash
//
//	2f69f37fe19de7c00acdfab5a867c1ff93e87f27103c24635e85a41ee5796b5b
//
// the canonical request
//
//	flashgate-v1
//	POST
//	/api/v1/sales/demo/purchases
//	e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
//	1767225600
//	nQ4yr0M1cS3tU5vW7xZ9aB
//	app-ios-1
//	2f69f37fe19de7c00acdfab5a867c1ff93e87f27103c24635e85a41ee5796b5b
//
// and the header
//
//	X-Signature: keyId=app-ios-1,ts=1767225600,nonce=nQ4yr0M1cS3tU5vW7xZ9aB,sig=fccbb014658e59a81fa31d015582b0ab97d035b80d4bf5807bb8be74cceacd35
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
// size limit first), BoundOf(r.Header) and the header value. Refuse a
// request carrying more than one X-Signature, Authorization, X-Purchase-Token
// or X-Challenge-Solution header, since Header.Get sees only the first, and
// take the session, purchase token and solution from the same first values
// that were bound. Only requests
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

package signing

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Limits of the header's parameters; see the package doc.
const (
	maxKeyIDLen = 64
	minNonceLen = 16
	maxNonceLen = 64
	maxTSDigits = 12
	sigHexLen   = 2 * sha256.Size
)

// version is the first line of every canonical request.
const version = "flashgate-v1"

// Params is a parsed X-Signature header.
type Params struct {
	KeyID     string
	Timestamp int64 // unix seconds
	Nonce     string
	Sig       [32]byte // HMAC-SHA256 of the canonical request
}

// ParseHeader parses an X-Signature header value strictly by the wire format
// in the package doc. Every error wraps ErrMalformed and says what is wrong.
func ParseHeader(s string) (Params, error) {
	if len(s) > MaxHeaderLen {
		return Params{}, malformed("header has %d bytes, more than %d", len(s), MaxHeaderLen)
	}
	if s == "" {
		return Params{}, malformed("empty")
	}
	const (
		hasKeyID = 1 << iota
		hasTS
		hasNonce
		hasSig
	)
	var (
		p    Params
		seen int
	)
	for first := true; ; first = false {
		part, rest, more := strings.Cut(s, ",")
		if !first {
			part = strings.TrimLeft(part, " ")
		}
		if part == "" {
			return Params{}, malformed("empty parameter")
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return Params{}, malformed("parameter %s has no '='", quoteShort(name))
		}
		var bit int
		switch name {
		case "keyId":
			bit = hasKeyID
		case "ts":
			bit = hasTS
		case "nonce":
			bit = hasNonce
		case "sig":
			bit = hasSig
		default:
			return Params{}, malformed("unknown parameter %s", quoteShort(name))
		}
		if seen&bit != 0 {
			return Params{}, malformed("duplicate %s", name)
		}
		seen |= bit
		var err error
		switch bit {
		case hasKeyID:
			p.KeyID, err = val, checkToken("keyId", val, 1, maxKeyIDLen)
		case hasTS:
			p.Timestamp, err = parseTS(val)
		case hasNonce:
			p.Nonce, err = val, checkToken("nonce", val, minNonceLen, maxNonceLen)
		case hasSig:
			err = parseSig(&p.Sig, val)
		}
		if err != nil {
			return Params{}, err
		}
		if !more {
			break
		}
		s = rest
	}
	for _, m := range []struct {
		bit  int
		name string
	}{{hasKeyID, "keyId"}, {hasTS, "ts"}, {hasNonce, "nonce"}, {hasSig, "sig"}} {
		if seen&m.bit == 0 {
			return Params{}, malformed("missing %s", m.name)
		}
	}
	return p, nil
}

// malformed returns an error wrapping ErrMalformed.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// quoteShort quotes s for an error message, cut to 32 bytes: it comes from
// the request.
func quoteShort(s string) string {
	if len(s) > 32 {
		return strconv.Quote(s[:32]) + "..."
	}
	return strconv.Quote(s)
}

// checkToken reports whether v is minLen..maxLen characters of [A-Za-z0-9_-].
func checkToken(name, v string, minLen, maxLen int) error {
	if len(v) < minLen || len(v) > maxLen {
		return malformed("%s has %d characters, want %d to %d", name, len(v), minLen, maxLen)
	}
	if !isToken(v) {
		return malformed("%s: only A-Z a-z 0-9 _ - allowed", name)
	}
	return nil
}

// isToken reports whether every byte of v is in [A-Za-z0-9_-].
func isToken(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// parseTS parses 1 to 12 decimal digits without sign or leading zero.
func parseTS(v string) (int64, error) {
	if v == "" || len(v) > maxTSDigits {
		return 0, malformed("ts has %d characters, want 1 to %d digits", len(v), maxTSDigits)
	}
	if len(v) > 1 && v[0] == '0' {
		return 0, malformed("ts has a leading zero")
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, malformed("ts: only digits allowed")
		}
		n = n*10 + int64(c-'0')
	}
	return n, nil
}

// parseSig decodes 64 hex digits of either case into sig.
func parseSig(sig *[32]byte, v string) error {
	if len(v) != sigHexLen {
		return malformed("sig has %d characters, want %d hex digits", len(v), sigHexLen)
	}
	for i := range sig {
		hi, ok1 := unhex(v[2*i])
		lo, ok2 := unhex(v[2*i+1])
		if !ok1 || !ok2 {
			return malformed("sig: only hex digits allowed")
		}
		sig[i] = hi<<4 | lo
	}
	return nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// String returns p in the canonical header form: keyId, ts, nonce and sig in
// that order, no spaces, sig in lower case. It does not check p.
func (p Params) String() string {
	b := make([]byte, 0, len("keyId=,ts=,nonce=,sig=")+len(p.KeyID)+20+len(p.Nonce)+sigHexLen)
	b = append(b, "keyId="...)
	b = append(b, p.KeyID...)
	b = append(b, ",ts="...)
	b = strconv.AppendInt(b, p.Timestamp, 10)
	b = append(b, ",nonce="...)
	b = append(b, p.Nonce...)
	b = append(b, ",sig="...)
	b = hex.AppendEncode(b, p.Sig[:])
	return string(b)
}

// Canonical returns the canonical request, the string a signature is the
// HMAC of (see the package doc). It upper-cases method and takes the other
// parts as they are; bound is the hash of the bound headers (Bound).
func Canonical(method, pathQuery string, bodySHA256, bound [32]byte, ts int64, nonce, keyID string) []byte {
	n := len(version) + len(method) + len(pathQuery) + 4*sha256.Size + 20 + len(nonce) + len(keyID) + 7
	return appendCanonical(make([]byte, 0, n), method, pathQuery, bodySHA256, bound, ts, nonce, keyID)
}

func appendCanonical(b []byte, method, pathQuery string, bodySHA256, bound [32]byte, ts int64, nonce, keyID string) []byte {
	b = append(b, version...)
	b = append(b, '\n')
	b = append(b, strings.ToUpper(method)...)
	b = append(b, '\n')
	b = append(b, pathQuery...)
	b = append(b, '\n')
	b = hex.AppendEncode(b, bodySHA256[:])
	b = append(b, '\n')
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, '\n')
	b = append(b, nonce...)
	b = append(b, '\n')
	b = append(b, keyID...)
	b = append(b, '\n')
	b = hex.AppendEncode(b, bound[:])
	return b
}

// mac returns the HMAC-SHA256 under secret of the canonical request.
func mac(secret []byte, method, pathQuery string, bodySHA256, bound [32]byte, ts int64, nonce, keyID string) [32]byte {
	h := hmac.New(sha256.New, secret)
	h.Write(Canonical(method, pathQuery, bodySHA256, bound, ts, nonce, keyID))
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// Names of the bound headers, in the order and spelling of the bound-headers
// string; see the package doc.
const (
	boundAuthorization     = "authorization:"
	boundPurchaseToken     = "x-purchase-token:"
	boundChallengeSolution = "x-challenge-solution:"
)

// Bound returns the SHA-256 of the bound-headers string (see the package
// doc) of a request whose Authorization, X-Purchase-Token and
// X-Challenge-Solution headers have these values, "" for a header that is
// absent. The values are taken exactly as they are.
func Bound(authorization, purchaseToken, challengeSolution string) [32]byte {
	var buf [512]byte
	b := append(buf[:0], boundAuthorization...)
	b = append(b, authorization...)
	b = append(b, '\n')
	b = append(b, boundPurchaseToken...)
	b = append(b, purchaseToken...)
	b = append(b, '\n')
	b = append(b, boundChallengeSolution...)
	b = append(b, challengeSolution...)
	return sha256.Sum256(b)
}

// BoundOf returns Bound of the first value of each bound header in h. It
// does not look for further values: a server refuses a request that carries
// more than one (see the package doc).
func BoundOf(h http.Header) [32]byte {
	return Bound(h.Get("Authorization"), h.Get("X-Purchase-Token"), h.Get("X-Challenge-Solution"))
}

// Sign returns the X-Signature header value for a request signed with the
// secret of keyID at time ts (to the second) with nonce. bound is the hash
// of the request's bound headers: Bound of the values the request is sent
// with. It does not check keyID or nonce; Verify refuses a header with
// invalid ones as malformed. Use a new nonce (NewNonce) for every request.
func Sign(keyID string, secret []byte, method, pathQuery string, body []byte, bound [32]byte, ts time.Time, nonce string) string {
	p := Params{KeyID: keyID, Timestamp: ts.Unix(), Nonce: nonce}
	p.Sig = mac(secret, method, pathQuery, sha256.Sum256(body), bound, p.Timestamp, nonce, keyID)
	return p.String()
}

// NewNonce returns a random nonce: 16 bytes from crypto/rand as 22
// characters of unpadded base64url.
func NewNonce() string {
	var b [16]byte
	rand.Read(b[:]) // never fails; see crypto/rand.Read
	return base64.RawURLEncoding.EncodeToString(b[:])
}

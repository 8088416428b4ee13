package tokens

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"strings"
	"sync"
)

// The compact HS256 JWS that flashgate writes (purchase tokens here,
// sessions in identity) all have the header {"alg":"HS256","kid":kid,
// "typ":"JWT"}, which is what jwt.Token.SignedString gives for them. Every
// shopper request verifies one and every token answer signs one, so this
// file does both without the general parser: the header segment is compared
// with the one each key's tokens carry, and the HMAC state keyed with the
// key is kept and reset instead of being built per token (hmac.New hashes
// the key pads and allocates twice).
//
// The fast path only ever says yes: a token it does not take (another
// header, a bad signature, anything odd) goes to golang-jwt, which decides
// and gives the reason. Its tests check it against the library.

var b64 = base64.RawURLEncoding

// macKey is one key of a KeySet, ready to sign and verify.
type macKey struct {
	header string // base64url of the header this key's tokens carry
	pool   sync.Pool
}

// macState is a keyed HMAC-SHA256 with scratch room, reused through the
// key's pool.
type macState struct {
	mac hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

// newMacKey panics on a kid the key set would refuse: the header is
// written with the kid as it is, so one that needs escaping could make the
// fast path take a header golang-jwt reads another way.
func newMacKey(kid string, key []byte) *macKey {
	if err := checkKid(kid); err != nil {
		panic("tokens: " + err.Error())
	}
	m := &macKey{header: b64.EncodeToString([]byte(`{"alg":"HS256","kid":"` + kid + `","typ":"JWT"}`))}
	m.pool.New = func() any { return &macState{mac: hmac.New(sha256.New, key)} }
	return m
}

// put gives st back to the pool without the token it held (a session or a
// purchase token is a bearer credential: it does not linger in memory), nor
// an outsized buffer.
func (m *macKey) put(st *macState) {
	clear(st.buf)
	if cap(st.buf) > 4<<10 {
		st.buf = nil
	}
	m.pool.Put(st)
}

// sum returns the key's HMAC of b, in st.sum.
func (m *macKey) sum(st *macState, b []byte) []byte {
	st.mac.Reset()
	st.mac.Write(b)
	return st.mac.Sum(st.sum[:0])
}

// sign returns the compact JWS of payload: header.payload.signature.
func (m *macKey) sign(payload []byte) string {
	st := m.pool.Get().(*macState)
	defer m.put(st)
	n := len(m.header) + 1 + b64.EncodedLen(len(payload))
	buf := append(st.buf[:0], m.header...)
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, payload)
	sig := m.sum(st, buf[:n])
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, sig)
	st.buf = buf
	return string(buf)
}

// SignHS256 returns payload as a compact JWS signed with the active key,
// under the header {"alg":"HS256","kid":<active kid>,"typ":"JWT"}: the same
// bytes jwt.Token.SignedString gives for that header and payload. The same
// payload and active key always give the same token.
func (k *KeySet) SignHS256(payload []byte) string {
	snap := k.snap.Load()
	return snap.macs[snap.active].sign(payload)
}

// VerifyHS256 is the fast path for tokens this KeySet signed with
// SignHS256 (or with golang-jwt under the same header). It appends the
// decoded payload to dst and returns it, with ok=true, only if token is
// three segments, its header is exactly the one a key of the set gives, and
// its signature is that key's HMAC of the first two segments. ok=false says
// nothing about the token: verify it with golang-jwt for the verdict and its
// reason. The claims are not looked at: the caller decodes and checks them.
func (k *KeySet) VerifyHS256(token string, dst []byte) (payload []byte, ok bool) {
	h, rest, ok1 := strings.Cut(token, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.IndexByte(s, '.') >= 0 {
		return dst, false
	}
	m := k.snap.Load().byHeader[h]
	if m == nil {
		return dst, false
	}
	if b64.DecodedLen(len(s)) != sha256.Size {
		return dst, false
	}
	st := m.pool.Get().(*macState)
	defer m.put(st)
	st.buf = append(st.buf[:0], token...)
	signed, payloadSeg := st.buf[:len(h)+1+len(p)], st.buf[len(h)+1:len(h)+1+len(p)]
	var sig [sha256.Size]byte
	if n, err := b64.Decode(sig[:], st.buf[len(signed)+1:]); err != nil || n != sha256.Size {
		return dst, false
	}
	if !hmac.Equal(m.sum(st, signed), sig[:]) {
		return dst, false
	}
	out, err := b64.AppendDecode(dst, payloadSeg)
	if err != nil {
		return dst, false
	}
	return out, true
}

// Claim is one member of a flat claim set for ScanClaims: a string (Str) or
// an integer (Int) under Key.
type Claim struct {
	Key string
	Str *string
	Int *int64
}

// ScanClaims reads payload when it is exactly the flat JSON object that
// encoding/json writes for claims: every member of claims, in that order,
// nothing else, no white space; strings of printable ASCII without escapes,
// integers of at most 18 digits without sign. It sets what json.Unmarshal
// would set for such a payload. ok=false for any other form, which may still
// be good JSON: decode it with json.Unmarshal then. A claim set is decoded
// on every shopper request, and json.Unmarshal's reflection costs more than
// the HMAC.
func ScanClaims(payload []byte, claims []Claim) (ok bool) {
	b := payload
	for i, c := range claims {
		sep := byte(',')
		if i == 0 {
			sep = '{'
		}
		if len(b) < len(c.Key)+4 || b[0] != sep || b[1] != '"' || string(b[2:2+len(c.Key)]) != c.Key || b[2+len(c.Key)] != '"' || b[3+len(c.Key)] != ':' {
			return false
		}
		b = b[4+len(c.Key):]
		var n int
		switch {
		case c.Str != nil:
			n = scanString(b)
			if n < 0 {
				return false
			}
			*c.Str = string(b[1 : n-1])
		case c.Int != nil:
			var v int64
			n, v = scanInt(b)
			if n < 0 {
				return false
			}
			*c.Int = v
		default:
			return false
		}
		b = b[n:]
	}
	return len(claims) > 0 && len(b) == 1 && b[0] == '}'
}

// scanString returns the length of the quoted string b starts with, quotes
// included, or -1 unless it is printable ASCII without escapes.
func scanString(b []byte) int {
	if len(b) == 0 || b[0] != '"' {
		return -1
	}
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1
		case c < 0x20 || c > 0x7e || c == '\\':
			return -1
		}
	}
	return -1
}

// scanInt returns the length and value of the unsigned integer b starts
// with, or -1: a lone 0 or up to 18 digits without a leading 0. (What
// follows must be , or }: ScanClaims checks.)
func scanInt(b []byte) (int, int64) {
	var v int64
	n := 0
	for n < len(b) && n < 19 && '0' <= b[n] && b[n] <= '9' {
		v = v*10 + int64(b[n]-'0')
		n++
	}
	if n == 0 || n > 18 || (n > 1 && b[0] == '0') {
		return -1, 0
	}
	return n, v
}

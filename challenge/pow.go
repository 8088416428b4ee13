package challenge

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math/bits"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Proof-of-work limits and defaults.
//
// DefaultDifficulty is 19 leading zero bits: 2^19 = 524,288 SHA-256 hashes
// expected per puzzle (the number of tries is geometric: the median is 0.69
// of that, and one puzzle in twenty takes three times as long). The shop
// page's worker (web/assets/static/pow-worker.js) did about 580,000 hashes a
// second in headless Chromium on this project's 2-core test machine, so the
// expected cost in a browser is about 0.9 s. Go is much faster: Solve does
// about 10 million hashes per second on one core of the same machine (a
// virtual AMD EPYC with SHA extensions; figures in bench_test.go), so
// difficulty 19 costs a Go script about 50 ms of one core, and a million
// identities about 14 core-hours, not a million seconds. A GPU does better
// still. The puzzle prices a flood of identities; it does not prevent one,
// and the rate limits and per-shopper quotas stay the real limit. Each
// further bit doubles everyone's cost, browsers' included.
const (
	DefaultDifficulty = 19
	MinDifficulty     = 1
	MaxDifficulty     = 32
	DefaultTTL        = 2 * time.Minute
)

// Puzzle kind and algorithm names, as served.
const (
	kindPoW   = "pow"
	algSHA256 = "sha256"
)

const (
	// minKeyLen is the shortest HMAC key NewPoW accepts.
	minKeyLen = 32
	// maxSolutionLen is the longest solution Verify decodes. The longest
	// puzzle (64-byte sale, 128-byte shopper) gives 359-byte solutions.
	maxSolutionLen = 512
	// maxCounterLen is the most decimal digits of a counter.
	maxCounterLen = 20
	// maxSaleLen and maxShopperLen are flashgate's own limits on ids.
	maxSaleLen    = 64
	maxShopperLen = 128

	// payloadVersion is the first byte of every payload.
	payloadVersion = 1
	// payloadFixedLen is the payload without sale and shopper: version,
	// difficulty, expiry (Unix milliseconds, big-endian), id, and the two
	// length bytes.
	payloadFixedLen = 1 + 1 + 8 + idLen + 1 + 1
	idLen           = 16
	// macContext starts every MAC input, so the key signs nothing else.
	macContext = "flashgate challenge pow v1\x00"
)

var (
	// b64 encodes both halves of a challenge. Strict refuses non-zero
	// trailing bits, so one payload has one encoding.
	b64 = base64.RawURLEncoding.Strict()
	// macB64Len is the length of an encoded MAC.
	macB64Len = b64.EncodedLen(sha256.Size)

	errTooLong       = failed("solution too long")
	errMalformed     = failed("malformed solution")
	errBadCounter    = failed("malformed counter")
	errBadSignature  = failed("bad signature")
	errBadPayload    = failed("malformed puzzle")
	errExpired       = failed("puzzle expired")
	errOtherSale     = failed("puzzle for another sale")
	errOtherShopper  = failed("puzzle for another shopper")
	errNotEnoughWork = failed("insufficient work")
	errPoWUsed       = failed("already used")
)

// PoWConfig configures NewPoW.
type PoWConfig struct {
	// Key is the HMAC-SHA256 key that signs puzzles, at least 32 bytes.
	// Every process that issues or verifies puzzles of one deployment
	// shares it.
	Key []byte
	// VerifyKeys are older keys whose puzzles still verify (after a key
	// rotation); new puzzles are signed with Key only.
	VerifyKeys [][]byte
	// TTL is how long a puzzle may be solved and used; 0 means DefaultTTL.
	TTL time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Once makes each puzzle single-use. Required.
	Once Once
}

// PoW issues and verifies proof-of-work puzzles. It is safe for concurrent
// use.
type PoW struct {
	key  []byte
	old  [][]byte // verify only
	ttl  time.Duration
	now  func() time.Time
	once Once
	macs sync.Pool // of keyed HMAC hash.Hash, Reset after use
}

// NewPoW returns a PoW for c. It fails if the key is shorter than 32 bytes,
// the TTL is negative, or Once is nil.
func NewPoW(c PoWConfig) (*PoW, error) {
	if len(c.Key) < minKeyLen {
		return nil, fmt.Errorf("new pow: key of %d bytes, want at least %d", len(c.Key), minKeyLen)
	}
	if c.Once == nil {
		return nil, errors.New("new pow: no Once store")
	}
	if c.TTL < 0 {
		return nil, fmt.Errorf("new pow: negative TTL %v", c.TTL)
	}
	p := &PoW{key: append([]byte(nil), c.Key...), ttl: c.TTL, now: c.Now, once: c.Once}
	for _, k := range c.VerifyKeys {
		if len(k) < minKeyLen {
			return nil, fmt.Errorf("new pow: verify key of %d bytes, want at least %d", len(k), minKeyLen)
		}
		p.old = append(p.old, append([]byte(nil), k...))
	}
	if p.ttl == 0 {
		p.ttl = DefaultTTL
	}
	if p.now == nil {
		p.now = time.Now
	}
	return p, nil
}

// Puzzle is what POST /api/v1/sales/{sale}/challenge returns, served as is.
type Puzzle struct {
	// Kind is "pow".
	Kind string `json:"kind"`
	// Challenge is opaque to the client: base64url(payload) "."
	// base64url(HMAC-SHA256). The payload binds sale, shopper, difficulty,
	// expiry and a 128-bit random id. It never contains ':'.
	Challenge string `json:"challenge"`
	// Difficulty is the number of leading zero bits required.
	Difficulty int `json:"difficulty"`
	// Algorithm is "sha256": find a decimal counter n (no sign, 1 to 20
	// digits) so that SHA-256(Challenge + ":" + n) starts with Difficulty
	// zero bits. The solution is Challenge + ":" + n.
	Algorithm string `json:"algorithm"`
	// ExpiresAt is when the puzzle stops being accepted, in whole
	// milliseconds.
	ExpiresAt time.Time `json:"expiresAt"`
}

// Issue returns a new puzzle for shopper in sale. A difficulty of 0 means
// DefaultDifficulty; otherwise it must be within MinDifficulty..MaxDifficulty.
// sale must be 1 to 64 bytes and shopper 1 to 128, flashgate's own limits.
func (p *PoW) Issue(sale, shopper string, difficulty int) (Puzzle, error) {
	var id [idLen]byte
	rand.Read(id[:]) // never fails; see crypto/rand.Read
	return p.issue(sale, shopper, difficulty, id)
}

// issue is Issue with the puzzle id given, for deterministic tests.
func (p *PoW) issue(sale, shopper string, difficulty int, id [idLen]byte) (Puzzle, error) {
	if difficulty == 0 {
		difficulty = DefaultDifficulty
	}
	switch {
	case difficulty < MinDifficulty || difficulty > MaxDifficulty:
		return Puzzle{}, fmt.Errorf("issue puzzle: difficulty %d not in %d..%d", difficulty, MinDifficulty, MaxDifficulty)
	case sale == "" || len(sale) > maxSaleLen:
		return Puzzle{}, fmt.Errorf("issue puzzle: sale id of %d bytes, want 1 to %d", len(sale), maxSaleLen)
	case shopper == "" || len(shopper) > maxShopperLen:
		return Puzzle{}, fmt.Errorf("issue puzzle: shopper id of %d bytes, want 1 to %d", len(shopper), maxShopperLen)
	}
	exp := p.now().Add(p.ttl).UnixMilli()

	payload := make([]byte, 0, payloadFixedLen+len(sale)+len(shopper))
	payload = append(payload, payloadVersion, byte(difficulty))
	payload = binary.BigEndian.AppendUint64(payload, uint64(exp))
	payload = append(payload, id[:]...)
	payload = append(payload, byte(len(sale)))
	payload = append(payload, sale...)
	payload = append(payload, byte(len(shopper)))
	payload = append(payload, shopper...)

	c := make([]byte, 0, b64.EncodedLen(len(payload))+1+macB64Len)
	c = b64.AppendEncode(c, payload)
	mac := p.mac(c)
	c = append(c, '.')
	c = b64.AppendEncode(c, mac[:])
	return Puzzle{
		Kind:       kindPoW,
		Challenge:  string(c),
		Difficulty: difficulty,
		Algorithm:  algSHA256,
		ExpiresAt:  time.UnixMilli(exp).UTC(),
	}, nil
}

// mac returns the HMAC of an encoded payload.
func (p *PoW) mac(encPayload []byte) [sha256.Size]byte {
	h, _ := p.macs.Get().(hash.Hash)
	if h == nil {
		h = hmac.New(sha256.New, p.key)
	}
	h.Write([]byte(macContext))
	h.Write(encPayload)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	h.Reset()
	p.macs.Put(h)
	return sum
}

// puzzle is a decoded, authenticated payload.
type puzzle struct {
	difficulty int
	expires    int64 // Unix milliseconds
	id         [idLen]byte
	sale       string
	shopper    string
}

// parsePayload decodes b, which the MAC has already authenticated.
func parsePayload(b []byte) (puzzle, bool) {
	var z puzzle
	if len(b) < payloadFixedLen || b[0] != payloadVersion {
		return z, false
	}
	z.difficulty = int(b[1])
	z.expires = int64(binary.BigEndian.Uint64(b[2:10]))
	copy(z.id[:], b[10:10+idLen])
	rest := b[10+idLen:]
	n := int(rest[0])
	if len(rest) < 1+n+1 {
		return z, false
	}
	z.sale, rest = string(rest[1:1+n]), rest[1+n:]
	n = int(rest[0])
	if len(rest) != 1+n {
		return z, false
	}
	z.shopper = string(rest[1:])
	if z.difficulty < MinDifficulty || z.difficulty > MaxDifficulty {
		return z, false
	}
	return z, true
}

// Verify checks a solution "<challenge>:<n>" for shopper in sale. The checks
// go cheapest first: length, form, the HMAC (constant-time), expiry, sale,
// shopper, the work; only a solution that passes them all is recorded in the
// Once store (key "pow." + hex of the puzzle id), so garbage cannot fill it.
//
// An empty solution gives ErrRequired; a refused one wraps ErrFailed with the
// reason; a Once store that cannot be asked gives an error wrapping
// ErrUnavailable and the store's error.
func (p *PoW) Verify(ctx context.Context, sale, shopper, solution string) error {
	if solution == "" {
		return ErrRequired
	}
	if len(solution) > maxSolutionLen {
		return errTooLong
	}
	colon := strings.LastIndexByte(solution, ':')
	if colon < 0 {
		return errMalformed
	}
	if !isCounter(solution[colon+1:]) {
		return errBadCounter
	}
	challenge := solution[:colon]
	dot := strings.IndexByte(challenge, '.')
	if dot < 0 {
		return errMalformed
	}
	encPayload, encMAC := challenge[:dot], challenge[dot+1:]
	if len(encMAC) != macB64Len || len(encPayload) < b64.EncodedLen(payloadFixedLen) {
		return errMalformed
	}

	// Compare encodings: with Strict base64 one MAC has one encoding, and
	// nothing the client sent is decoded before it is authenticated.
	if !p.authentic(encPayload, encMAC) {
		return errBadSignature
	}
	var buf [maxSolutionLen]byte
	raw, err := b64.AppendDecode(buf[:0], []byte(encPayload))
	if err != nil {
		return errBadPayload
	}
	z, ok := parsePayload(raw)
	if !ok {
		return errBadPayload
	}
	switch {
	case p.now().UnixMilli() >= z.expires:
		return errExpired
	case z.sale != sale:
		return errOtherSale
	case z.shopper != shopper:
		return errOtherShopper
	}
	if sum := sha256.Sum256([]byte(solution)); LeadingZeroBits(sum[:]) < z.difficulty {
		return errNotEnoughWork
	}

	first, err := p.once.Use(ctx, "pow."+hex.EncodeToString(z.id[:]))
	if err != nil {
		return fmt.Errorf("%w: record puzzle use: %w", ErrUnavailable, err)
	}
	if !first {
		return errPoWUsed
	}
	return nil
}

// authentic reports whether encMAC is the MAC of encPayload under the key
// or one of the verify keys.
func (p *PoW) authentic(encPayload, encMAC string) bool {
	mac := p.mac([]byte(encPayload))
	var want [64]byte
	if hmac.Equal(b64.AppendEncode(want[:0], mac[:]), []byte(encMAC)) {
		return true
	}
	for _, k := range p.old {
		h := hmac.New(sha256.New, k)
		h.Write([]byte(macContext))
		h.Write([]byte(encPayload))
		if hmac.Equal(b64.AppendEncode(want[:0], h.Sum(nil)), []byte(encMAC)) {
			return true
		}
	}
	return false
}

// Forgetter is a Once store that can also forget a use.
type Forgetter interface {
	Forget(ctx context.Context, key string) error
}

// Release forgets the use of a solution that Verify accepted but whose
// request could not be taken (the server was overloaded before the request
// was stored), so that the client's retry with the same solution passes. It
// does nothing for a solution that is not authentic, or when the Once store
// cannot forget.
func (p *PoW) Release(ctx context.Context, solution string) error {
	f, ok := p.once.(Forgetter)
	colon := strings.LastIndexByte(solution, ':')
	if !ok || colon < 0 || len(solution) > maxSolutionLen {
		return nil
	}
	challenge := solution[:colon]
	dot := strings.IndexByte(challenge, '.')
	if dot < 0 || !p.authentic(challenge[:dot], challenge[dot+1:]) {
		return nil
	}
	var buf [maxSolutionLen]byte
	raw, err := b64.AppendDecode(buf[:0], []byte(challenge[:dot]))
	if err != nil {
		return nil
	}
	z, ok := parsePayload(raw)
	if !ok {
		return nil
	}
	return f.Forget(ctx, "pow."+hex.EncodeToString(z.id[:]))
}

// isCounter reports whether s is 1 to 20 ASCII decimal digits.
func isCounter(s string) bool {
	if s == "" || len(s) > maxCounterLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Solve finds the smallest counter that solves challenge at difficulty and
// returns the full solution "<challenge>:<n>", for the load generator, the
// CLI and tests. It stops with ctx's error when ctx is done. It does not
// check the challenge's signature; Verify does.
//
// Solve hashes the challenge's whole 64-byte blocks once and only the rest
// per try (the SHA-256 midstate), as any serious solver would; a browser
// using crypto.subtle.digest hashes the whole string every time.
func Solve(ctx context.Context, challenge string, difficulty int) (string, error) {
	if difficulty < MinDifficulty || difficulty > MaxDifficulty {
		return "", fmt.Errorf("solve: difficulty %d not in %d..%d", difficulty, MinDifficulty, MaxDifficulty)
	}
	if challenge == "" || len(challenge) > maxSolutionLen || strings.IndexByte(challenge, ':') >= 0 {
		return "", errors.New("solve: not a challenge")
	}
	prefix := challenge + ":"
	full := len(prefix) - len(prefix)%sha256.BlockSize
	h := sha256.New()
	h.Write([]byte(prefix[:full]))
	mid, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return "", fmt.Errorf("solve: %w", err)
	}
	restore := h.(encoding.BinaryUnmarshaler)

	tail := make([]byte, 0, len(prefix)-full+maxCounterLen)
	tail = append(tail, prefix[full:]...)
	var sum [sha256.Size]byte
	for n := uint64(0); ; n++ {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return "", err
			}
		}
		msg := strconv.AppendUint(tail, n, 10)
		if err := restore.UnmarshalBinary(mid); err != nil {
			return "", fmt.Errorf("solve: %w", err)
		}
		h.Write(msg)
		if LeadingZeroBits(h.Sum(sum[:0])) >= difficulty {
			return prefix + strconv.FormatUint(n, 10), nil
		}
	}
}

// LeadingZeroBits returns the number of leading zero bits of b, most
// significant bit of b[0] first; 8*len(b) if b is all zeros.
func LeadingZeroBits(b []byte) int {
	n := 0
	for _, x := range b {
		if x != 0 {
			return n + bits.LeadingZeros8(x)
		}
		n += 8
	}
	return n
}

package signing_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/signing"
)

// The test vectors of the package doc. The hashes and the expected headers
// were computed once with openssl, not with this package:
//
//	printf '%s' "$bound" | openssl dgst -sha256
//	printf '%s' "$canonical" | openssl dgst -sha256 -hmac "$secret"
//
// The first is a token request without any bound header; the requests the
// other tests make are variants of it.
const (
	goldenSecret = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	goldenKeyID  = "app-ios-1"
	goldenMethod = "POST"
	goldenPath   = "/api/v1/sales/demo/tokens?qty=2"
	goldenBody   = `{"sale":"demo"}`
	goldenTS     = 1767225600 // 2026-01-01T00:00:00Z
	goldenNonce  = "mZ3xq9L0bR2sT4uV6wY8zA"

	goldenBodyHash  = "99c18e0fc35e350928ebe19a9954111b4b10c5d1aa3e002c6a26b61ccc7d8856"
	goldenBoundHash = "c73d5665daf7759256cd849f7336e794a9ba644d53aebb830bb5890dbe6b8f1b" // no bound header
	goldenCanonical = "flashgate-v1\nPOST\n/api/v1/sales/demo/tokens?qty=2\n" + goldenBodyHash + "\n1767225600\nmZ3xq9L0bR2sT4uV6wY8zA\napp-ios-1\n" + goldenBoundHash
	goldenSig       = "cbff3d4fd9cf1ec611e3b86bca3ae9975087b5300f7295807ad9549cdeadfcd0"
	goldenHeader    = "keyId=app-ios-1,ts=1767225600,nonce=mZ3xq9L0bR2sT4uV6wY8zA,sig=" + goldenSig
)

// The second vector: a purchase without a body, sent with a session and a
// purchase token.
const (
	purchasePath        = "/api/v1/sales/demo/purchases"
	purchaseAuth        = "Bearer session-alice"
	purchaseToken       = "token-demo-1"
	purchaseNonce       = "nQ4yr0M1cS3tU5vW7xZ9aB"
	emptyBodyHash       = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	purchaseBoundString = "authorization:Bearer session-alice\nx-purchase-token:token-demo-1\nx-challenge-solution:"
	purchaseBoundHash   = "2f69f37fe19de7c00acdfab5a867c1ff93e87f27103c24635e85a41ee5796b5b"
	purchaseCanonical   = "flashgate-v1\nPOST\n/api/v1/sales/demo/purchases\n" + emptyBodyHash + "\n1767225600\nnQ4yr0M1cS3tU5vW7xZ9aB\napp-ios-1\n" + purchaseBoundHash
	purchaseSig         = "fccbb014658e59a81fa31d015582b0ab97d035b80d4bf5807bb8be74cceacd35"
	purchaseHeader      = "keyId=app-ios-1,ts=1767225600,nonce=nQ4yr0M1cS3tU5vW7xZ9aB,sig=" + purchaseSig
)

var t0 = time.Unix(goldenTS, 0)

// memOnce is an in-memory Once, shared by Verifiers the way processes share
// the KV bucket.
type memOnce struct {
	mu    sync.Mutex
	used  map[string]bool
	calls int
}

func newMemOnce() *memOnce { return &memOnce{used: map[string]bool{}} }

func (m *memOnce) Use(_ context.Context, key string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if m.used[key] {
		return false, nil
	}
	m.used[key] = true
	return true, nil
}

func (m *memOnce) Calls() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls
}

// errOnce is a Once whose store is down.
type errOnce struct{ err error }

func (o errOnce) Use(context.Context, string) (bool, error) { return false, o.err }

// firstOnce is a Once for which every key is new.
type firstOnce struct{}

func (firstOnce) Use(context.Context, string) (bool, error) { return true, nil }

func clockAt(t time.Time) func() time.Time { return func() time.Time { return t } }

// newVerifier returns a Verifier holding the golden key, its clock at t0.
func newVerifier(once signing.Once) *signing.Verifier {
	return &signing.Verifier{
		Keys: signing.Keys{goldenKeyID: []byte(goldenSecret)},
		Now:  clockAt(t0),
		Once: once,
	}
}

// request is what Verify is given.
type request struct {
	method, path string
	body         []byte
	bound        [32]byte
	header       string
}

// noBound is the bound-headers hash of a request without any bound header.
var noBound = signing.Bound("", "", "")

func goldenRequest() request {
	return request{goldenMethod, goldenPath, []byte(goldenBody), noBound, goldenHeader}
}

func verify(v *signing.Verifier, r request) (string, error) {
	return v.Verify(context.Background(), r.method, r.path, r.body, r.bound, r.header)
}

// hexSHA256 is the SHA-256 of s in lowercase hex, computed without the
// package.
func hexSHA256(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// hmacByHand returns the signature of the canonical request made of lines,
// computed with crypto/hmac and no help from the package.
func hmacByHand(lines ...string) string {
	mac := hmac.New(sha256.New, []byte(goldenSecret))
	mac.Write([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(mac.Sum(nil))
}

func TestGoldenVector(t *testing.T) {
	got := signing.Sign(goldenKeyID, []byte(goldenSecret), goldenMethod, goldenPath, []byte(goldenBody), noBound, t0, goldenNonce)
	if got != goldenHeader {
		t.Errorf("Sign =\n%s\nwant\n%s", got, goldenHeader)
	}
	canon := signing.Canonical(goldenMethod, goldenPath, sha256.Sum256([]byte(goldenBody)), noBound, goldenTS, goldenNonce, goldenKeyID)
	if string(canon) != goldenCanonical {
		t.Errorf("Canonical =\n%q\nwant\n%q", canon, goldenCanonical)
	}

	// The same by hand, with crypto/hmac and no help from the package.
	if h := hexSHA256(goldenBody); h != goldenBodyHash {
		t.Errorf("body hash %s, want %s", h, goldenBodyHash)
	}
	if h := hexSHA256("authorization:\nx-purchase-token:\nx-challenge-solution:"); h != goldenBoundHash {
		t.Errorf("bound hash by hand %s, want %s", h, goldenBoundHash)
	}
	if h := hmacByHand("flashgate-v1", goldenMethod, goldenPath, hexSHA256(goldenBody), "1767225600", goldenNonce, goldenKeyID,
		hexSHA256("authorization:\nx-purchase-token:\nx-challenge-solution:")); h != goldenSig {
		t.Errorf("HMAC by hand %s, want %s", h, goldenSig)
	}

	kid, err := verify(newVerifier(newMemOnce()), goldenRequest())
	if err != nil || kid != goldenKeyID {
		t.Fatalf("Verify(golden) = %q, %v", kid, err)
	}
}

func TestGoldenVectorBoundHeaders(t *testing.T) {
	bound := signing.Bound(purchaseAuth, purchaseToken, "")
	if h := hex.EncodeToString(bound[:]); h != purchaseBoundHash {
		t.Errorf("Bound = %s, want %s", h, purchaseBoundHash)
	}
	got := signing.Sign(goldenKeyID, []byte(goldenSecret), "POST", purchasePath, nil, bound, t0, purchaseNonce)
	if got != purchaseHeader {
		t.Errorf("Sign =\n%s\nwant\n%s", got, purchaseHeader)
	}
	canon := signing.Canonical("POST", purchasePath, sha256.Sum256(nil), bound, goldenTS, purchaseNonce, goldenKeyID)
	if string(canon) != purchaseCanonical {
		t.Errorf("Canonical =\n%q\nwant\n%q", canon, purchaseCanonical)
	}

	// The same by hand.
	if h := hexSHA256("authorization:" + purchaseAuth + "\nx-purchase-token:" + purchaseToken + "\nx-challenge-solution:"); h != purchaseBoundHash {
		t.Errorf("bound hash by hand %s, want %s", h, purchaseBoundHash)
	}
	if h := hexSHA256(purchaseBoundString); h != purchaseBoundHash {
		t.Errorf("bound hash of the doc's string %s, want %s", h, purchaseBoundHash)
	}
	if h := hmacByHand("flashgate-v1", "POST", purchasePath, hexSHA256(""), "1767225600", purchaseNonce, goldenKeyID, hexSHA256(purchaseBoundString)); h != purchaseSig {
		t.Errorf("HMAC by hand %s, want %s", h, purchaseSig)
	}

	// As a server sees it.
	h := http.Header{}
	h.Set("Authorization", purchaseAuth)
	h.Set("X-Purchase-Token", purchaseToken)
	h.Set("X-Other", "not bound")
	if signing.BoundOf(h) != bound {
		t.Errorf("BoundOf(%v) differs from Bound", h)
	}
	v := newVerifier(newMemOnce())
	kid, err := v.Verify(context.Background(), "POST", purchasePath, nil, signing.BoundOf(h), purchaseHeader)
	if err != nil || kid != goldenKeyID {
		t.Fatalf("Verify(purchase vector) = %q, %v", kid, err)
	}
}

func TestEmptyBodyHash(t *testing.T) {
	// The constant the package doc gives for requests without a body.
	canon := signing.Canonical("GET", "/api/v1/time", sha256.Sum256(nil), noBound, 1, goldenNonce, "k")
	if got := strings.Split(string(canon), "\n")[3]; got != emptyBodyHash {
		t.Fatalf("empty body hash %s, want %s", got, emptyBodyHash)
	}
}

func TestNoBoundHeadersHash(t *testing.T) {
	// The constant the package doc gives for requests without any bound
	// header; a header sent empty is the same as one not sent.
	canon := signing.Canonical("GET", "/api/v1/time", sha256.Sum256(nil), noBound, 1, goldenNonce, "k")
	lines := strings.Split(string(canon), "\n")
	if len(lines) != 8 || lines[7] != goldenBoundHash {
		t.Fatalf("canonical request %q: want 8 lines, the last %s", canon, goldenBoundHash)
	}
	h := http.Header{"Authorization": {""}, "X-Purchase-Token": nil}
	if signing.BoundOf(h) != noBound || signing.BoundOf(nil) != noBound {
		t.Fatal("BoundOf of empty or absent headers differs from Bound of empty values")
	}
}

func TestBound(t *testing.T) {
	// Each header has its own line: a value cannot pass for another header's.
	seen := map[[32]byte]string{}
	for name, b := range map[string][32]byte{
		"none":                    signing.Bound("", "", ""),
		"authorization":           signing.Bound("x", "", ""),
		"purchase token":          signing.Bound("", "x", ""),
		"challenge solution":      signing.Bound("", "", "x"),
		"bearer a":                signing.Bound("Bearer a", "", ""),
		"bearer b":                signing.Bound("Bearer b", "", ""),
		"bearer lower case":       signing.Bound("bearer a", "", ""),
		"trailing space":          signing.Bound("Bearer a ", "", ""),
		"token t1":                signing.Bound("Bearer a", "t1", ""),
		"token t2":                signing.Bound("Bearer a", "t2", ""),
		"solution s1":             signing.Bound("Bearer a", "", "s1"),
		"solution s2":             signing.Bound("Bearer a", "", "s2"),
		"all three":               signing.Bound("Bearer a", "t1", "s1"),
		"token and solution swap": signing.Bound("Bearer a", "s1", "t1"),
	} {
		if other, dup := seen[b]; dup {
			t.Errorf("%s and %s have the same hash", name, other)
		}
		seen[b] = name
	}

	// BoundOf reads the first value of each header, by canonical name.
	h := http.Header{}
	h.Add("authorization", "Bearer a")
	h.Add("Authorization", "Bearer b")
	h.Add("x-purchase-token", "t1")
	h.Add("X-Challenge-Solution", "s1")
	if signing.BoundOf(h) != signing.Bound("Bearer a", "t1", "s1") {
		t.Errorf("BoundOf(%v) is not Bound of the first values", h)
	}

	// A long value (a CAPTCHA answer can be a few KiB) is hashed whole.
	long := strings.Repeat("c", 4096)
	if signing.Bound("", "", long) == signing.Bound("", "", long[:4095]) {
		t.Error("long values: the last byte is not hashed")
	}
	if h := signing.Bound("Bearer a", "t1", long); hex.EncodeToString(h[:]) != hexSHA256("authorization:Bearer a\nx-purchase-token:t1\nx-challenge-solution:"+long) {
		t.Error("long values: Bound differs from the hash by hand")
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0, 0xff, '\n', 'x'}, 1<<14)
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		bound              [32]byte
	}{
		{"no body", "GET", "/api/v1/sales/demo", nil, noBound},
		{"empty body", "POST", "/api/v1/sales/demo/tokens", []byte{}, signing.Bound("Bearer s", "", "")},
		{"json", "POST", "/api/v1/sales/demo/purchases", []byte(`{"token":"abc"}`), signing.Bound("Bearer s", "abc", "")},
		{"solution", "POST", "/api/v1/sales/demo/tokens", nil, signing.Bound("Bearer s", "", "puzzle.answer")},
		{"long solution", "POST", "/api/v1/sales/demo/tokens", nil, signing.Bound("Bearer s", "", strings.Repeat("x", 2048))},
		{"query", "GET", "/api/v1/sales?after=x&limit=10", nil, noBound},
		{"encoded path", "DELETE", "/api/v1/a%2Fb/%E2%82%AC?q=%20", nil, noBound},
		{"lower-case method", "patch", "/x", []byte("y"), noBound},
		{"binary 64 KiB", "PUT", "/upload", big, signing.Bound("Bearer s", "t", "x")},
		{"long path", "GET", "/" + strings.Repeat("p", 1000), nil, noBound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(newMemOnce())
			h := signing.Sign(goldenKeyID, []byte(goldenSecret), tc.method, tc.path, tc.body, tc.bound, t0, signing.NewNonce())
			kid, err := v.Verify(context.Background(), tc.method, tc.path, tc.body, tc.bound, h)
			if err != nil || kid != goldenKeyID {
				t.Fatalf("Verify = %q, %v", kid, err)
			}
		})
	}
}

func TestVerifyDefaults(t *testing.T) {
	// Now and Window left zero: time.Now and DefaultWindow.
	v := &signing.Verifier{Keys: signing.Keys{goldenKeyID: []byte(goldenSecret)}, Once: newMemOnce()}
	h := signing.Sign(goldenKeyID, []byte(goldenSecret), "GET", "/", nil, noBound, time.Now(), signing.NewNonce())
	if _, err := v.Verify(context.Background(), "GET", "/", nil, noBound, h); err != nil {
		t.Fatal(err)
	}
	h = signing.Sign(goldenKeyID, []byte(goldenSecret), "GET", "/", nil, noBound, time.Now().Add(-signing.DefaultWindow-2*time.Second), signing.NewNonce())
	if _, err := v.Verify(context.Background(), "GET", "/", nil, noBound, h); !errors.Is(err, signing.ErrStale) {
		t.Fatalf("signed %v ago: %v, want ErrStale", signing.DefaultWindow+2*time.Second, err)
	}
}

func TestMethodUpperCased(t *testing.T) {
	// The canonical request has the method in upper case, so the case a
	// client or server spells it in does not matter.
	v := newVerifier(newMemOnce())
	h := signing.Sign(goldenKeyID, []byte(goldenSecret), "post", goldenPath, []byte(goldenBody), noBound, t0, goldenNonce)
	if h != goldenHeader {
		t.Fatalf("Sign(post) = %s, want the golden header", h)
	}
	if _, err := v.Verify(context.Background(), "Post", goldenPath, []byte(goldenBody), noBound, h); err != nil {
		t.Fatal(err)
	}
}

func TestNewNonce(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		n := signing.NewNonce()
		if len(n) != 22 {
			t.Fatalf("NewNonce = %q, %d characters, want 22", n, len(n))
		}
		p, err := signing.ParseHeader("keyId=k,ts=1,nonce=" + n + ",sig=" + goldenSig)
		if err != nil || p.Nonce != n {
			t.Fatalf("nonce %q refused: %v", n, err)
		}
		if seen[n] {
			t.Fatalf("NewNonce repeated %q", n)
		}
		seen[n] = true
	}
}

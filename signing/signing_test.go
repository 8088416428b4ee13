package signing_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/signing"
)

// The test vector of the package doc. The expected header was computed once
// with openssl, not with this package:
//
//	printf '%s' "$canonical" | openssl dgst -sha256 -hmac "$secret"
const (
	goldenSecret = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	goldenKeyID  = "app-ios-1"
	goldenMethod = "POST"
	goldenPath   = "/api/v1/sales/demo/tokens?qty=2"
	goldenBody   = `{"sale":"demo"}`
	goldenTS     = 1767225600 // 2026-01-01T00:00:00Z
	goldenNonce  = "mZ3xq9L0bR2sT4uV6wY8zA"

	goldenBodyHash  = "99c18e0fc35e350928ebe19a9954111b4b10c5d1aa3e002c6a26b61ccc7d8856"
	goldenCanonical = "flashgate-v1\nPOST\n/api/v1/sales/demo/tokens?qty=2\n" + goldenBodyHash + "\n1767225600\nmZ3xq9L0bR2sT4uV6wY8zA\napp-ios-1"
	goldenSig       = "7ae4b4017dc6d9c83e8d296fd515fa01769f3a440ed01e81b32f87310e083997"
	goldenHeader    = "keyId=app-ios-1,ts=1767225600,nonce=mZ3xq9L0bR2sT4uV6wY8zA,sig=" + goldenSig
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
	header       string
}

func goldenRequest() request {
	return request{goldenMethod, goldenPath, []byte(goldenBody), goldenHeader}
}

func verify(v *signing.Verifier, r request) (string, error) {
	return v.Verify(context.Background(), r.method, r.path, r.body, r.header)
}

func TestGoldenVector(t *testing.T) {
	got := signing.Sign(goldenKeyID, []byte(goldenSecret), goldenMethod, goldenPath, []byte(goldenBody), t0, goldenNonce)
	if got != goldenHeader {
		t.Errorf("Sign =\n%s\nwant\n%s", got, goldenHeader)
	}
	canon := signing.Canonical(goldenMethod, goldenPath, sha256.Sum256([]byte(goldenBody)), goldenTS, goldenNonce, goldenKeyID)
	if string(canon) != goldenCanonical {
		t.Errorf("Canonical =\n%q\nwant\n%q", canon, goldenCanonical)
	}

	// The same by hand, with crypto/hmac and no help from the package.
	bodySum := sha256.Sum256([]byte(goldenBody))
	if h := hex.EncodeToString(bodySum[:]); h != goldenBodyHash {
		t.Errorf("body hash %s, want %s", h, goldenBodyHash)
	}
	lines := []string{"flashgate-v1", goldenMethod, goldenPath, hex.EncodeToString(bodySum[:]), "1767225600", goldenNonce, goldenKeyID}
	mac := hmac.New(sha256.New, []byte(goldenSecret))
	mac.Write([]byte(strings.Join(lines, "\n")))
	if h := hex.EncodeToString(mac.Sum(nil)); h != goldenSig {
		t.Errorf("HMAC by hand %s, want %s", h, goldenSig)
	}

	kid, err := verify(newVerifier(newMemOnce()), goldenRequest())
	if err != nil || kid != goldenKeyID {
		t.Fatalf("Verify(golden) = %q, %v", kid, err)
	}
}

func TestEmptyBodyHash(t *testing.T) {
	// The constant the package doc gives for requests without a body.
	const want = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	canon := signing.Canonical("GET", "/api/v1/time", sha256.Sum256(nil), 1, goldenNonce, "k")
	if got := strings.Split(string(canon), "\n")[3]; got != want {
		t.Fatalf("empty body hash %s, want %s", got, want)
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte{0, 0xff, '\n', 'x'}, 1<<14)
	for _, tc := range []struct {
		name, method, path string
		body               []byte
	}{
		{"no body", "GET", "/api/v1/sales/demo", nil},
		{"empty body", "POST", "/api/v1/sales/demo/tokens", []byte{}},
		{"json", "POST", "/api/v1/sales/demo/purchases", []byte(`{"token":"abc"}`)},
		{"query", "GET", "/api/v1/sales?after=x&limit=10", nil},
		{"encoded path", "DELETE", "/api/v1/a%2Fb/%E2%82%AC?q=%20", nil},
		{"lower-case method", "patch", "/x", []byte("y")},
		{"binary 64 KiB", "PUT", "/upload", big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(newMemOnce())
			h := signing.Sign(goldenKeyID, []byte(goldenSecret), tc.method, tc.path, tc.body, t0, signing.NewNonce())
			kid, err := v.Verify(context.Background(), tc.method, tc.path, tc.body, h)
			if err != nil || kid != goldenKeyID {
				t.Fatalf("Verify = %q, %v", kid, err)
			}
		})
	}
}

func TestVerifyDefaults(t *testing.T) {
	// Now and Window left zero: time.Now and DefaultWindow.
	v := &signing.Verifier{Keys: signing.Keys{goldenKeyID: []byte(goldenSecret)}, Once: newMemOnce()}
	h := signing.Sign(goldenKeyID, []byte(goldenSecret), "GET", "/", nil, time.Now(), signing.NewNonce())
	if _, err := v.Verify(context.Background(), "GET", "/", nil, h); err != nil {
		t.Fatal(err)
	}
	h = signing.Sign(goldenKeyID, []byte(goldenSecret), "GET", "/", nil, time.Now().Add(-signing.DefaultWindow-2*time.Second), signing.NewNonce())
	if _, err := v.Verify(context.Background(), "GET", "/", nil, h); !errors.Is(err, signing.ErrStale) {
		t.Fatalf("signed %v ago: %v, want ErrStale", signing.DefaultWindow+2*time.Second, err)
	}
}

func TestMethodUpperCased(t *testing.T) {
	// The canonical request has the method in upper case, so the case a
	// client or server spells it in does not matter.
	v := newVerifier(newMemOnce())
	h := signing.Sign(goldenKeyID, []byte(goldenSecret), "post", goldenPath, []byte(goldenBody), t0, goldenNonce)
	if h != goldenHeader {
		t.Fatalf("Sign(post) = %s, want the golden header", h)
	}
	if _, err := v.Verify(context.Background(), "Post", goldenPath, []byte(goldenBody), h); err != nil {
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

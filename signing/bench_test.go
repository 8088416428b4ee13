package signing_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/flashgate/flashgate/signing"
)

// Measured on a shared 2-vCPU VM (Oxide Virtual Turin-like, linux/amd64,
// go1.26.8), from the repository root:
//
//	go test -run '^$' -bench . -benchmem -count 5 ./signing/
//
//	                       typical       noisy runs (other jobs, load avg ~1.7)
//	BenchmarkVerify          ~1.15 µs/op   1.3-1.9 µs/op    800 B/op  8 allocs/op
//	BenchmarkVerifyForged    ~1.1 µs/op    1.6-2.0 µs/op    752 B/op  7 allocs/op
//	BenchmarkParseHeader     ~125 ns/op    130-155 ns/op      0 B/op  0 allocs/op
//	BenchmarkBoundOf         ~240 ns/op    240-255 ns/op      0 B/op  0 allocs/op
//	BenchmarkSign            ~1.15 µs/op   1.3-2.0 µs/op   1024 B/op  9 allocs/op
//
// The golden request: a 15-byte body, a 31-byte path, no bound header. Nearly
// all of Verify is hmac.New (two SHA-256 states, the keyed pads) and the
// hashes; the allocation a valid request adds over a forged one is the Once
// key. The eighth line of the canonical request (flashgate-v1 with bound
// headers) added about 0.1 µs over the seven-line format, one more SHA-256
// block; the server adds BoundOf on top (a purchase's session and token,
// read from a header map of five). The Once here is a fake that always
// answers "first": in production the KV Create round trip dwarfs these
// figures, and forged requests never make it.

func BenchmarkVerify(b *testing.B) {
	v := newVerifier(firstOnce{})
	ctx, body := context.Background(), []byte(goldenBody)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, goldenMethod, goldenPath, body, noBound, goldenHeader); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyForged is the cost of refusing a well-formed, on-time
// request for a known key with a wrong signature: the work a flood of
// forgeries makes, none of it reaching the nonce store.
func BenchmarkVerifyForged(b *testing.B) {
	v := newVerifier(firstOnce{})
	p := goldenParams(b)
	p.Sig[0] ^= 1
	h, ctx, body := p.String(), context.Background(), []byte(goldenBody)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, goldenMethod, goldenPath, body, noBound, h); err != signing.ErrBadSignature {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseHeader(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := signing.ParseHeader(goldenHeader); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBoundOf is what a server adds to Verify for the bound headers: a
// purchase's session and token, among a client's other headers.
func BenchmarkBoundOf(b *testing.B) {
	h := http.Header{}
	h.Set("Authorization", purchaseAuth)
	h.Set("X-Purchase-Token", purchaseToken)
	h.Set("X-Signature", purchaseHeader)
	h.Set("User-Agent", "shop-ios/4.2")
	h.Set("Accept", "application/json")
	b.ReportAllocs()
	for b.Loop() {
		signing.BoundOf(h)
	}
}

func BenchmarkSign(b *testing.B) {
	secret, body := []byte(goldenSecret), []byte(goldenBody)
	b.ReportAllocs()
	for b.Loop() {
		signing.Sign(goldenKeyID, secret, goldenMethod, goldenPath, body, noBound, t0, goldenNonce)
	}
}

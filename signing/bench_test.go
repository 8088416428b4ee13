package signing_test

import (
	"context"
	"testing"

	"github.com/flashgate/flashgate/signing"
)

// Measured on a shared 2-vCPU VM (Oxide Virtual Turin-like, linux/amd64,
// go1.26.8), from /work/main:
//
//	go test -run '^$' -bench . -benchmem -count 5 ./signing/
//
//	                       quiet run     under load (load avg 2-4)
//	BenchmarkVerify          ~1.0 µs/op    1.1-2.3 µs/op   816 B/op  8 allocs/op
//	BenchmarkVerifyForged    ~0.93 µs/op   1.4-2.0 µs/op   768 B/op  7 allocs/op
//	BenchmarkParseHeader     ~115 ns/op    120-150 ns/op     0 B/op  0 allocs/op
//	BenchmarkSign            ~0.92 µs/op   1.1-1.8 µs/op  1040 B/op  9 allocs/op
//
// The golden request: a 15-byte body, a 31-byte path. Nearly all of Verify is
// hmac.New (two SHA-256 states, the keyed pads) and the three hashes; the
// allocation a valid request adds over a forged one is the Once key. The Once
// here is a fake that always answers "first": in production the KV Create
// round trip dwarfs these figures, and forged requests never make it.

func BenchmarkVerify(b *testing.B) {
	v := newVerifier(firstOnce{})
	ctx, body := context.Background(), []byte(goldenBody)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, goldenMethod, goldenPath, body, goldenHeader); err != nil {
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
		if _, err := v.Verify(ctx, goldenMethod, goldenPath, body, h); err != signing.ErrBadSignature {
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

func BenchmarkSign(b *testing.B) {
	secret, body := []byte(goldenSecret), []byte(goldenBody)
	b.ReportAllocs()
	for b.Loop() {
		signing.Sign(goldenKeyID, secret, goldenMethod, goldenPath, body, t0, goldenNonce)
	}
}

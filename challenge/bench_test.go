package challenge_test

// Figures measured from the repository root on a 2-vCPU virtual AMD EPYC "Turin"
// (Go 1.26.8, linux/amd64, SHA-NI), on a shared and busy machine (load 4-6),
// best of two runs each:
//
//	go test -run XXX -bench . -benchtime 2s -count 3 ./challenge/
//	BenchmarkVerify-2          ~920 ns/op    336 B/op   7 allocs/op
//	BenchmarkVerifyReject-2    ~385 ns/op    144 B/op   3 allocs/op
//
//	go test -run XXX -bench 'Solve|Hash' -benchtime 3s -count 2 -cpu 1 ./challenge/
//	BenchmarkSolve/d=12     0.40 ms/puzzle   10.3 M hashes/s
//	BenchmarkSolve/d=16     6.6 ms/puzzle    10.3 M hashes/s
//	BenchmarkSolve/d=18     24 ms/puzzle     11.1 M hashes/s
//	BenchmarkHashSolution   166 ns/hash       6.0 M hashes/s (no midstate, 138 bytes)
//
// With other jobs on the machine the same runs gave 2.6 to 8 M hashes/s.
// So difficulty 18 costs Go about 25 ms of one core (2^18 / 10 M/s); a
// browser pays more per hash (no midstate, promise overhead), which is what
// "about a second" is about. Verify is far cheaper than any HTTP request
// that carries it; a forged solution costs one HMAC.

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/flashgate/flashgate/challenge"
)

// benchShopper is a typical shopper id (a ULID).
const benchShopper = "01J8ZK3V5Q9W2X7Y4T6R1M0N8P"

// BenchmarkVerify verifies a valid solution; the Once store always says
// first use, so this is the cost of an accepted solution minus the store.
func BenchmarkVerify(b *testing.B) {
	p := newPoW(b, testKey, alwaysFirst{}, &testClock{t: t0})
	_, sol := issueSolved(b, p, testSale, testShop, testDifficulty)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Verify(ctx, testSale, testShop, sol); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyReject verifies a solution with a forged HMAC: the cost of
// turning away a flood of made-up solutions.
func BenchmarkVerifyReject(b *testing.B) {
	p := newPoW(b, testKey, alwaysFirst{}, &testClock{t: t0})
	pz, err := p.Issue(testSale, testShop, testDifficulty)
	if err != nil {
		b.Fatal(err)
	}
	enc, mac, _ := strings.Cut(pz.Challenge, ".")
	forged := enc + "." + strings.Repeat("A", len(mac)) + ":12345"
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Verify(ctx, testSale, testShop, forged); err == nil {
			b.Fatal("forged solution accepted")
		}
	}
}

// BenchmarkSolve solves fresh puzzles at a few difficulties and reports the
// hash rate (one hash per counter tried) and the mean time per puzzle.
// Puzzles are for a ULID shopper in a typical sale: solutions of about 138
// bytes, of which Solve hashes only the last 64-byte block or two per try.
func BenchmarkSolve(b *testing.B) {
	for _, d := range []int{12, 16, 18} {
		b.Run(fmt.Sprintf("d=%d", d), func(b *testing.B) {
			p := newPoW(b, testKey, alwaysFirst{}, &testClock{t: t0})
			ctx := context.Background()
			var hashes, puzzles float64
			for b.Loop() {
				pz, err := p.Issue(testSale, benchShopper, d)
				if err != nil {
					b.Fatal(err)
				}
				sol, err := challenge.Solve(ctx, pz.Challenge, d)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := strconv.ParseUint(sol[len(pz.Challenge)+1:], 10, 64)
				hashes += float64(n + 1)
				puzzles++
			}
			b.ReportMetric(hashes/b.Elapsed().Seconds(), "hashes/s")
			b.ReportMetric(hashes/puzzles, "hashes/puzzle")
		})
	}
}

// BenchmarkHashSolution is one plain SHA-256 of a typical solution, the
// way a browser's crypto.subtle.digest computes each try (no midstate): an
// upper bound on the browser's per-core rate.
func BenchmarkHashSolution(b *testing.B) {
	p := newPoW(b, testKey, alwaysFirst{}, &testClock{t: t0})
	pz, err := p.Issue(testSale, benchShopper, challenge.DefaultDifficulty)
	if err != nil {
		b.Fatal(err)
	}
	sol := []byte(pz.Challenge + ":123456")
	b.ReportMetric(float64(len(sol)), "bytes")
	var n int
	for b.Loop() {
		sum := sha256.Sum256(sol)
		n += int(sum[0])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "hashes/s")
	_ = n
}

package challenge_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashgate/flashgate/challenge"
)

const (
	testKey  = "test-key-0123456789-0123456789-0123456789"
	otherKey = "other-key-0123456789-0123456789-012345678"
	testSale = "spring-drop"
	testShop = "shopper-42"
	// testDifficulty keeps Solve fast under the race detector.
	testDifficulty = 8
)

// t0 is the issue time of test puzzles.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testClock is a settable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func newPoW(tb testing.TB, key string, once challenge.Once, clock *testClock) *challenge.PoW {
	tb.Helper()
	p, err := challenge.NewPoW(challenge.PoWConfig{Key: []byte(key), Once: once, Now: clock.Now})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// issueSolved issues a puzzle for sale and shopper and solves it.
func issueSolved(tb testing.TB, p *challenge.PoW, sale, shopper string, difficulty int) (challenge.Puzzle, string) {
	tb.Helper()
	pz, err := p.Issue(sale, shopper, difficulty)
	if err != nil {
		tb.Fatal(err)
	}
	sol, err := challenge.Solve(context.Background(), pz.Challenge, pz.Difficulty)
	if err != nil {
		tb.Fatal(err)
	}
	return pz, sol
}

func TestNewPoW(t *testing.T) {
	once := &memOnce{}
	tests := []struct {
		name string
		c    challenge.PoWConfig
		ok   bool
	}{
		{"ok", challenge.PoWConfig{Key: []byte(testKey), Once: once}, true},
		{"32-byte key", challenge.PoWConfig{Key: make([]byte, 32), Once: once}, true},
		{"short key", challenge.PoWConfig{Key: make([]byte, 31), Once: once}, false},
		{"no key", challenge.PoWConfig{Once: once}, false},
		{"no once", challenge.PoWConfig{Key: []byte(testKey)}, false},
		{"negative TTL", challenge.PoWConfig{Key: []byte(testKey), Once: once, TTL: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := challenge.NewPoW(tt.c)
			if (err == nil) != tt.ok || (p != nil) != tt.ok {
				t.Fatalf("NewPoW = %v, %v; want ok %v", p, err, tt.ok)
			}
		})
	}
}

func TestNewPoWCopiesKey(t *testing.T) {
	clock := &testClock{t: t0}
	key := []byte(testKey)
	p, err := challenge.NewPoW(challenge.PoWConfig{Key: key, Once: &memOnce{}, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	_, sol := issueSolved(t, p, testSale, testShop, testDifficulty)
	key[0] ^= 1
	if err := p.Verify(context.Background(), testSale, testShop, sol); err != nil {
		t.Fatalf("Verify after the caller changed its key slice: %v", err)
	}
}

func TestIssueSolveVerify(t *testing.T) {
	clock := &testClock{t: t0}
	once := &memOnce{}
	p := newPoW(t, testKey, once, clock)
	ctx := context.Background()

	pz, sol := issueSolved(t, p, testSale, testShop, testDifficulty)
	if pz.Kind != "pow" || pz.Algorithm != "sha256" || pz.Difficulty != testDifficulty {
		t.Errorf("puzzle = %+v", pz)
	}
	if want := t0.Add(challenge.DefaultTTL); !pz.ExpiresAt.Equal(want) {
		t.Errorf("ExpiresAt = %v, want %v", pz.ExpiresAt, want)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$`).MatchString(pz.Challenge) {
		t.Errorf("challenge %q is not base64url.base64url(32 bytes)", pz.Challenge)
	}
	if !strings.HasPrefix(sol, pz.Challenge+":") {
		t.Fatalf("solution %q does not extend the challenge", sol)
	}
	if sum := sha256.Sum256([]byte(sol)); challenge.LeadingZeroBits(sum[:]) < testDifficulty {
		t.Fatalf("Solve returned %q with too few zero bits", sol)
	}

	clock.Set(t0.Add(challenge.DefaultTTL - time.Millisecond))
	if err := p.Verify(ctx, testSale, testShop, sol); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	err := p.Verify(ctx, testSale, testShop, sol)
	if !errors.Is(err, challenge.ErrFailed) || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("second Verify = %v, want ErrFailed: already used", err)
	}
	keys := once.keys()
	if len(keys) != 1 || !regexp.MustCompile(`^pow\.[0-9a-f]{32}$`).MatchString(keys[0]) {
		t.Fatalf("Once keys = %q, want one pow.<32 hex>", keys)
	}

	// Another counter that also solves the puzzle is the same puzzle.
	prefix := pz.Challenge + ":"
	for n := 0; ; n++ {
		alt := prefix + strconv.Itoa(n)
		if sum := sha256.Sum256([]byte(alt)); alt == sol || challenge.LeadingZeroBits(sum[:]) < testDifficulty {
			continue
		}
		if err := p.Verify(ctx, testSale, testShop, alt); !errors.Is(err, challenge.ErrFailed) {
			t.Fatalf("Verify of another solution of a used puzzle = %v, want ErrFailed", err)
		}
		break
	}
}

func TestPuzzleJSON(t *testing.T) {
	clock := &testClock{t: t0}
	p := newPoW(t, testKey, &memOnce{}, clock)
	pz, err := p.Issue(testSale, testShop, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(pz)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"kind":       "pow",
		"challenge":  pz.Challenge,
		"difficulty": float64(challenge.DefaultDifficulty),
		"algorithm":  "sha256",
		"expiresAt":  "2026-03-01T12:02:00Z",
	}
	if len(got) != len(want) {
		t.Fatalf("JSON %s, want the keys of %v", b, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("JSON %q = %v, want %v", k, got[k], v)
		}
	}
}

func TestIssueRefuses(t *testing.T) {
	p := newPoW(t, testKey, &memOnce{}, &testClock{t: t0})
	tests := []struct {
		name          string
		sale, shopper string
		difficulty    int
	}{
		{"difficulty -1", testSale, testShop, -1},
		{"difficulty 33", testSale, testShop, challenge.MaxDifficulty + 1},
		{"no sale", "", testShop, 1},
		{"long sale", strings.Repeat("s", 65), testShop, 1},
		{"no shopper", testSale, "", 1},
		{"long shopper", testSale, strings.Repeat("u", 129), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if pz, err := p.Issue(tt.sale, tt.shopper, tt.difficulty); err == nil {
				t.Fatalf("Issue = %+v, want an error", pz)
			}
		})
	}
	for _, d := range []int{challenge.MinDifficulty, challenge.MaxDifficulty} {
		if _, err := p.Issue(testSale, testShop, d); err != nil {
			t.Errorf("Issue(difficulty %d): %v", d, err)
		}
	}
}

// TestLongestSolution checks that the longest ids give a solution within
// Verify's length limit.
func TestLongestSolution(t *testing.T) {
	clock := &testClock{t: t0}
	p := newPoW(t, testKey, &memOnce{}, clock)
	sale, shopper := strings.Repeat("s", 64), strings.Repeat("u", 128)
	pz, err := p.Issue(sale, shopper, 1)
	if err != nil {
		t.Fatal(err)
	}
	// A 20-digit counter (beyond uint64) that has enough work.
	for i := 0; ; i++ {
		sol := pz.Challenge + ":" + strings.Repeat("9", 17) + fmt.Sprintf("%03d", i)
		if sum := sha256.Sum256([]byte(sol)); challenge.LeadingZeroBits(sum[:]) < 1 {
			continue
		}
		if len(sol) > 512 {
			t.Fatalf("longest solution has %d bytes", len(sol))
		}
		if err := p.Verify(context.Background(), sale, shopper, sol); err != nil {
			t.Fatalf("Verify(20-digit counter, longest ids): %v", err)
		}
		return
	}
}

// tamper returns challenge c with its payload changed by f and its MAC kept.
func tamper(tb testing.TB, c string, f func(payload []byte)) string {
	tb.Helper()
	enc, mac, ok := strings.Cut(c, ".")
	if !ok {
		tb.Fatalf("challenge %q has no dot", c)
	}
	payload, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		tb.Fatal(err)
	}
	f(payload)
	return base64.RawURLEncoding.EncodeToString(payload) + "." + mac
}

// unsolved returns the first counter that does not solve c at difficulty.
func unsolved(c string, difficulty int) string {
	for n := 0; ; n++ {
		sol := c + ":" + strconv.Itoa(n)
		if sum := sha256.Sum256([]byte(sol)); challenge.LeadingZeroBits(sum[:]) < difficulty {
			return sol
		}
	}
}

// solve is challenge.Solve for tests.
func solve(tb testing.TB, c string, difficulty int) string {
	tb.Helper()
	sol, err := challenge.Solve(context.Background(), c, difficulty)
	if err != nil {
		tb.Fatal(err)
	}
	return sol
}

func TestVerifyRejects(t *testing.T) {
	clock := &testClock{t: t0}
	p := newPoW(t, testKey, &memOnce{}, clock)
	pz, sol := issueSolved(t, p, testSale, testShop, testDifficulty)
	enc, mac, _ := strings.Cut(pz.Challenge, ".")
	counter := sol[strings.LastIndexByte(sol, ':')+1:]

	// Forged payload: difficulty 8 lowered to 1, then solved at 1.
	easier := tamper(t, pz.Challenge, func(b []byte) {
		if b[1] != testDifficulty {
			t.Fatalf("payload byte 1 = %d, want the difficulty %d", b[1], testDifficulty)
		}
		b[1] = 1
	})
	// Forged HMAC: one MAC character changed.
	flipped := []byte(mac)
	flipped[0] = 'A' // still base64url: the forgery must fail on the MAC, not the alphabet
	if mac[0] == 'A' {
		flipped[0] = 'B'
	}
	if flipped[0] == mac[0] {
		t.Fatal("flip did nothing")
	}
	forgedMAC := enc + "." + string(flipped)
	// Another deployment's key.
	other := newPoW(t, otherKey, &memOnce{}, clock)
	_, otherSol := issueSolved(t, other, testSale, testShop, testDifficulty)
	// Another shopper's and another sale's puzzles, genuinely solved.
	_, otherShopperSol := issueSolved(t, p, testSale, "shopper-43", testDifficulty)
	_, otherSaleSol := issueSolved(t, p, "autumn-drop", testShop, testDifficulty)

	tests := []struct {
		name     string
		solution string
		at       time.Time // zero: t0
		want     error
		reason   string
	}{
		{"empty", "", time.Time{}, challenge.ErrRequired, ""},
		{"no colon", pz.Challenge, time.Time{}, challenge.ErrFailed, "malformed solution"},
		{"counter only", ":" + counter, time.Time{}, challenge.ErrFailed, "malformed solution"},
		{"no dot", enc + mac + ":" + counter, time.Time{}, challenge.ErrFailed, "malformed solution"},
		{"empty counter", pz.Challenge + ":", time.Time{}, challenge.ErrFailed, "malformed counter"},
		{"letter counter", pz.Challenge + ":12a", time.Time{}, challenge.ErrFailed, "malformed counter"},
		{"signed counter", pz.Challenge + ":-1", time.Time{}, challenge.ErrFailed, "malformed counter"},
		{"spaced counter", pz.Challenge + ": 1", time.Time{}, challenge.ErrFailed, "malformed counter"},
		{"21-digit counter", pz.Challenge + ":" + strings.Repeat("1", 21), time.Time{}, challenge.ErrFailed, "malformed counter"},
		{"two colons", pz.Challenge + ":1:" + counter, time.Time{}, challenge.ErrFailed, "malformed solution"},
		{"bad base64 payload", "!!!!" + enc[4:] + "." + mac + ":" + counter, time.Time{}, challenge.ErrFailed, "bad signature"},
		{"bad base64 MAC", enc + "." + strings.Repeat("!", 43) + ":" + counter, time.Time{}, challenge.ErrFailed, "bad signature"},
		{"short MAC", enc + "." + mac[:42] + ":" + counter, time.Time{}, challenge.ErrFailed, "malformed solution"},
		{"short payload", enc[:8] + "." + mac + ":" + counter, time.Time{}, challenge.ErrFailed, "malformed solution"},
		{"forged payload", solve(t, easier, 1), time.Time{}, challenge.ErrFailed, "bad signature"},
		{"forged HMAC", solve(t, forgedMAC, testDifficulty), time.Time{}, challenge.ErrFailed, "bad signature"},
		{"another key", otherSol, time.Time{}, challenge.ErrFailed, "bad signature"},
		{"another shopper", otherShopperSol, time.Time{}, challenge.ErrFailed, "another shopper"},
		{"another sale", otherSaleSol, time.Time{}, challenge.ErrFailed, "another sale"},
		{"expired", sol, t0.Add(challenge.DefaultTTL), challenge.ErrFailed, "expired"},
		{"long expired", sol, t0.Add(time.Hour), challenge.ErrFailed, "expired"},
		{"insufficient work", unsolved(pz.Challenge, testDifficulty), time.Time{}, challenge.ErrFailed, "insufficient work"},
		{"oversized", strings.Repeat("a", 513), time.Time{}, challenge.ErrFailed, "too long"},
		{"oversized valid prefix", sol + strings.Repeat("0", 513-len(sol)), time.Time{}, challenge.ErrFailed, "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			once := &memOnce{}
			p := newPoW(t, testKey, once, clock)
			at := tt.at
			if at.IsZero() {
				at = t0
			}
			clock.Set(at)
			err := p.Verify(context.Background(), testSale, testShop, tt.solution)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("Verify = %q, want reason %q", err, tt.reason)
			}
			if n := once.callCount(); n != 0 {
				t.Errorf("Once asked %d times for an invalid solution", n)
			}
			if tt.solution != "" && len(tt.solution) > 20 && strings.Contains(err.Error(), tt.solution[:20]) {
				t.Errorf("error %q quotes the solution", err)
			}
		})
	}

	// The genuine solution still passes: nothing above was a false alarm.
	clock.Set(t0)
	if err := p.Verify(context.Background(), testSale, testShop, sol); err != nil {
		t.Fatalf("Verify(genuine) = %v", err)
	}
}

func TestVerifyOnceUnavailable(t *testing.T) {
	storeDown := errors.New("kv: no responders")
	clock := &testClock{t: t0}
	once := &memOnce{err: storeDown}
	p := newPoW(t, testKey, once, clock)
	_, sol := issueSolved(t, p, testSale, testShop, testDifficulty)

	err := p.Verify(context.Background(), testSale, testShop, sol)
	if !errors.Is(err, challenge.ErrUnavailable) || !errors.Is(err, storeDown) || errors.Is(err, challenge.ErrFailed) {
		t.Fatalf("Verify = %v, want ErrUnavailable wrapping the store's error", err)
	}
	if once.callCount() != 1 {
		t.Fatalf("Once asked %d times, want 1", once.callCount())
	}

	// A cancelled request cannot ask the store either.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p = newPoW(t, testKey, &memOnce{}, clock)
	if err := p.Verify(ctx, testSale, testShop, sol); !errors.Is(err, challenge.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Verify(cancelled ctx) = %v, want ErrUnavailable wrapping context.Canceled", err)
	}
}

func TestSolve(t *testing.T) {
	// Challenges of many lengths, so the prefix ends on both sides of the
	// 64-byte blocks Solve hashes once; Solve must find the smallest
	// counter, as the naive loop does.
	for _, l := range []int{1, 2, 54, 55, 56, 63, 64, 65, 118, 119, 127, 128, 200, 511} {
		c := strings.Repeat("c", l)
		const d = 6
		sol := solve(t, c, d)
		n, err := strconv.ParseUint(strings.TrimPrefix(sol, c+":"), 10, 64)
		if err != nil || sol != c+":"+strconv.FormatUint(n, 10) {
			t.Fatalf("len %d: Solve = %q", l, sol)
		}
		for i := uint64(0); i <= n; i++ {
			s := c + ":" + strconv.FormatUint(i, 10)
			sum := sha256.Sum256([]byte(s))
			if ok := challenge.LeadingZeroBits(sum[:]) >= d; ok != (i == n) {
				t.Fatalf("len %d: counter %d solves: %v; Solve chose %d", l, i, ok, n)
			}
		}
	}
}

func TestSolveRefuses(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		challenge  string
		difficulty int
	}{
		{"difficulty 0", "abc", 0},
		{"difficulty 33", "abc", 33},
		{"empty", "", 1},
		{"colon", "a:b", 1},
		{"too long", strings.Repeat("c", 513), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if sol, err := challenge.Solve(ctx, tt.challenge, tt.difficulty); err == nil {
				t.Fatalf("Solve = %q, want an error", sol)
			}
		})
	}
}

func TestSolveHonoursContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := challenge.Solve(ctx, "abc", 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Solve(cancelled) = %v, want context.Canceled", err)
	}

	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := challenge.Solve(ctx, "abc", challenge.MaxDifficulty)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Solve(difficulty 32, 20ms) = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Solve took %v to notice its deadline", d)
	}
}

func TestLeadingZeroBits(t *testing.T) {
	tests := []struct {
		b    []byte
		want int
	}{
		{nil, 0},
		{[]byte{}, 0},
		{[]byte{0x80}, 0},
		{[]byte{0xff, 0x00}, 0},
		{[]byte{0x7f}, 1},
		{[]byte{0x40}, 1},
		{[]byte{0x01}, 7},
		{[]byte{0x00}, 8},
		{[]byte{0x00, 0x80}, 8},
		{[]byte{0x00, 0x01}, 15},
		{[]byte{0x00, 0x00, 0x3f, 0xff}, 18},
		{[]byte{0x00, 0x00, 0x20}, 18},
		{[]byte{0x00, 0x00, 0x00, 0x00}, 32},
		{[]byte{0x00, 0x00, 0x00, 0x00, 0x01}, 39},
		{make([]byte, 32), 256},
	}
	for _, tt := range tests {
		if got := challenge.LeadingZeroBits(tt.b); got != tt.want {
			t.Errorf("LeadingZeroBits(%x) = %d, want %d", tt.b, got, tt.want)
		}
	}
}

// TestReleaseGivesBackASolution: a solution released after its request
// could not be stored passes again once; a forged one releases nothing.
func TestReleaseGivesBackASolution(t *testing.T) {
	clock := &testClock{t: t0}
	once := &memOnce{}
	p := newPoW(t, testKey, once, clock)
	_, sol := issueSolved(t, p, testSale, testShop, testDifficulty)
	ctx := context.Background()
	if err := p.Verify(ctx, testSale, testShop, sol); err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(ctx, testSale, testShop, sol); !errors.Is(err, challenge.ErrFailed) {
		t.Fatalf("reuse: %v", err)
	}
	other := newPoW(t, otherKey, once, clock)
	if err := other.Release(ctx, sol); err != nil || len(once.keys()) != 1 {
		t.Fatalf("a release under another key forgot the use: %v %v", err, once.keys())
	}
	if err := p.Release(ctx, sol); err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(ctx, testSale, testShop, sol); err != nil {
		t.Fatalf("after release: %v", err)
	}
	if err := p.Verify(ctx, testSale, testShop, sol); !errors.Is(err, challenge.ErrFailed) {
		t.Fatalf("reuse after release: %v", err)
	}
}

// TestVerifyKeysAfterRotation: puzzles signed with an older key verify
// while it is among the verify keys; new puzzles use the new key.
func TestVerifyKeysAfterRotation(t *testing.T) {
	clock := &testClock{t: t0}
	oldP := newPoW(t, testKey, &memOnce{}, clock)
	_, sol := issueSolved(t, oldP, testSale, testShop, testDifficulty)
	rotated, err := challenge.NewPoW(challenge.PoWConfig{Key: []byte(otherKey), VerifyKeys: [][]byte{[]byte(testKey)}, Once: &memOnce{}, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := rotated.Verify(context.Background(), testSale, testShop, sol); err != nil {
		t.Fatalf("an old-key puzzle after rotation: %v", err)
	}
	_, fresh := issueSolved(t, rotated, testSale, testShop, testDifficulty)
	if err := oldP.Verify(context.Background(), testSale, testShop, fresh); !errors.Is(err, challenge.ErrFailed) {
		t.Fatalf("a new-key puzzle at a process without the new key: %v", err)
	}
}

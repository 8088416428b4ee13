package challenge

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"
)

// firstUse is a Once that says every key is new, so that the fuzz property
// is about the solution alone.
type firstUse struct{}

func (firstUse) Use(context.Context, string) (bool, error) { return true, nil }

// FuzzVerify feeds Verify arbitrary solutions. It must not panic, must give
// only ErrRequired or ErrFailed (the Once store never fails here), and may
// accept only a solution to a puzzle this test issued, with enough work.
// Puzzles have fixed ids, clock and key, so a saved input replays.
func FuzzVerify(f *testing.F) {
	const sale, shopper = "spring-drop", "shopper-42"
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	p, err := NewPoW(PoWConfig{
		Key:  []byte("fuzz-key-0123456789-0123456789-0123456789"),
		Now:  func() time.Time { return now },
		Once: firstUse{},
	})
	if err != nil {
		f.Fatal(err)
	}
	issued := map[string]int{} // challenge -> difficulty
	add := func(forSale string, d int, id byte) {
		pz, err := p.issue(forSale, shopper, d, [idLen]byte{id})
		if err != nil {
			f.Fatal(err)
		}
		if forSale == sale {
			issued[pz.Challenge] = d
		}
		sol, err := Solve(context.Background(), pz.Challenge, d)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(sol)
		f.Add(pz.Challenge + ":0")
		f.Add(pz.Challenge + ":" + strings.Repeat("9", 20))
		f.Add(sol[:len(sol)-1])
	}
	// Low difficulties, so mutated counters pass often enough to exercise
	// the accepting path.
	add(sale, 1, 1)
	add(sale, 2, 2)
	add(sale, 4, 3)
	add(sale, 8, 4)
	add("autumn-drop", 1, 5) // for another sale: never accepted
	for _, s := range []string{"", ":", ".", ".:", "a.b:1", ":1", "..:0", strings.Repeat("A", 513), "\x00:\xff"} {
		f.Add(s)
	}

	f.Fuzz(func(t *testing.T, solution string) {
		err := p.Verify(context.Background(), sale, shopper, solution)
		if err != nil {
			if !errors.Is(err, ErrRequired) && !errors.Is(err, ErrFailed) {
				t.Fatalf("Verify(%q) = %v, want ErrRequired or ErrFailed", solution, err)
			}
			if (solution == "") != (err == ErrRequired) {
				t.Fatalf("Verify(%q) = %v", solution, err)
			}
			return
		}
		colon := strings.LastIndexByte(solution, ':')
		if colon < 0 {
			t.Fatalf("Verify accepted %q without a colon", solution)
		}
		d, ok := issued[solution[:colon]]
		if !ok {
			t.Fatalf("Verify accepted %q, for no puzzle issued to this sale and shopper", solution)
		}
		if solution[:colon] == "" || !isCounter(solution[colon+1:]) {
			t.Fatalf("Verify accepted %q with a bad counter", solution)
		}
		if sum := sha256.Sum256([]byte(solution)); LeadingZeroBits(sum[:]) < d {
			t.Fatalf("Verify accepted %q with %d zero bits, want %d", solution, LeadingZeroBits(sum[:]), d)
		}
	})
}

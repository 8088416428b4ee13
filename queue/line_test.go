package queue_test

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/flashgate/flashgate/queue"
)

// TestLineMatchesASlice: random adds and removes; Ahead, Next and Waiting
// agree with a plain slice at every step.
func TestLineMatchesASlice(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		r := rand.New(rand.NewPCG(seed, seed))
		var l queue.Line
		var ref []bool
		for step := 0; step < 3000; step++ {
			switch {
			case r.IntN(3) > 0 || len(ref) == 0:
				p := l.Add()
				if p != len(ref) {
					t.Fatalf("Add gave place %d, want %d", p, len(ref))
				}
				ref = append(ref, true)
			default:
				p := r.IntN(len(ref))
				if got := l.Remove(p); got != ref[p] {
					t.Fatalf("Remove(%d) = %v, waiting was %v", p, got, ref[p])
				}
				ref[p] = false
			}
			p := r.IntN(len(ref) + 1)
			ahead := 0
			for _, w := range ref[:p] {
				if w {
					ahead++
				}
			}
			if got := l.Ahead(p); got != ahead {
				t.Fatalf("seed %d step %d: Ahead(%d) = %d, want %d", seed, step, p, got, ahead)
			}
			next, ok := -1, false
			for i := p; i < len(ref); i++ {
				if ref[i] {
					next, ok = i, true
					break
				}
			}
			if got, gotOK := l.Next(p); gotOK != ok || (ok && got != next) {
				t.Fatalf("seed %d step %d: Next(%d) = %d %v, want %d %v", seed, step, p, got, gotOK, next, ok)
			}
		}
		n := 0
		for _, w := range ref {
			if w {
				n++
			}
		}
		if l.Waiting() != n || l.Len() != len(ref) {
			t.Fatalf("Waiting %d Len %d, want %d %d", l.Waiting(), l.Len(), n, len(ref))
		}
	}
}

// TestPermutationIsSeededAndFair: the same seed gives the same order, a
// different seed another; every order is a permutation; over many seeds each
// joiner lands in each half about equally often.
func TestPermutationIsSeededAndFair(t *testing.T) {
	a, b := queue.Permutation(queue.SeedOf(42), 1000), queue.Permutation(queue.SeedOf(42), 1000)
	if !slices.Equal(a, b) {
		t.Fatal("the same seed gave two orders")
	}
	if slices.Equal(a, queue.Permutation(queue.SeedOf(43), 1000)) {
		t.Fatal("two seeds gave one order")
	}
	sorted := slices.Clone(a)
	slices.Sort(sorted)
	for i, v := range sorted {
		if int(v) != i {
			t.Fatalf("not a permutation at %d", i)
		}
	}
	firstHalf := 0
	const seeds = 2000
	for s := uint64(0); s < seeds; s++ {
		if queue.Permutation(queue.SeedOf(s), 10)[0] < 5 { // the first joiner's place
			firstHalf++
		}
	}
	if firstHalf < seeds*45/100 || firstHalf > seeds*55/100 {
		t.Fatalf("the first joiner lands in the first half %d times of %d", firstHalf, seeds)
	}
}

// BenchmarkAhead is the cost of a position lookup with 1,000,000 places,
// a tenth of them gone.
func BenchmarkAhead(b *testing.B) {
	var l queue.Line
	l.Grow(1_000_000)
	for p := 0; p < 1_000_000; p += 10 {
		l.Remove(p)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		_ = l.Ahead((i * 7919) % 1_000_000)
	}
}

// BenchmarkNext is the writer's step to the next waiting place.
func BenchmarkNext(b *testing.B) {
	var l queue.Line
	l.Grow(1_000_000)
	for i := 0; b.Loop(); i++ {
		p, ok := l.Next(i % 1_000_000)
		if ok {
			l.Remove(p)
		}
	}
}

// BenchmarkLineMemory reports the line's bytes per waiting place at
// 1,000,000 places.
func BenchmarkLineMemory(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		l := new(queue.Line)
		l.Grow(1_000_000)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/1e6, "B/place")
		runtime.KeepAlive(l)
	}
}
